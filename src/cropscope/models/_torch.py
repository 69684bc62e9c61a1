"""Shared machinery of the deep (torch) classifiers.

:class:`TorchClassifier` does everything but the network: validation split, gap filling,
per-band normalisation (statistics stored in the model card), optional CropNet temporal
augmentation of the training subset, the training loop, batched prediction and
safetensors weights. A subclass supplies :meth:`~TorchClassifier.build_module` and
:meth:`~TorchClassifier.to_input` (its input layout).

Prediction runs on a :class:`~cropscope.engine.inference.BatchedPredictor`:
:meth:`TorchClassifier.set_inference` gives it
:class:`~cropscope.engine.inference.InferenceSettings` (device, batch size, AMP on CUDA,
pinned memory); without them the model predicts where its weights are (``config["device"]``
when loaded), with a batch size chosen from the memory budget, in float32 on the CPU.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cropscope.augment import TemporalAugmentation, augment_training_set, infer_step_days
from cropscope.data.splits import train_val_split
from cropscope.data.timeseries import TimeSeriesSet
from cropscope.engine.inference import BatchedPredictor, InferenceSettings
from cropscope.engine.recipe import resolve_device
from cropscope.engine.seeding import seed_everything
from cropscope.engine.trainer import AugmentFn, train_classifier
from cropscope.errors import DataError, ModelError
from cropscope.features.gapfill import interpolate_gaps_array
from cropscope.io import atomic_path
from cropscope.models.base import Classifier
from cropscope.models.cascade import HierarchicalNet, default_level_weights
from cropscope.models.modules import EnsembleModule

if TYPE_CHECKING:
    from cropscope.taxonomy.tree import Taxonomy

__all__ = [
    "WEIGHTS_FILE",
    "TorchClassifier",
    "resolve_device",
]

WEIGHTS_FILE = "weights.safetensors"
#: the end of the error when even one sample does not fit in memory
_OOM_HINT = "the network does not fit on this device: predict on another one (--device cpu)"
_AUGMENT_KEYS = {f.name for f in fields(TemporalAugmentation)}
#: what one ensemble member trains on: inputs, labels ([N] or [N, L]), optional priors
TrainData = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


def _valid_values(ts: TimeSeriesSet) -> np.ndarray:
    """``ts.values`` with NaN at invalid steps (``~ts.mask``)."""
    mask = ts.mask
    if mask is None or mask.all():
        return ts.values
    return np.where(mask[:, :, None], ts.values, np.float32(np.nan))


def _gap_free(ts: TimeSeriesSet) -> np.ndarray:
    """Values with invalid steps filled by linear interpolation in time (dates when known);
    a band without any valid value stays NaN."""
    x = _valid_values(ts)
    if np.isfinite(x).all():
        return x
    return interpolate_gaps_array(x, _times(ts))


def _times(ts: TimeSeriesSet) -> np.ndarray | None:
    return None if ts.dates is None else ts.dates.astype(np.int64).astype(np.float64)


class TorchClassifier(Classifier):
    """Base of the deep classifiers; subclasses define the network and its input layout."""

    requires: ClassVar[tuple[str, ...]] = ("torch",)
    #: human-readable input layout recorded in the model card
    input_layout: ClassVar[str] = "[N, T, C]"

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        params = self.config["augment_params"]
        if not isinstance(params, dict) or set(params) - _AUGMENT_KEYS:
            raise ModelError(
                f"augment_params must be a dict with keys among {sorted(_AUGMENT_KEYS)}, "
                f"got {params!r}"
            )
        if int(self.config["n_models"]) < 1:
            raise ModelError(f"n_models must be >= 1, got {self.config['n_models']}")
        if not 0 <= float(self.config["val_fraction"]) < 1:
            raise ModelError(f"val_fraction must be in [0, 1), got {self.config['val_fraction']}")
        if self.config["decoding"] not in ("consistent", "independent"):
            raise ModelError(
                f"decoding must be 'consistent' or 'independent', got {self.config['decoding']!r}"
            )
        if self.config["priors"] and not self.config["hierarchical"]:
            raise ModelError("priors feed the hierarchical heads: set hierarchical=true too")
        if self.config["select_on"] not in ("finest", "mean"):
            raise ModelError(f"select_on must be 'finest' or 'mean', got "
                             f"{self.config['select_on']!r}")
        if int(self.config["num_nodes"]) < 1 or not isinstance(self.config["strategy"], str):
            raise ModelError("num_nodes must be >= 1 and strategy a name (e.g. 'ddp')")
        self._module: nn.Module | None = None
        self._inference: InferenceSettings | None = None
        self._predictor: BatchedPredictor | None = None

    @classmethod
    def common_config(cls) -> dict[str, Any]:
        """Options shared by every deep model (subclasses override the values)."""
        return {
            "epochs": 50,
            "batch_size": 128,
            "lr": 1e-3,
            "weight_decay": 0.0,
            "lr_decay": None,
            "val_fraction": 0.1,
            "seed": 0,
            "patience": None,
            "augment": False,
            "augment_params": {},
            "n_models": 1,
            "device": "auto",
            # scale-out on the Lightning engine: processes per node, strategy ("ddp"), nodes
            "devices": 1,
            "strategy": "auto",
            "num_nodes": 1,
            # hierarchical cascade heads (needs a training set with a taxonomy)
            "hierarchical": False,
            "level_weights": None,
            "priors": False,
            "decoding": "consistent",
            "head_hidden": True,
            # best epoch on the finest level's validation macro-F1, or the mean over levels
            "select_on": "finest",
        }

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def build_module(self, n_bands: int, n_times: int, n_classes: int) -> nn.Module:
        """A freshly initialised network for these input and output sizes."""

    @abstractmethod
    def to_input(self, x: np.ndarray) -> np.ndarray:
        """Rearrange normalised, gap-free ``x`` ``[N, T, C]`` into the network's layout."""

    # ------------------------------------------------------------------ helpers
    @property
    def module(self) -> nn.Module:
        """The trained network."""
        if self._module is None:
            raise ModelError(f"model {self.name!r} is not fitted yet")
        return self._module

    def set_inference(self, settings: InferenceSettings | None) -> None:
        """Predict with ``settings`` from now on (device, batch size, AMP, pinned memory;
        ``None``: the defaults, on the device the weights are on). The network moves to the
        device at the next prediction."""
        self._inference = settings
        self._predictor = None

    def predictor(self) -> BatchedPredictor:
        """The batched predictor this model predicts with (see :meth:`set_inference`); it
        keeps what it learns (a batch size reduced after an out-of-memory) until the network
        or the settings change."""
        if self._predictor is None:
            settings = self._inference
            if settings is None:
                settings = InferenceSettings(device=str(next(self.module.parameters()).device))
            self._predictor = BatchedPredictor(settings, hint=_OOM_HINT)
        return self._predictor

    def augmentation(self) -> TemporalAugmentation:
        """The augmentation settings from ``augment_params``."""
        return TemporalAugmentation(**self.config["augment_params"])

    def _split(self, train: TimeSeriesSet) -> tuple[TimeSeriesSet, TimeSeriesSet | None]:
        """Seeded validation split of ``train``, stratified when every class allows it."""
        frac = float(self.config["val_fraction"])
        if frac == 0:
            return train, None
        tr, va = train_val_split(train, frac, int(self.config["seed"]))
        return train.subset(tr), train.subset(va)

    def _val_labels(self, val: Any, tax: Taxonomy | None = None) -> tuple[Any, np.ndarray]:
        """Validation samples (a time-series or patch set) with labels, and those labels coded
        in the model's class order, or per level ``[N, L]`` with the training ``tax``."""
        if val.labels is None:
            raise DataError("validation data have no labels")
        val = val.subset(val.labels >= 0)
        lookup = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted(set(val.label_names) - set(lookup))
        if unknown:
            raise DataError(f"validation classes {unknown} are not among the training classes")
        if tax is not None:
            if val.taxonomy != tax:
                raise DataError("validation and training sets have different taxonomies")
            return val, val.level_labels
        return val, np.array([lookup[c] for c in val.label_names], dtype=np.int64)

    def _prepare(self, ts: TimeSeriesSet) -> np.ndarray:
        """Gap-filled, normalised values in the network layout (card statistics)."""
        card = self._require_card()
        x = _gap_free(ts)
        mean = np.asarray(card.norm_mean, dtype=np.float32)
        std = np.asarray(card.norm_std, dtype=np.float32)
        x = np.nan_to_num((x - mean) / std, nan=0.0)
        return np.ascontiguousarray(self.to_input(x), dtype=np.float32)

    # ------------------------------------------------------------------ hierarchy
    @property
    def hierarchical(self) -> bool:
        return bool(self.config["hierarchical"])

    def _fit_taxonomy(self, train: TimeSeriesSet) -> Taxonomy:
        """The (complete) taxonomy hierarchical heads are trained on."""
        tax = train.taxonomy
        if tax is None or train.level_labels is None:
            raise DataError(
                "hierarchical=true needs a training set with a class hierarchy "
                "(TimeSeriesSet.with_taxonomy, or a dataset that ships one)"
            )
        if not tax.is_complete:
            raise DataError("hierarchical heads need a complete taxonomy (Taxonomy.complete())")
        if train.label_level != tax.n_levels - 1:
            raise DataError("train hierarchical models on finest-level labels (at_level(-1))")
        return tax

    def _level_weights(self, tax: Taxonomy | None) -> list[float] | None:
        """Per-level loss weights: the configured ones, else :func:`default_level_weights`."""
        if tax is None:
            return None
        weights = self.config["level_weights"]
        if weights is None:
            return default_level_weights(tax.n_levels)
        if len(weights) != tax.n_levels:
            raise ModelError(f"level_weights needs {tax.n_levels} values, got {weights!r}")
        return [float(w) for w in weights]

    def _prior_sizes(self, tax: Taxonomy) -> list[int] | None:
        return list(tax.sizes) if self.config["priors"] else None

    def _priors(self, ts: TimeSeriesSet) -> np.ndarray | None:
        """One-hot priors ``[N, sum K_k]`` from the metadata columns ``prior@<level>``
        (class names of that level; empty or unknown names give an all-zero block)."""
        if not self.config["priors"]:
            return None
        tax = self._require_taxonomy()
        blocks = []
        columns = set() if ts.meta is None else set(ts.meta.columns)
        missing = [f"prior@{lv}" for lv in tax.levels if f"prior@{lv}" not in columns]
        if missing or ts.meta is None:
            raise DataError(
                f"priors=true needs the metadata columns {missing} (class names per level)"
            )
        for k, level in enumerate(tax.levels):
            lookup = {c: i for i, c in enumerate(tax.classes(k))}
            codes = np.array([lookup.get(str(v), -1) for v in ts.meta[f"prior@{level}"]])
            block = np.zeros((ts.n_samples, tax.n_classes(k)), dtype=np.float32)
            ok = codes >= 0
            block[np.flatnonzero(ok), codes[ok]] = 1.0
            blocks.append(block)
        return np.concatenate(blocks, axis=1)

    def _network(self, n_bands: int, n_times: int, tax: Taxonomy | None) -> nn.Module:
        """The subclass's network, wrapped with cascade heads when hierarchical."""
        card = self._require_card()
        module = self.build_module(n_bands, n_times, len(card.classes))
        if not self.hierarchical:
            return module
        assert tax is not None
        return HierarchicalNet(module, tax.sizes, self._prior_sizes(tax),
                               hidden=bool(self.config["head_hidden"]))

    # ------------------------------------------------------------------ Classifier API
    def _fit(self, train: TimeSeriesSet, val: TimeSeriesSet | None, progress: bool) -> None:
        cfg = self.config
        card = self._require_card()
        tax = self._fit_taxonomy(train) if self.hierarchical else None
        if val is None:
            train, val = self._split(train)
        y_val = None
        if val is not None:
            val, y_val = self._val_labels(val, tax)

        flat = _valid_values(train).reshape(-1, train.n_bands).astype(np.float64)
        mean = np.nanmean(flat, axis=0)
        std = np.nanstd(flat, axis=0)
        std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
        card.norm_mean = [float(v) for v in mean]
        card.norm_std = [float(v) for v in std]
        card.input_layout = self.input_layout

        base_set = train.replace(values=_gap_free(train))
        step_days = None
        if cfg["augment"]:
            step_days = self.augmentation().step_days or infer_step_days(base_set)

        def member_data(member_seed: int) -> TrainData:
            fit_set = base_set
            if cfg["augment"]:
                aug = replace(self.augmentation(), step_days=step_days)
                fit_set = augment_training_set(base_set, None, aug, member_seed)
            y = fit_set.labels if tax is None else fit_set.level_labels
            if y is None:
                raise DataError("the training set has no labels")
            return self._prepare(fit_set), y, self._priors(fit_set)

        x_val = None if val is None else self._prepare(val)
        extra_val = None if val is None else self._priors(val)
        n_train = self._train_members(member_data, x_val, y_val, extra_val, tax, progress)
        card.extra.update(
            n_train=n_train,
            n_val=0 if val is None else int(val.n_samples),
            augment_step_days=step_days,
        )

    def _train_members(
        self,
        member_data: Callable[[int], TrainData],
        x_val: np.ndarray | None,
        y_val: np.ndarray | None,
        extra_val: np.ndarray | None,
        tax: Taxonomy | None,
        progress: bool,
        augment_fn: AugmentFn | None = None,
    ) -> int:
        """Train ``n_models`` networks (seeds ``seed + i``) on ``member_data(seed)`` (inputs in
        the network layout, labels ``[N]`` or ``[N, L]`` with a taxonomy, optional priors);
        keep the result in ``self._module``, record the members in the card and return the
        number of training samples of the last member."""
        cfg = self.config
        card = self._require_card()
        device = resolve_device(str(cfg["device"]))
        n_models = int(cfg["n_models"])
        members, summaries = [], []
        n_train = 0
        for i in range(n_models):
            member_seed = int(cfg["seed"]) + i
            x_train, y_train, extra_train = member_data(member_seed)
            n_train = len(x_train)
            seed_everything(member_seed)
            module = self._network(len(card.bands), card.n_times, tax)
            result = train_classifier(
                module,
                x_train,
                y_train,
                x_val,
                y_val,
                len(card.classes) if tax is None else tax.sizes,
                epochs=int(cfg["epochs"]),
                batch_size=int(cfg["batch_size"]),
                lr=float(cfg["lr"]),
                weight_decay=float(cfg["weight_decay"]),
                seed=member_seed,
                lr_decay=cfg["lr_decay"],
                patience=cfg["patience"],
                progress=progress,
                augment_fn=augment_fn,
                device=device,
                desc=f"{self.name} {i + 1}/{n_models}" if n_models > 1 else self.name,
                level_weights=self._level_weights(tax),
                extra_train=extra_train,
                extra_val=extra_val,
                select_on=str(cfg["select_on"]),
                devices=cfg["devices"],
                strategy=str(cfg["strategy"]),
                num_nodes=int(cfg["num_nodes"]),
                checkpoint_dir=None if self.checkpoint_dir is None
                else self.checkpoint_dir / f"network-{i}",
                resume=self.resume,
            )
            members.append(module)
            f1 = result.best_val_macro_f1
            summaries.append(
                {
                    "best_epoch": result.best_epoch,
                    "best_val_macro_f1": None if np.isnan(f1) else f1,
                    "epochs_run": len(result.history),
                }
            )
        self._module = members[0] if n_models == 1 else EnsembleModule(members)
        self._predictor = None  # a new network: nothing learnt about it yet
        card.extra.update(members=summaries)
        return n_train

    def _new_module(self) -> nn.Module:
        """An untrained network (or ensemble of them) shaped after the model card."""
        card = self._require_card()
        tax = self._require_taxonomy() if self.hierarchical else None
        members = [
            self._network(len(card.bands), card.n_times, tax)
            for _ in range(int(self.config["n_models"]))
        ]
        return members[0] if len(members) == 1 else EnsembleModule(members)

    def _level_logits(self, ts: TimeSeriesSet) -> Any:
        return self.predictor()(self.module, self._prepare(ts), extra=self._priors(ts))

    def _predict_proba(self, ts: TimeSeriesSet) -> np.ndarray:
        if ts.n_samples == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        logits = self._level_logits(ts)
        if isinstance(logits, list):
            logits = logits[-1]
        return torch.softmax(logits, dim=1).numpy()

    def predict_proba_levels(self, ts: TimeSeriesSet) -> list[np.ndarray]:
        """Per-level probabilities: the cascade heads' own outputs when hierarchical, else
        the finest-level probabilities summed up the tree."""
        if not self.hierarchical:
            return super().predict_proba_levels(ts)
        tax = self._require_taxonomy()
        ts = self._conform(ts)
        if ts.n_samples == 0:
            return [np.zeros((0, k), dtype=np.float32) for k in tax.sizes]
        return [torch.softmax(z, dim=1).numpy() for z in self._level_logits(ts)]

    def predict(self, ts: TimeSeriesSet) -> np.ndarray:
        """Finest-level class codes; with hierarchical heads, decoded per ``decoding``
        (``consistent`` by default: the most probable root-to-leaf path)."""
        if not self.hierarchical:
            return super().predict(ts)
        return self.predict_levels(ts, self.config["decoding"])[:, -1]

    def _save_weights(self, directory: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp), metadata={"model": self.name})

    def _load_weights(self, directory: Path) -> None:
        path = directory / WEIGHTS_FILE
        if not path.is_file():
            raise ModelError(f"{directory} has no {WEIGHTS_FILE}")
        module = self._new_module()
        try:
            module.load_state_dict(load_file(str(path)))
        except RuntimeError as exc:
            raise ModelError(f"weights in {path} do not fit the model: {exc}") from None
        self._module = module.to(resolve_device(str(self.config["device"]))).eval()
        self._predictor = None
