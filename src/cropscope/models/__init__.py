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
from cropscope.models.runs import (
    classifier_spec,
    load_classifier_run,
    load_run_model,
    save_classifier_run,
)

__all__ = [
    "Classifier",
    "ModelCard",
    "NetworkConfig",
    "classifier_spec",
    "create_model",
    "create_network",
    "get_model_class",
    "list_models",
    "list_networks",
    "load_classifier_run",
    "load_run_model",
    "network_config",
    "register_model",
    "register_network",
    "save_classifier_run",
]
