"""Model registry: name -> :class:`~cropscope.models.base.Classifier` subclass.

Built-in models are imported on first use, so the core import stays light; third-party code
adds its own with :func:`register_model`. The registry is defined in
:mod:`cropscope.models.base` next to :meth:`Classifier.load`, which needs it to find a saved
model's class (and the registry is typed by :class:`Classifier`); this module is its public
name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cropscope.models.base import create_model, get_model_class, list_models, register_model

__all__ = ["create_model", "get_model_class", "hierarchical_model", "list_models",
           "register_model"]


def hierarchical_model(name: str, config: Mapping[str, Any] | None = None
                       ) -> tuple[str, dict[str, Any]]:
    """The model name and options to create for training on a class hierarchy: models
    with cascade heads (a ``hierarchical`` option: the deep models) get
    ``hierarchical=True``; any other is wrapped in the ``hierarchical`` per-level model
    (``base``/``base_config``)."""
    config = dict(config or {})
    if "hierarchical" in get_model_class(name).default_config():
        return name, {**config, "hierarchical": True}
    if name == "hierarchical":
        return name, config
    return "hierarchical", {"base": name, "base_config": config}
