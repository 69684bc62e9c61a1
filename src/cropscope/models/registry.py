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

from cropscope.errors import ModelError
from cropscope.models.base import (
    Classifier,
    get_model_class,
    list_models,
    register_model,
)
from cropscope.settings import check_options

__all__ = ["create_model", "get_model_class", "hierarchical_model", "list_models",
           "register_model"]


def create_model(name: str, **config: Any) -> Classifier:
    """Instantiate the model ``name`` with ``config`` over its defaults; option values are
    checked against the defaults' types first (:func:`cropscope.settings.check_options`:
    ``epochs=0``, ``lr=abc`` are one :class:`~cropscope.errors.ModelError`)."""
    cls = get_model_class(name)
    check_options(f"model {name!r}", cls.default_config(), config, error=ModelError)
    return cls(**config)


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
