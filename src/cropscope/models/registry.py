"""Model registry: name -> model class, imported lazily so the core import stays light.

Built-in models are listed by import path; third-party code can add its own with
:func:`register_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING, Any, TypeVar

from cropscope.errors import ModelError

if TYPE_CHECKING:
    from cropscope.models.base import Classifier

__all__ = ["create_model", "get_model_class", "list_models", "register_model"]

#: built-in models: name -> (module, class name, one-line description)
_BUILTIN: dict[str, tuple[str, str, str]] = {
    "cropnet": ("cropscope.models.cropnet", "CropNet",
                "CropNet: 2-D CNN over the bands x time image (Tong & Wang, CropGlobe)"),
    "tempcnn": ("cropscope.models.tempcnn", "TempCNN",
                "TempCNN: 1-D temporal convolutions (Pelletier et al. 2019)"),
    "ltae": ("cropscope.models.attention", "TemporalAttention",
             "Lightweight temporal attention encoder (L-TAE style, master-query pooling)"),
    "rf": ("cropscope.models.forest", "RandomForest",
           "Random forest (scikit-learn) on engineered features"),
    "logreg": ("cropscope.models.linear", "LogisticRegression",
               "Multinomial logistic regression on engineered features (fast baseline)"),
    "lightgbm": ("cropscope.models.boosting", "LightGBM",
                 "Gradient-boosted trees (LightGBM) on engineered features"),
    "hierarchical": ("cropscope.models.hierarchical", "HierarchicalClassifier",
                     "Per-level or per-parent base models over a class hierarchy"),
    "ensemble": ("cropscope.models.ensemble", "Ensemble",
                 "Soft-voting ensemble of registered models (default: lightgbm + tempcnn)"),
    "spectral-transformer": ("cropscope.models.spectral_transformer", "SpectralTransformer",
                             "Spectral-spatial Transformer on hyperspectral patches "
                             "(H2Crop EnMAP stream)"),
    "spectral-cnn": ("cropscope.models.spectral_cnn", "SpectralCNN",
                     "1-D CNN along the spectrum of a pixel"),
}
#: models that load like every model but are not fitted on pixel series (so not listed):
#: trained segmentation networks exported for maps
_SCENE_BUILTIN: dict[str, tuple[str, str, str]] = {
    "segmentation-run": ("cropscope.models.segmentation_map", "SegmentationMapModel",
                         "A trained segmentation network (AgriFM / H2Crop run) for maps"),
}
_REGISTERED: dict[str, type[Classifier]] = {}

C = TypeVar("C", bound="type[Classifier]")


def register_model(name: str) -> Callable[[C], C]:
    """Class decorator adding a :class:`Classifier` subclass under ``name``."""

    def wrap(cls: C) -> C:
        cls.name = name
        _REGISTERED[name] = cls
        return cls

    return wrap


def list_models() -> dict[str, str]:
    """Registered model names with a one-line description."""
    out = {name: desc for name, (_, _, desc) in _BUILTIN.items()}
    for name, cls in _REGISTERED.items():
        if name in _SCENE_BUILTIN:
            continue
        out.setdefault(name, (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "")
    return dict(sorted(out.items()))


def get_model_class(name: str) -> type[Classifier]:
    """The class registered under ``name`` (imports its module on first use)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    table = _BUILTIN if name in _BUILTIN else _SCENE_BUILTIN
    if name not in table:
        raise ModelError(f"unknown model {name!r}; available models: {', '.join(list_models())}")
    module, attr, _ = table[name]
    try:
        mod = import_module(module)
    except ImportError as exc:
        raise ModelError(
            f"model {name!r} needs the optional dependency {exc.name!r}; "
            "install it with: pip install 'cropscope[all]'"
        ) from None
    cls = getattr(mod, attr)
    cls.name = name
    _REGISTERED[name] = cls
    return cls


def create_model(name: str, **config: Any) -> Classifier:
    """Instantiate the model ``name`` with ``config`` over its defaults."""
    return get_model_class(name)(**config)
