"""The one interface every cropscope classifier follows.

An estimator in the scikit-learn spirit, but on :class:`~cropscope.data.TimeSeriesSet`:

- ``Model(**config)`` stores the configuration only (merged over ``default_config()``).
- ``fit(train, val=None)`` learns from labelled samples and records a :class:`ModelCard`
  (bands, time steps, classes, normalisation statistics) so that inference never
  recomputes anything from the data it is applied to.
- ``predict_proba(ts)`` returns ``float32 [N, K]``; ``predict(ts)`` integer class codes;
  ``predict_proba_pixels(values [C, T, N])`` the same from the map job's band-major layout
  (no ``TimeSeriesSet`` in between for the feature-table models).
- ``save(dir)`` / ``load(dir)`` write and read a self-contained model directory using
  safe formats only (JSON + safetensors / LightGBM text / numpy arrays); nothing is
  ever unpickled.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError, ModelError
from cropscope.io import write_json
from cropscope.threads import ensure_threads

if TYPE_CHECKING:
    from cropscope.taxonomy.tree import Taxonomy

__all__ = [
    "Classifier",
    "ModelCard",
    "create_model",
    "get_model_class",
    "list_models",
    "register_model",
]

MODEL_FILE = "model.json"


@dataclass
class ModelCard:
    """What a trained model expects and knows; saved next to its weights."""

    bands: list[str]
    n_times: int
    classes: list[str]
    input_layout: str = "pixel-series [N, T, C]"
    norm_mean: list[float] | None = None
    norm_std: list[float] | None = None
    #: the class hierarchy of the training set (``Taxonomy.to_dict()``), if it had one
    taxonomy: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the dates trained on (:class:`cropscope.runs.TimeGrid` as a dict), when known
    time_grid: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ModelCard:
        if not isinstance(data, dict):
            raise ModelError("the model card in model.json must be an object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"model card: unknown key(s) {unknown}")
        card = cls(**data)
        if not isinstance(card.bands, list) or not all(isinstance(b, str) for b in card.bands):
            raise ModelError("model card: 'bands' must be a list of names")
        if not isinstance(card.classes, list) or not all(
            isinstance(c, str) for c in card.classes
        ):
            raise ModelError("model card: 'classes' must be a list of names")
        if not isinstance(card.n_times, int) or isinstance(card.n_times, bool) \
                or card.n_times < 0:
            raise ModelError("model card: 'n_times' must be a non-negative integer")
        if not isinstance(card.extra, dict):
            raise ModelError("model card: 'extra' must be an object")
        return card


def _time_grid(ts: TimeSeriesSet) -> dict[str, Any] | None:
    """The shared dates of a set as a time grid (``None`` for per-sample or no dates)."""
    from cropscope.runs.schema import TimeGrid

    if ts.dates is None or np.ndim(ts.dates) != 1:
        return None
    return TimeGrid.from_dates(ts.dates).to_dict()


def _check_pixels(values: np.ndarray, card: ModelCard) -> np.ndarray:
    """``values`` as float32 ``[C, T, N]`` with the card's bands and steps, or DataError."""
    values = np.asarray(values)
    if values.ndim != 3 or values.shape[:2] != (len(card.bands), card.n_times):
        raise DataError(f"pixel series must be [C, T, N] = [{len(card.bands)}, "
                        f"{card.n_times}, N] (the model's bands and steps), got {values.shape}")
    if values.dtype != np.float32 or not values.flags.writeable:
        values = values.astype(np.float32)
    return values


def _read_model_json(path: Path) -> dict[str, Any]:
    """``model.json``, bounded and type-checked: a damaged file is one ModelError."""
    import json

    from cropscope.runs.schema import MAX_SPEC_BYTES, check_name

    if path.stat().st_size > MAX_SPEC_BYTES:
        raise ModelError(f"{path} is too large to be a model description")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) \
            or not isinstance(meta.get("card"), dict):
        raise ModelError(f"{path} is not a cropscope model description "
                         "(expected model, config and card)")
    check_name(meta.get("model"), "model name")
    return meta


