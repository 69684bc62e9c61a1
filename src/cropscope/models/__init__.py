"""Model and network registries and the common classifier interface.

Torch is imported only when a torch model is used (``h2crop_parameter_counts`` is loaded on
first access).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cropscope.models.base import Classifier, ModelCard
from cropscope.models.networks import (
    NetworkConfig,
    create_network,
    list_networks,
    network_config,
    register_network,
)
from cropscope.models.registry import (
    create_model,
    get_model_class,
    hierarchical_model,
    list_models,
    register_model,
)
from cropscope.models.runs import (
    classifier_spec,
    load_classifier_run,
    load_run_model,
    save_classifier_run,
)

if TYPE_CHECKING:
    from cropscope.models.h2crop import h2crop_parameter_counts

__all__ = [
    "Classifier",
    "ModelCard",
    "NetworkConfig",
    "classifier_spec",
    "create_model",
    "create_network",
    "get_model_class",
    "h2crop_parameter_counts",
    "hierarchical_model",
    "list_models",
    "list_networks",
    "load_classifier_run",
    "load_run_model",
    "network_config",
    "register_model",
    "register_network",
    "save_classifier_run",
]


def __getattr__(name: str) -> Any:
    if name == "h2crop_parameter_counts":  # imports torch
        from cropscope.models import h2crop

        return h2crop.h2crop_parameter_counts
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
