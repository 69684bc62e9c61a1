"""Shared machinery of deep models on image patches ``[N, K, h, w]`` (hyperspectral).

:class:`PatchClassifier` is a :class:`~cropscope.models._torch.TorchClassifier` whose input
is a :class:`~cropscope.data.patches.PatchSet` (the label of a patch is its centre pixel).
It also accepts a :class:`~cropscope.data.TimeSeriesSet`, read as ``1 x 1`` patches whose
``T x C`` values are the bands (so it honours the plain :class:`Classifier` contract too).

What it does on top of :class:`TorchClassifier`: per-band normalisation statistics over the
training centre pixels (stored in the model card with the wavelengths and the patch size),
NaN (nodata, outside the image) → 0 after normalisation, and optional random flips /
90-degree rotations of training batches (``augment``). Training reuses
:func:`cropscope.training.train_classifier`; weights, ensembles (``n_models``) and loading
come from :class:`TorchClassifier`, and so does prediction (batched, with the batch size
chosen from the memory a patch needs, settings through :meth:`TorchClassifier.set_inference`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from cropscope.data.patches import PatchSet
from cropscope.data.splits import train_val_split
from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError, ModelError
from cropscope.models._torch import TorchClassifier, _gap_free
from cropscope.models.base import Classifier, ModelCard

__all__ = ["PatchClassifier", "flip_rotate"]


def flip_rotate(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and 90-degree rotation of each sample of ``[B, K, h, w]``."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    k = torch.randint(0, 4, (b,), generator=gen)
    out = x.clone()
    out[flip] = out[flip].flip(-1)
    for r in (1, 2, 3):
        sel = k == r
        if sel.any():
            out[sel] = torch.rot90(out[sel], r, dims=(-2, -1))
    return out


class PatchClassifier(TorchClassifier):
    """Base of deep models on patches; subclasses implement :meth:`build_network`."""

    #: what the scene evaluation feeds this model: "patches" (PatchSet) or "pixels"
    input_kind: ClassVar[str] = "patches"
    input_layout: ClassVar[str] = "patches [N, K, h, w]"

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        size = self.config["patch_size"]
        if not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ModelError(f"patch_size must be a positive odd integer, got {size!r}")

    @property
    def patch_size(self) -> int:
        """The patch size this model takes (the card's once fitted)."""
        if self.card is not None:
            return int(self.card.extra.get("patch_size", 1))
        return int(self.config["patch_size"])

    # ------------------------------------------------------------------ to implement
    def build_network(self, n_bands: int, patch_size: int, n_classes: int) -> torch.nn.Module:
        """A fresh network for ``[B, n_bands, patch_size, patch_size]`` inputs."""
        raise NotImplementedError

    def build_module(self, n_bands: int, n_times: int, n_classes: int) -> torch.nn.Module:
        return self.build_network(n_bands * n_times, self.patch_size, n_classes)

    def to_input(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - not used
        raise NotImplementedError

    # ------------------------------------------------------------------ public API
    def fit(
        self,
        train: TimeSeriesSet | PatchSet,
        val: TimeSeriesSet | PatchSet | None = None,
        *,
        progress: bool = False,
        checkpoint_dir: str | Path | None = None,
        resume: bool = True,
    ) -> Classifier:
        """Fit on a :class:`PatchSet` (or a time-series set, as ``1 x 1`` patches);
        ``checkpoint_dir`` / ``resume`` as :meth:`Classifier.fit`."""
        if not isinstance(train, PatchSet):
            if isinstance(val, PatchSet):
                raise DataError("validation data must be a time-series set like the training "
                                "data")
            return super().fit(train, val, progress=progress, checkpoint_dir=checkpoint_dir,
                               resume=resume)
        self.set_checkpoint(checkpoint_dir, resume)
        labels = train.labels
        if labels is None:
            raise DataError("training data have no labels")
        train = train.subset(labels >= 0)
        if np.unique(labels[labels >= 0]).size < 2:
            raise DataError("training data need at least two labelled classes")
        wl = None if train.wavelengths is None else [float(v) for v in train.wavelengths]
        self.card = ModelCard(
            bands=list(train.bands), n_times=1, classes=list(train.classes),
            extra={"patch_size": train.patch_size, "wavelengths": wl},
        )
        if self.hierarchical:
            if train.taxonomy is None or list(train.classes) != train.taxonomy.classes(-1):
                raise DataError(
                    "hierarchical=true needs patches with a class hierarchy and finest-level "
                    "labels (PatchSet taxonomy and level_labels)"
                )
            self.card.taxonomy = train.taxonomy.to_dict()
        if val is not None:
            if not isinstance(val, PatchSet):
                raise DataError("validation data must be patches like the training data")
            val = self._conform_patches(val)
        self._fit_patches(train, val, progress)
        return self

    def predict_proba(self, data: TimeSeriesSet | PatchSet) -> np.ndarray:
        """Class probabilities ``float32 [N, K]`` of patches (or of a time-series set)."""
        if not isinstance(data, PatchSet):
            return super().predict_proba(data)
        data = self._conform_patches(data)
        if data.n_samples == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return self._patch_probas(data)[-1]

    def _patch_probas(self, data: PatchSet) -> list[np.ndarray]:
        """Per-level (or the one flat) probabilities of conformed patches."""
        logits = self.predictor()(self.module, self._normalise(data.values))
        logits = logits if isinstance(logits, list) else [logits]
        return [torch.softmax(z, dim=1).numpy().astype(np.float32) for z in logits]

    def predict_proba_levels(self, data: TimeSeriesSet | PatchSet) -> list[np.ndarray]:
        if not isinstance(data, PatchSet):
            return super().predict_proba_levels(data)
        if not self.hierarchical:
            from cropscope.taxonomy.decoding import level_probas_from_leaf

            return level_probas_from_leaf(self._require_taxonomy(), self.predict_proba(data))
        data = self._conform_patches(data)
        return self._patch_probas(data)

    def predict_levels(self, data: TimeSeriesSet | PatchSet,
                       decoding: str = "consistent") -> np.ndarray:
        """Class codes per level ``[N, L]`` of patches (or of a time-series set)."""
        from cropscope.taxonomy.decoding import decode

        return decode(self._require_taxonomy(), self.predict_proba_levels(data), decoding)

    def predict(self, data: TimeSeriesSet | PatchSet) -> np.ndarray:
        if self.hierarchical:
            return self.predict_levels(data, self.config["decoding"])[:, -1]
        return self.predict_proba(data).argmax(axis=1)

    # ------------------------------------------------------------------ internals
    def _conform_patches(self, ps: PatchSet) -> PatchSet:
        card = self._require_card()
        if card.n_times != 1 or "patch_size" not in card.extra:
            raise DataError("this model was trained on time series; give it a time-series set")
        try:
            ps = ps.select_bands(card.bands)
        except DataError:
            raise DataError(
                f"the model was trained on {len(card.bands)} bands "
                f"({card.bands[0]} .. {card.bands[-1]}) that the input patches do not all have"
            ) from None
        size = int(card.extra["patch_size"])
        if ps.patch_size != size:
            if ps.patch_size < size:
                raise DataError(f"the model expects {size}x{size} patches, got "
                                f"{ps.patch_size}x{ps.patch_size}")
            ps = ps.crop(size)
        return ps

    def _normalise(self, values: np.ndarray) -> np.ndarray:
        card = self._require_card()
        mean = np.asarray(card.norm_mean, dtype=np.float32)[None, :, None, None]
        std = np.asarray(card.norm_std, dtype=np.float32)[None, :, None, None]
        return np.ascontiguousarray(np.nan_to_num((values - mean) / std, nan=0.0),
                                    dtype=np.float32)

    def _prepare(self, ts: TimeSeriesSet) -> np.ndarray:
        """Time-series input: ``1 x 1`` patches of the gap-filled values, normalised."""
        if self.patch_size != 1:
            raise DataError(f"this model takes {self.patch_size}x{self.patch_size} patches "
                            "(a PatchSet), not pixel series")
        return self._normalise(PatchSet.from_timeseries(ts.replace(values=_gap_free(ts))).values)

    def _fit(self, train: TimeSeriesSet, val: TimeSeriesSet | None, progress: bool) -> None:
        card = self._require_card()
        card.extra["patch_size"] = 1
        if self.hierarchical:
            self._fit_taxonomy(train)  # clear errors for a set without a usable hierarchy
        as_patches = PatchSet.from_timeseries(train.replace(values=_gap_free(train)))
        pval = None
        if val is not None:
            pval = PatchSet.from_timeseries(val.replace(values=_gap_free(val)))
        self._fit_patches(as_patches, pval, progress)

    def _fit_patches(self, train: PatchSet, val: PatchSet | None, progress: bool) -> None:
        cfg = self.config
        seed = int(cfg["seed"])
        card = self._require_card()
        tax = train.taxonomy if self.hierarchical else None
        if val is None and float(cfg["val_fraction"]) > 0:
            tr, va = train_val_split(train.centre_set(), float(cfg["val_fraction"]), seed)
            train, val = train.subset(tr), train.subset(va)
        y_val = None
        if val is not None:
            val, y_val = self._val_labels(val, tax)

        centre = train.centre.astype(np.float64)
        mean = np.nanmean(np.where(np.isfinite(centre), centre, np.nan), axis=0)
        std = np.nanstd(centre, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
        card.norm_mean = [float(v) for v in mean]
        card.norm_std = [float(v) for v in std]
        card.input_layout = self.input_layout

        x_train = self._normalise(train.values)
        y_train = train.labels if tax is None else train.level_labels
        if y_train is None:
            raise DataError("the training patches have no (per-level) labels")
        x_val = None if val is None else self._normalise(val.values)
        augment = flip_rotate if cfg["augment"] and train.patch_size > 1 else None
        self._train_members(lambda _seed: (x_train, y_train, None), x_val, y_val, None, tax,
                            progress, augment_fn=augment)
        card.extra.update(n_train=int(train.n_samples),
                          n_val=0 if val is None else int(val.n_samples))
