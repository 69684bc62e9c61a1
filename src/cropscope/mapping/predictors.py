"""Window predictors: how a map job turns one window of a cube into class probabilities.

Every model reaches the job as a :class:`~cropscope.mapping.contract.MapModel`
(``predict_window``); its ``input_kind`` decides what is read and how outputs combine:

- ``"pixels"``: every pixel's time series on its own. Only the window's core is read;
  tiled output equals untiled output exactly.
- ``"patches"``: each pixel from the ``size x size`` patch around it (hyperspectral patch
  models). The window is read with a halo of at least ``size // 2`` pixels and pixels beyond
  the scene are NaN, as for a whole-scene run, so tiled output again equals untiled output
  exactly.
- ``"scene"``: dense models that label a whole image at once (segmentation networks). Their
  output depends on everything in the input, so windows are predicted with a halo and the
  overlaps are cross-faded (:func:`blend_weights`): a linear ramp across the ``2 * halo``
  pixels around each window edge, weights summing to one, so no seam is visible where two
  windows meet.

Core predictions return the quantised outputs of the core; scene predictions return float
probabilities of the whole read window, which the job blends with its neighbours'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.errors import DataError
from cropscope.mapping.classify import NODATA_LABEL
from cropscope.mapping.windows import MapWindow

if TYPE_CHECKING:
    from cropscope.mapping.contract import MapModel
    from cropscope.mapping.pixels import PixelReader

__all__ = [
    "WindowPredictor",
    "blend_weights",
    "core_outputs",
    "entropy",
    "quantise",
    "valid_outputs",
    "window_predictor",
]

NODATA = NODATA_LABEL


def quantise(values: np.ndarray) -> np.ndarray:
    """Values in 0-1 as uint8 ``round(v * 254)`` (255 stays free for nodata)."""
    q = np.clip(values, 0.0, 1.0)  # the one temporary, worked on in place
    np.multiply(q, 254.0, out=q)
    np.rint(q, out=q)
    return q.astype(np.uint8)


def entropy(proba: np.ndarray, axis: int = 1) -> np.ndarray:
    """Normalised entropy of probabilities along ``axis`` (0 = certain, 1 = uniform):
    ``-sum(p * log(clip(p, 1e-12, 1))) / log(K)`` in float64 (one temporary)."""
    h = proba.astype(np.float64)
    np.clip(h, 1e-12, 1.0, out=h)
    np.log(h, out=h)
    np.multiply(proba, h, out=h)
    np.negative(h, out=h)
    return h.sum(axis=axis) / np.log(proba.shape[axis])


def core_outputs(proba: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """The three quantised outputs of probabilities ``[K, h, w]`` where ``valid [h, w]``."""
    return valid_outputs(proba[:, valid], valid)


def valid_outputs(p: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """The three quantised outputs ``uint8 [1 | K, h, w]`` (255 = nodata) of the
    probabilities ``p [K, n_valid]`` (C order) of the pixels where ``valid [h, w]``."""
    k = p.shape[0]
    h, w = valid.shape
    every = p.shape[1] == valid.size  # no nodata pixel: the outputs are p's layout
    labels = np.full((1, h, w), NODATA, dtype=np.uint8)
    proba_q = np.full((k, h, w), NODATA, dtype=np.uint8)
    unc = np.full((1, h, w), NODATA, dtype=np.uint8)
    if every:
        labels.reshape(-1)[...] = p.argmax(axis=0)
        proba_q.reshape(k, -1)[...] = quantise(p)
        unc.reshape(-1)[...] = quantise(entropy(p, axis=0))
    else:
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
    """Predicts one window of a cube source through the map-model contract; picklable
    (sent to Dask workers).

    Two stages, so that a job can read the next window while it predicts this one:
    :meth:`read` (the window's input; I/O and decoding, which release the GIL) and
    :meth:`predict` (the model and the outputs). Pixel models of the
    :class:`~cropscope.mapping.contract.ClassifierMapModel` kind read their windows through
    :class:`~cropscope.mapping.pixels.PixelReader` (the band-major layout their feature
    table is made of, no xarray cube); every other model reads an xarray cube and gets
    :meth:`~cropscope.mapping.contract.MapModel.predict_window`.
    """

    def __init__(self, model: MapModel, halo: int) -> None:
        self.model = model
        self.halo = halo
        #: "core": quantised core outputs; "blend": float probabilities of the read area
        self.mode = "blend" if model.input_kind == "scene" else "core"
        #: whether windows go through the pixel route (PixelReader + predict_pixels)
        self.pixel_route = model.input_kind == "pixels" and callable(
            getattr(model, "predict_pixels", None))
        self._reader: PixelReader | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"] = None  # its buffers stay in this process
        return state

    def reader(self, source: Any) -> PixelReader:
        """The pixel reader of ``source`` (made once per source and process)."""
        from cropscope.mapping.pixels import PixelReader

        if self._reader is None or self._reader.source is not source:
            self._reader = PixelReader(source, self.model.bands)
        return self._reader

    def collects_garbage(self, source: Any) -> bool:
        """Whether each window leaves reference cycles behind (xarray cubes) that the job
        should collect at once (``gc.collect``, which costs tens of milliseconds)."""
        return not self.pixel_route

    def read(self, source: Any, window: MapWindow) -> Any:
        """Stage 1: the window's input (a :class:`PixelWindow` or ``(cube, core)``)."""
        if self.pixel_route:
            return self.reader(source).read(window.write_window)
        if self.model.input_kind == "pixels":
            cube = source.read(window.write_window)
            core = (slice(0, window.height), slice(0, window.width))
        else:
            cube = source.read(window.read_window)
            core = window.core_in_read
        if list(cube["band"].values) != self.model.bands:
            cube = cube.sel(band=self.model.bands)
        return cube, core

    def predict(self, window: MapWindow, data: Any) -> dict[str, np.ndarray]:
        """Stage 2: the window's outputs from what :meth:`read` returned."""
        if self.pixel_route:
            try:
                proba, valid = self.model.predict_pixels(  # type: ignore[attr-defined]
                    data.values, data.mask, data.dates)
            finally:
                data.release()
            return valid_outputs(proba, valid.reshape(data.shape))
        cube, core = data
        proba, valid = self.model.predict_window(cube, core)
        proba = np.asarray(proba, dtype=np.float32)
        k = len(self.model.classes)
        if proba.shape != (k, *valid.shape):
            raise DataError(f"{self.model.name!r}.predict_window returned {proba.shape}, "
                            f"expected {(k, *valid.shape)}")
        if self.mode == "blend":
            return {"proba": proba, "valid": valid}
        return core_outputs(proba, valid)

    def __call__(self, source: Any, window: MapWindow) -> dict[str, np.ndarray]:
        return self.predict(window, self.read(source, window))


def window_predictor(model: MapModel, halo: int | None, tile: int) -> WindowPredictor:
    """The predictor for ``model`` with the halo it needs.

    ``halo=None`` picks the model's need: 0 for pixel models, ``patch_size // 2`` for patch
    models, the model's ``halo`` (or an eighth of the tile) for scene models. A given halo
    smaller than a patch model's radius is an error (patches would be cut at tile edges).
    """
    kind = model.input_kind
    if kind not in ("pixels", "patches", "scene"):
        raise DataError(f"model {model.name!r} takes {kind!r} inputs, which maps cannot feed")
    need = int(model.halo)
    if kind == "scene" and need <= 0:
        need = max(1, tile // 8)
    if halo is not None and (isinstance(halo, bool) or not isinstance(halo, int) or halo < 0):
        raise DataError(f"the halo must be a number of pixels >= 0, got {halo!r}")
    if halo is None:
        halo = need
    elif kind == "patches" and halo < need:
        raise DataError(
            f"model {model.name!r} reads {2 * need + 1}x{2 * need + 1} patches: the halo "
            f"must be at least {need} pixels, got {halo}"
        )
    if kind == "pixels":
        halo = 0
    if kind == "scene" and halo > tile:
        raise DataError(f"the halo ({halo}) of a scene model must not exceed the tile ({tile})")
    return WindowPredictor(model, halo)
