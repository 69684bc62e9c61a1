"""Labelled image patches ``[N, K, h, w]``: the sample container of patch (spatial) models.

A :class:`PatchSet` is to patch models what :class:`~cropscope.data.TimeSeriesSet` is to pixel
models: ``N`` square neighbourhoods of ``h x w`` pixels (``h == w``, odd) over ``K`` bands,
centred on the labelled pixel. The label of a patch is the label of its centre pixel.

Conventions
-----------
- ``values`` is ``float32 [N, K, h, w]``; nodata (and pixels outside the image) are NaN.
- ``bands`` name the ``K`` bands (matched by name at inference, like time-series bands);
  ``wavelengths`` (nm, ``[K]``) are optional.
- ``labels`` are integer codes ``int64 [N]`` into ``classes`` (``-1`` = unlabelled).
- ``meta`` has one row per patch, with at least ``row`` and ``col`` (the centre pixel in
  the scene) when the patches come from :func:`extract_patches`.

Pixel models get the centre spectra with :meth:`PatchSet.centre_set` (a time-series set
with one time step and one "band" per spectral band), or the neighbourhood's mean spectra
with :meth:`PatchSet.mean_set`; patch models take the patch set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cropscope.data._labelled import LabelledSamples
from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError

if TYPE_CHECKING:
    from cropscope.taxonomy.tree import Taxonomy

__all__ = ["PatchSet", "extract_patches"]


@dataclass(eq=False)
class PatchSet(LabelledSamples):
    """Labelled patches ``[N, K, h, w]`` with band names, wavelengths and metadata."""

    _kind = "patch set"

    values: np.ndarray
    bands: list[str]
    wavelengths: np.ndarray | None = None
    labels: np.ndarray | None = None
    classes: list[str] = field(default_factory=list)
    ids: np.ndarray | None = None
    meta: pd.DataFrame | None = None
    #: optional class hierarchy and per-level labels ``[N, L]``, as on a TimeSeriesSet
    taxonomy: Taxonomy | None = None
    level_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float32)
        if values.ndim != 4:
            raise DataError(f"patch values must be [N, K, h, w], got shape {values.shape}")
        n, k, h, w = values.shape
        if h != w or h % 2 == 0:
            raise DataError(f"patches must be square with an odd size, got {h} x {w}")
        self.values = values
        self.bands = [str(b) for b in self.bands]
        if len(self.bands) != k:
            raise DataError(f"{len(self.bands)} band names for {k} bands")
        if len(set(self.bands)) != k:
            raise DataError("duplicate band names")
        if self.wavelengths is not None:
            self.wavelengths = np.asarray(self.wavelengths, dtype=np.float64)
            if self.wavelengths.shape != (k,):
                raise DataError(f"wavelengths must be [K] = ({k},), got {self.wavelengths.shape}")
        self.classes = [str(c) for c in (self.classes or [])]
        if self.labels is not None:
            labels = np.asarray(self.labels)
            integer = np.issubdtype(labels.dtype, np.integer)
            if labels.shape != (n,) or (labels.size and not integer):
                raise DataError(f"labels must be integer codes [N] = ({n},)")
            self.labels = labels.astype(np.int64)
            if labels.size and labels.max() >= len(self.classes):
                raise DataError(f"label code {labels.max()} has no class name")
        self.ids = np.arange(n) if self.ids is None else np.asarray(self.ids)
        if self.ids.shape != (n,):
            raise DataError(f"ids must be [N] = ({n},), got {self.ids.shape}")
        if self.meta is None:
            self.meta = pd.DataFrame(index=pd.RangeIndex(n))
        elif len(self.meta) != n:
            raise DataError(f"meta has {len(self.meta)} rows for {n} patches")
        else:
            self.meta = self.meta.reset_index(drop=True)
        if (self.taxonomy is None) != (self.level_labels is None):
            raise DataError("a patch set's taxonomy and level_labels go together")
        if self.taxonomy is not None and self.level_labels is not None:
            self.level_labels = np.asarray(self.level_labels, dtype=np.int64)
            if self.level_labels.shape != (n, self.taxonomy.n_levels):
                raise DataError(f"level_labels must be [N, L], got {self.level_labels.shape}")

    def _normalised(self) -> tuple[np.ndarray, pd.DataFrame]:
        """``ids`` and ``meta``, which ``__post_init__`` always sets."""
        if self.ids is None or self.meta is None:
            raise DataError("ids and meta of a patch set must not be set to None")
        return self.ids, self.meta

    # ------------------------------------------------------------------ shape and access
    @property
    def n_bands(self) -> int:
        return self.values.shape[1]

    @property
    def patch_size(self) -> int:
        return self.values.shape[2]

    @property
    def centre(self) -> np.ndarray:
        """Centre-pixel spectra ``[N, K]``."""
        r = self.patch_size // 2
        return self.values[:, :, r, r]

    def subset(self, index: np.ndarray | Sequence[int] | slice) -> PatchSet:
        """Patches selected by integer positions, boolean mask or slice."""
        idx = np.arange(self.n_samples)[index]
        ids, meta = self._normalised()
        return PatchSet(
            values=self.values[idx],
            bands=list(self.bands),
            wavelengths=self.wavelengths,
            labels=None if self.labels is None else self.labels[idx],
            classes=list(self.classes),
            ids=ids[idx],
            meta=meta.iloc[idx].reset_index(drop=True),
            taxonomy=self.taxonomy,
            level_labels=None if self.level_labels is None else self.level_labels[idx],
        )

    def select_bands(self, names: Sequence[str]) -> PatchSet:
        """The named bands, in the given order (exact names)."""
        lookup = {b: i for i, b in enumerate(self.bands)}
        missing = [n for n in names if n not in lookup]
        if missing:
            shown = missing[:5] + (["..."] if len(missing) > 5 else [])
            raise DataError(f"bands {shown} not found among the {self.n_bands} patch bands")
        idx = [lookup[n] for n in names]
        return replace(
            self,
            values=self.values[:, idx],
            bands=[self.bands[i] for i in idx],
            wavelengths=None if self.wavelengths is None else self.wavelengths[idx],
        )

    def crop(self, size: int) -> PatchSet:
        """Smaller centred patches of ``size`` (odd, at most the current size)."""
        h = self.patch_size
        if size % 2 == 0 or not 1 <= size <= h:
            raise DataError(f"cannot crop {h} x {h} patches to {size} x {size}")
        a = (h - size) // 2
        return replace(self, values=self.values[:, :, a : a + size, a : a + size])

    # ------------------------------------------------------------------ conversions
    def centre_set(self) -> TimeSeriesSet:
        """The centre pixels as a time-series set: values ``[N, 1, K]`` (one time step, one
        "band" per spectral band), same labels, ids and metadata; for pixel models."""
        return self._spectra_set(self.centre)

    def _spectra_set(self, spectra: np.ndarray) -> TimeSeriesSet:
        """One spectrum per patch ``[N, K]`` as a one-step time-series set with the
        patches' labels, ids and metadata."""
        return TimeSeriesSet(
            values=spectra[:, None, :],
            bands=list(self.bands),
            labels=self.labels,
            classes=list(self.classes),
            ids=self.ids,
            meta=self.meta,
            taxonomy=self.taxonomy,
            level_labels=self.level_labels,
        )

    def mean_set(self) -> TimeSeriesSet:
        """The mean spectrum of each patch as a time-series set (``[N, 1, K]``, like
        :meth:`centre_set`): per band, the mean of the finite pixels of the ``h x w``
        neighbourhood (NaN where none is finite). A spatial feature for pixel models
        (``patch_size`` of the feature-table models): averaging a ``3 x 3`` neighbourhood
        removes much of the pixel-level noise of a hyperspectral image."""
        finite = np.isfinite(self.values)
        total = np.where(finite, self.values, 0.0).sum(axis=(2, 3), dtype=np.float64)
        count = finite.sum(axis=(2, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / count, np.nan).astype(np.float32)
        return self._spectra_set(mean)

    @classmethod
    def from_timeseries(cls, ts: TimeSeriesSet) -> PatchSet:
        """``1 x 1`` patches from a time-series set: the ``T x C`` values of each sample
        become ``K = T * C`` bands named ``{band}`` (``T == 1``) or ``{band}@t{step}``."""
        n, t, _ = ts.values.shape
        values = ts.values.reshape(n, -1)[:, :, None, None]
        if t == 1:
            bands = list(ts.bands)
        else:
            bands = [f"{b}@t{i}" for i in range(t) for b in ts.bands]
        return cls(values=values, bands=bands, labels=ts.labels, classes=list(ts.classes),
                   ids=ts.ids, meta=ts.meta, taxonomy=ts.taxonomy,
                   level_labels=ts.level_labels if ts.taxonomy is not None else None)

    def __repr__(self) -> str:
        cls = f", classes={len(self.classes)}" if self.labels is not None else ""
        return (f"PatchSet(N={self.n_samples}, K={self.n_bands}, "
                f"size={self.patch_size}x{self.patch_size}{cls})")


def extract_patches(
    image: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    size: int,
    fill: float = np.nan,
) -> np.ndarray:
    """Square ``size x size`` neighbourhoods of ``image`` ``[K, H, W]`` centred on
    ``(rows, cols)``: ``float32 [N, K, size, size]``; pixels beyond the image are ``fill``."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise DataError(f"image must be [K, H, W], got shape {image.shape}")
    if size < 1 or size % 2 == 0:
        raise DataError(f"patch size must be a positive odd number, got {size}")
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    _, h, w = image.shape
    if rows.size and (rows.min() < 0 or rows.max() >= h or cols.min() < 0 or cols.max() >= w):
        raise DataError("patch centres outside the image")
    r = size // 2
    padded = np.pad(image, ((0, 0), (r, r), (r, r)), constant_values=fill)
    offsets = np.arange(size)
    yy = rows[:, None, None] + offsets[None, :, None]  # [N, size, 1]
    xx = cols[:, None, None] + offsets[None, None, :]  # [N, 1, size]
    out = padded[:, yy, xx]  # [K, N, size, size]
    return np.ascontiguousarray(out.transpose(1, 0, 2, 3))

