"""Window predictors: how a map job turns one window of a cube into class probabilities.

A model's ``input_kind`` picks the predictor:

- ``"pixels"`` (:class:`PixelPredictor`): every pixel's time series on its own. Only the
  window's core is read; tiled output equals untiled output exactly.
- ``"patches"`` (:class:`PatchPredictor`): each pixel from the ``size x size`` patch
  around it (hyperspectral patch models). The window is read with a halo of at least
  ``size // 2`` pixels and pixels beyond the scene are NaN, as for a whole-scene run, so
  tiled output again equals untiled output exactly.
- ``"scene"`` (:class:`ScenePredictor`): dense models that label a whole image at once
  (segmentation networks). Their output depends on everything in the input, so windows are
  predicted with a halo and the overlaps are cross-faded (:func:`blend_weights`): a linear
  ramp across the ``2 * halo`` pixels around each window edge, weights summing to one, so
  no seam is visible where two windows meet. Such a model implements
  ``predict_proba_scene(x [T, C, H, W] float32, NaN = nodata) -> [K, H, W]`` with the
  bands in the order of its card, and may declare ``context`` (its preferred halo).

Core predictors return the quantised outputs of the core; the scene predictor returns
float probabilities of the whole read window, which the job blends with its neighbours'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cropscope.errors import DataError
from cropscope.mapping.classify import NODATA_LABEL, cube_pixels
from cropscope.mapping.windows import MapWindow

if TYPE_CHECKING:
    from cropscope.models.base import Classifier

__all__ = [
    "PatchPredictor",
    "PixelPredictor",
    "ScenePredictor",
    "WindowPredictor",
    "blend_weights",
    "core_outputs",
    "entropy",
    "quantise",
    "window_predictor",
]

NODATA = NODATA_LABEL


def quantise(values: np.ndarray) -> np.ndarray:
    """Values in 0-1 as uint8 ``round(v * 254)`` (255 stays free for nodata)."""
    return np.rint(np.clip(values, 0.0, 1.0) * 254.0).astype(np.uint8)


def entropy(proba: np.ndarray, axis: int = 1) -> np.ndarray:
    """Normalised entropy of probabilities along ``axis`` (0 = certain, 1 = uniform)."""
    p = np.clip(proba.astype(np.float64), 1e-12, 1.0)
    h = -(proba * np.log(p)).sum(axis=axis)
    return h / np.log(proba.shape[axis])


def core_outputs(proba: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """The three quantised outputs of probabilities ``[K, h, w]`` where ``valid [h, w]``."""
    k, h, w = proba.shape
    labels = np.full((1, h, w), NODATA, dtype=np.uint8)
    proba_q = np.full((k, h, w), NODATA, dtype=np.uint8)
    unc = np.full((1, h, w), NODATA, dtype=np.uint8)
    p = proba[:, valid]
    labels[0, valid] = p.argmax(axis=0)
    proba_q[:, valid] = quantise(p)
    unc[0, valid] = quantise(entropy(p, axis=0))
    return {"labels": labels, "probabilities": proba_q, "uncertainty": unc}


def blend_weights(window: MapWindow, halo: int, height: int, width: int) -> np.ndarray:
    """Cross-fade weights ``float64 [read_h, read_w]`` of a window's read area.

    Along each axis the weight rises as ``min(1, (d + 1) / (2 * halo + 1))`` with the
    distance ``d`` from a read-window edge that lies inside the scene (edges on the scene's
    border get no ramp). Two neighbours' ramps sum to one over their overlap.
    """

    def ramp(start: int, size: int, total: int) -> np.ndarray:
        d = np.arange(size, dtype=np.float64)
        near = np.full(size, np.inf)
        if start > 0:
            near = np.minimum(near, d)
        if start + size < total:
            near = np.minimum(near, size - 1 - d)
        return np.minimum(1.0, (near + 1.0) / (2 * halo + 1)) if halo > 0 else np.ones(size)

    rows = ramp(window.read_row, window.read_height, height)
    cols = ramp(window.read_col, window.read_width, width)
    return rows[:, None] * cols[None, :]


class WindowPredictor:
    """Predicts one window of a cube source; picklable (sent to Dask workers)."""

    #: "core": returns quantised core outputs; "blend": float probabilities of the read area
    mode: ClassVar[str] = "core"

    def __init__(self, model: Classifier, halo: int, batch_size: int) -> None:
        self.model = model
        self.halo = halo
        self.batch_size = batch_size

    def __call__(self, source: Any, window: MapWindow) -> dict[str, np.ndarray]:
        raise NotImplementedError


class PixelPredictor(WindowPredictor):
    """Pixel models: the time series of each valid core pixel, in batches."""

    def __call__(self, source: Any, window: MapWindow) -> dict[str, np.ndarray]:
        pixels = cube_pixels(source.read(window.write_window))
        k, n = len(self.model.classes), window.height * window.width
        proba = np.zeros((n, k), dtype=np.float32)
        valid = pixels.mask.any(axis=1)
        idx_valid = np.flatnonzero(valid)
        for start in range(0, idx_valid.size, self.batch_size):
            idx = idx_valid[start : start + self.batch_size]
            proba[idx] = self.model.predict_proba(pixels.subset(idx))
        shape = (window.height, window.width)
        return core_outputs(proba.T.reshape(k, *shape), valid.reshape(shape))


class PatchPredictor(WindowPredictor):
    """Patch models: the ``size x size`` neighbourhood of each valid core pixel."""

    def __call__(self, source: Any, window: MapWindow) -> dict[str, np.ndarray]:
        from cropscope.data.patches import PatchSet, extract_patches

        cube = source.read(window.read_window)
        card = self.model._require_card()
        bands = [str(b) for b in cube["band"].values]
        image = cube.values[0] if cube.sizes["time"] == 1 else _flatten_time(cube.values)
        names = bands if cube.sizes["time"] == 1 else [
            f"{b}@t{i}" for i in range(cube.sizes["time"]) for b in bands
        ]
        size = int(card.extra.get("patch_size", 1))
        rs, cs = window.core_in_read
        valid = np.isfinite(image[:, rs, cs]).any(axis=0)
        rows, cols = np.nonzero(valid)
        k = len(self.model.classes)
        proba = np.zeros((k, window.height, window.width), dtype=np.float32)
        for start in range(0, rows.size, self.batch_size):
            r = rows[start : start + self.batch_size]
            c = cols[start : start + self.batch_size]
            values = extract_patches(image, r + rs.start, c + cs.start, size)
            p = self.model.predict_proba(PatchSet(values=values, bands=names))
            proba[:, r, c] = p.T
        return core_outputs(proba, valid)


def _flatten_time(values: np.ndarray) -> np.ndarray:
    """``[T, C, H, W]`` → ``[T * C, H, W]`` (time-major, as ``PatchSet.from_timeseries``)."""
    t, c, h, w = values.shape
    return values.reshape(t * c, h, w)


class ScenePredictor(WindowPredictor):
    """Dense models: class probabilities of the whole read window, blended by the job."""

    mode: ClassVar[str] = "blend"

    def __call__(self, source: Any, window: MapWindow) -> dict[str, np.ndarray]:
        cube = source.read(window.read_window)
        card = self.model._require_card()
        cube = cube.sel(band=list(card.bands))
        values = np.ascontiguousarray(cube.values, dtype=np.float32)
        valid = np.isfinite(values).any(axis=(0, 1))
        proba = np.asarray(self.model.predict_proba_scene(values), dtype=np.float32)
        k = len(self.model.classes)
        if proba.shape != (k, *valid.shape):
            raise DataError(
                f"{self.model.name!r}.predict_proba_scene returned {proba.shape}, expected "
                f"{(k, *valid.shape)}"
            )
        return {"proba": proba, "valid": valid}


_PREDICTORS: dict[str, type[WindowPredictor]] = {
    "pixels": PixelPredictor,
    "patches": PatchPredictor,
    "scene": ScenePredictor,
}


def window_predictor(
    model: Classifier, halo: int | None, tile: int, batch_size: int
) -> WindowPredictor:
    """The predictor for ``model``'s input kind with the halo it needs.

    ``halo=None`` picks the model's need: 0 for pixel models, ``patch_size // 2`` for patch
    models, ``model.context`` (or an eighth of the tile) for scene models. A given halo
    smaller than a patch model's radius is an error (patches would be cut at tile edges).
    """
    kind = getattr(model, "input_kind", "pixels")
    if kind not in _PREDICTORS:
        raise DataError(f"model {model.name!r} takes {kind!r} inputs, which maps cannot feed")
    if kind == "patches" and int(model._require_card().extra.get("patch_size", 1)) == 1:
        kind = "pixels"  # a patch model trained on 1 x 1 patches reads pixel series
    if kind == "pixels":
        need = 0
    elif kind == "patches":
        need = int(model._require_card().extra["patch_size"]) // 2
    else:
        need = int(getattr(model, "context", 0) or max(1, tile // 8))
    if halo is None:
        halo = need
    elif kind == "patches" and halo < need:
        raise DataError(
            f"model {model.name!r} reads {2 * need + 1}x{2 * need + 1} patches: the halo "
            f"must be at least {need} pixels, got {halo}"
        )
    if kind == "scene" and halo > tile:
        raise DataError(f"the halo ({halo}) of a scene model must not exceed the tile ({tile})")
    return _PREDICTORS[kind](model, halo, batch_size)
