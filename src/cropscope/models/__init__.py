"""Model registry and the common classifier interface."""

from cropscope.models.base import Classifier, ModelCard
from cropscope.models.registry import create_model, get_model_class, list_models, register_model

__all__ = [
    "Classifier",
    "ModelCard",
    "create_model",
    "get_model_class",
    "list_models",
    "register_model",
]
