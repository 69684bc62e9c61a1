"""Model and network registries and the common classifier interface."""

from cropscope.models.base import Classifier, ModelCard
from cropscope.models.networks import (
    NetworkConfig,
    create_network,
    list_networks,
    network_config,
    register_network,
)
from cropscope.models.registry import create_model, get_model_class, list_models, register_model

__all__ = [
    "Classifier",
    "ModelCard",
    "NetworkConfig",
    "create_model",
    "create_network",
    "get_model_class",
    "list_models",
    "list_networks",
    "network_config",
    "register_model",
    "register_network",
]