class Classifier(ABC):
    """Base class of all registered models."""

    #: registry name, set by :func:`register_model`
    name: ClassVar[str] = ""
    #: the optional dependency group needed, for error messages (e.g. "torch")
    requires: ClassVar[tuple[str, ...]] = ()
    #: sha256 of the run manifest this model was loaded from (None: not loaded from a run)
    run_digest: str | None = None
    #: where deep models keep their resume state while they train (``fit``'s
    #: ``checkpoint_dir``), and whether ``fit`` continues from it
    checkpoint_dir: Path | None = None
    resume: bool = True

    def __init__(self, **config: Any) -> None:
        defaults = self.default_config()
        unknown = sorted(set(config) - set(defaults))
        if unknown:
            raise ModelError(
                f"unknown option(s) {unknown} for model {self.name!r}; "
                f"known options: {sorted(defaults)}"
            )
        self.config: dict[str, Any] = {**defaults, **config}
        self.card: ModelCard | None = None

    # ------------------------------------------------------------------ to implement
    @classmethod
    @abstractmethod
    def default_config(cls) -> dict[str, Any]:
        """Every option with its default value (JSON-serialisable)."""

    @abstractmethod
    def _fit(self, train: TimeSeriesSet, val: TimeSeriesSet | None, progress: bool) -> None:
        """Learn from ``train`` (bands already ordered as in ``self.card``)."""

    @abstractmethod
    def _predict_proba(self, ts: TimeSeriesSet) -> np.ndarray:
        """Class probabilities ``[N, K]`` for a set already checked against the card."""

    @abstractmethod
    def _save_weights(self, directory: Path) -> None:
        """Write the learnt parameters into ``directory`` (safe formats only)."""

    @abstractmethod
    def _load_weights(self, directory: Path) -> None:
        """Read what :meth:`_save_weights` wrote."""

    # ------------------------------------------------------------------ public API
    def fit(
        self,
        train: TimeSeriesSet,
        val: TimeSeriesSet | None = None,
        *,
        progress: bool = False,
        checkpoint_dir: str | Path | None = None,
        resume: bool = True,
    ) -> Classifier:
        """Fit on labelled samples; ``val`` (optional) is used for model selection only.

        ``checkpoint_dir``: deep models keep their state after every epoch there and, with
        ``resume``, continue an interrupted training from it (other models train at once
        and ignore it)."""
        self.set_checkpoint(checkpoint_dir, resume)
        labels = train.labels
        if labels is None:
            raise DataError("training data have no labels")
        if (labels < 0).any():
            train = train.subset(labels >= 0)
            labels = labels[labels >= 0]
        if train.n_samples == 0:
            raise DataError("training data have no labelled samples")
        present = np.unique(labels)
        if present.size < 2:
            raise DataError("training data need at least two classes")
        train.check_no_empty_series()
        self.card = ModelCard(bands=list(train.bands), n_times=train.n_times,
                              classes=list(train.classes), time_grid=_time_grid(train))
        if train.taxonomy is not None and train.label_level == train.taxonomy.n_levels - 1:
            self.card.taxonomy = train.taxonomy.to_dict()
        if val is not None:
            val = self._conform(val)
        ensure_threads()  # torch/OpenMP/BLAS capped to cropscope's thread count
        self._fit(train, val, progress)
        return self

    def set_checkpoint(self, checkpoint_dir: str | Path | None, resume: bool = True) -> None:
        """Where the next ``fit`` keeps its resume state (see :meth:`fit`)."""
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.resume = bool(resume)

    def predict_proba(self, ts: TimeSeriesSet) -> np.ndarray:
        """Class probabilities ``float32 [N, K]`` in the order of ``self.classes``."""
        ts = self._conform(ts)
        ensure_threads()
        proba = np.asarray(self._predict_proba(ts), dtype=np.float32)
        return proba

    def predict_proba_pixels(self, values: np.ndarray, mask: np.ndarray | None = None,
                             dates: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities ``float32 [N, K]`` of pixel series in the map job's layout.

        ``values`` is ``float32 [C, T, N]``: band-major, then time, pixels last (the card's
        bands in order, its number of steps; NaN = missing; a view whose last axis is
        contiguous will do), ``mask [T, N]`` the valid steps (every band finite there;
        derived when None), ``dates [T]`` the steps' dates. The result equals
        :meth:`predict_proba` of the same series as a :class:`TimeSeriesSet`. ``values``
        may be overwritten (gaps filled, standardised in place): pass a copy to keep it.

        This default builds that set (one ``[N, T, C]`` copy); models with a shorter route
        from this layout override it (the feature-table models ``rf``, ``lightgbm`` and
        ``logreg``: :mod:`cropscope.models._tabular`).
        """
        card = self._require_card()
        values = _check_pixels(values, card)
        ts = TimeSeriesSet(values=np.ascontiguousarray(values.transpose(2, 1, 0)),
                           bands=list(card.bands), dates=dates,
                           mask=None if mask is None else np.asarray(mask).T)
        return self.predict_proba(ts)

    def predict(self, ts: TimeSeriesSet) -> np.ndarray:
        """Integer class codes ``[N]`` into ``self.classes``."""
        return self.predict_proba(ts).argmax(axis=1)

    @property
    def classes(self) -> list[str]:
        return self._require_card().classes

    @property
    def taxonomy(self) -> Taxonomy | None:
        """The class hierarchy learnt with (``None`` when trained on flat labels)."""
        card = self._require_card()
        if card.taxonomy is None:
            return None
        from cropscope.taxonomy.tree import Taxonomy

        return Taxonomy.from_dict(card.taxonomy)

    def _require_taxonomy(self) -> Taxonomy:
        tax = self.taxonomy
        if tax is None:
            raise ModelError(
                f"model {self.name!r} was trained without a class hierarchy; train it on a "
                "set with a taxonomy (TimeSeriesSet.with_taxonomy) for per-level predictions"
            )
        return tax

    def predict_proba_levels(self, ts: TimeSeriesSet) -> list[np.ndarray]:
        """Class probabilities per taxonomy level, coarse to fine (``[N, K_k]`` each).

        A flat model's finest-level probabilities are summed up the tree; models with
        hierarchical heads override this with their own per-level outputs.
        """
        from cropscope.taxonomy.decoding import level_probas_from_leaf

        return level_probas_from_leaf(self._require_taxonomy(), self.predict_proba(ts))

    def predict_levels(self, ts: TimeSeriesSet, decoding: str = "consistent") -> np.ndarray:
        """Class codes per level ``[N, L]`` (codes into ``taxonomy.classes(k)``), decoded
        ``consistent`` (best root-to-leaf path) or ``independent`` (argmax per level)."""
        from cropscope.taxonomy.decoding import decode

        return decode(self._require_taxonomy(), self.predict_proba_levels(ts), decoding)

    def save(self, directory: str | Path) -> Path:
        """Write ``model.json`` (name, config, card) and the weights into ``directory``."""
        card = self._require_card()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_weights(directory)
        write_json(
            directory / MODEL_FILE,
            {"model": self.name, "config": self.config, "card": card.to_dict()},
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Classifier:
        """Load any registered model from a directory written by :meth:`save`."""
        directory = Path(directory)
        meta_path = directory / MODEL_FILE
        if not meta_path.is_file():
            raise ModelError(f"{directory} is not a cropscope model directory (no {MODEL_FILE})")
        meta = _read_model_json(meta_path)
        model_cls = get_model_class(meta["model"])
        if cls is not Classifier and not issubclass(model_cls, cls):
            raise ModelError(f"{directory} holds a {meta['model']!r} model, not {cls.name!r}")
        try:
            model = model_cls(**meta["config"])
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{meta_path}: unusable model configuration: {exc}") from None
        model.card = ModelCard.from_dict(meta["card"])
        model._load_weights(directory)
        return model

    # ------------------------------------------------------------------ helpers
    def _require_card(self) -> ModelCard:
        if self.card is None:
            raise ModelError(f"model {self.name!r} is not fitted yet")
        return self.card

    def _conform(self, ts: TimeSeriesSet) -> TimeSeriesSet:
        """Check an input against the card: bands by name (any order), same time steps."""
        card = self._require_card()
        try:
            ts = ts.select_bands(card.bands)
        except DataError:
            raise DataError(
                f"the model was trained on bands {card.bands} but the input has {ts.bands}"
            ) from None
        if ts.n_times != card.n_times:
            raise DataError(
                f"the model expects {card.n_times} time steps but the input has {ts.n_times}; "
                "composite or resample the input to the model's time grid first"
            )
        return ts

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.config.items() if self.default_config().get(k) != v}
        args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return f"{type(self).__name__}({args})"


# ---------------------------------------------------------------------------- registry
# The registry lives with the interface: :meth:`Classifier.load` finds a saved model's class
# by name, and the registry hands out Classifier subclasses (cropscope.models.registry
# re-exports it). Built-in models are listed by import path so the core import stays light;
# third-party code adds its own with :func:`register_model`.

#: built-in models: name -> (module, class name, one-line description)
_BUILTIN: dict[str, tuple[str, str, str]] = {
    "cropnet": ("cropscope.models.cropnet", "CropNet",
                "CropNet: 2-D CNN over the bands x time image (Tong & Wang, CropGlobe)"),
    "tempcnn": ("cropscope.models.tempcnn", "TempCNN",
                "TempCNN: 1-D temporal convolutions (Pelletier et al. 2019)"),
    "lstm-fcn": ("cropscope.models.lstm_fcn", "LSTMFCN",
                 "LSTM-FCN: fully convolutional + LSTM branches (Karim et al. 2018)"),
    "ltae": ("cropscope.models.attention", "TemporalAttention",
             "Lightweight temporal attention encoder (L-TAE style, master-query pooling)"),
    "rf": ("cropscope.models.forest", "RandomForest",
           "Random forest (scikit-learn) on engineered features"),
    "extratrees": ("cropscope.models.forest", "ExtraTrees",
                   "Extremely randomised trees (scikit-learn) on engineered features"),
    "quant": ("cropscope.models.forest", "Quant",
              "QUANT: extremely randomised trees on interval quantiles (Dempster et al. 2024)"),
    "logreg": ("cropscope.models.linear", "LogisticRegression",
               "Multinomial logistic regression on engineered features (fast baseline)"),
    "lda": ("cropscope.models.discriminant", "LinearDiscriminant",
            "Linear discriminant analysis (shrunk covariance) on engineered features"),
    "lightgbm": ("cropscope.models.boosting", "LightGBM",
                 "Gradient-boosted trees (LightGBM) on engineered features"),
    "svm": ("cropscope.models.svm", "SupportVectorMachine",
            "Support vector machine (RBF kernel, scikit-learn) on engineered features"),
    "hierarchical": ("cropscope.models.hierarchical", "HierarchicalClassifier",
                     "Per-level or per-parent base models over a class hierarchy"),
    "ensemble": ("cropscope.models.ensemble", "Ensemble",
                 "Soft-voting ensemble of registered models (default: lightgbm + tempcnn)"),
    "stacking": ("cropscope.models.stacking", "Stacking",
                 "Stacked ensemble: logistic regression on members' out-of-fold "
                 "probabilities"),
    "resampled": ("cropscope.models.resampling", "Resampled",
                  "Any model trained on an over/under-sampled or SMOTE training set "
                  "(class imbalance)"),
    "spectral-transformer": ("cropscope.models.spectral_transformer", "SpectralTransformer",
                             "Spectral-spatial Transformer on hyperspectral patches "
                             "(H2Crop EnMAP stream)"),
    "spectral-cnn": ("cropscope.models.spectral_cnn", "SpectralCNN",
                     "1-D CNN along the spectrum of a pixel"),
    "minirocket": ("cropscope.models.rocket", "MiniRocket",
                   "MiniRocket / MultiRocket random-kernel features + ridge (or logistic) head"),
    "inceptiontime": ("cropscope.models.inceptiontime", "InceptionTime",
                      "InceptionTime: ensemble of Inception networks (Ismail Fawaz et al. 2020)"),
}
_REGISTERED: dict[str, type[Classifier]] = {}

C = TypeVar("C", bound=type[Classifier])


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
        out.setdefault(name, (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "")
    return dict(sorted(out.items()))


def get_model_class(name: str) -> type[Classifier]:
    """The class registered under ``name`` (imports its module on first use)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        raise ModelError(f"unknown model {name!r}; available models: {', '.join(list_models())}")
    module, attr, _ = _BUILTIN[name]
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
