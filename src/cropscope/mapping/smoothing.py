"""Bayesian smoothing of a probability map (as R sits' ``sits_smooth``), streamed like a map.

A pixel-wise classifier leaves "salt and pepper": isolated pixels whose class differs from
all their neighbours. Bayesian smoothing (Câmara et al., sits) treats each class's logit
``x = log(p / (1 - p))`` at a pixel as a noisy observation with variance ``σ²``
(``smoothness``) of a local mean, and takes as prior the mean ``m`` and variance ``s²`` of
the logits in the ``window x window`` neighbourhood (the ``neigh_fraction`` of neighbours
with the highest probability of that class; 1 = all). The posterior logit is

    x' = (m σ² + x s²) / (σ² + s²)

so a pixel in a homogeneous neighbourhood (small ``s²``) moves to its neighbours' mean, while
one on a real boundary (large ``s²``) keeps its own value. Posterior logits go back through
the logistic function and are renormalised to sum to one; the label is their argmax.

``keep_above``: a pixel whose largest class probability is at least this value is never
changed (its probabilities and label are copied), so confident pixels survive whatever the
neighbourhood says.

:class:`BayesianSmoother` implements the map-model contract (:mod:`cropscope.mapping.
contract`) on a cube made of the probability bands, so :func:`smooth_map` runs it through
the map job: windows with a halo of ``window // 2`` pixels (tiled output equals untiled),
bounded memory, resumable, Dask, COG outputs (labels, probabilities, uncertainty).
:func:`isolated_fraction` measures the salt and pepper before and after.

Shapes: probabilities ``[K, H, W]`` in 0–1, NaN = nodata; labels ``[H, W]`` uint8, 255 =
nodata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cropscope.errors import DataError
from cropscope.mapping.classify import NODATA_LABEL
from cropscope.runs.schema import TimeGrid

__all__ = ["BayesianSmoother", "SmoothResult", "isolated_fraction", "smooth_map",
           "smooth_probabilities"]

_EPS = 1e-4  # probabilities are clipped to [eps, 1 - eps] before the logit


def _box_sum(a: np.ndarray, r: int) -> np.ndarray:
    """Sum over the ``(2r+1)²`` box around each pixel (zero outside), for ``[..., H, W]``."""
    pad = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(r + 1, r), (r + 1, r)])
    c = pad.cumsum(-2).cumsum(-1)
    n = 2 * r + 1
    return c[..., n:, n:] - c[..., :-n, n:] - c[..., n:, :-n] + c[..., :-n, :-n]


def _neighbour_stats(x: np.ndarray, p: np.ndarray, valid: np.ndarray, r: int,
                     fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance ``[K, H, W]`` of the logits ``x`` over each pixel's neighbourhood
    (its valid pixels; with ``fraction < 1`` only that share with the highest ``p``)."""
    k, h, w = x.shape
    if fraction >= 1.0:
        v = valid.astype(np.float64)
        n = np.maximum(_box_sum(v[None], r), 1.0)
        xs = np.where(valid, x, 0.0)
        mean = _box_sum(xs, r) / n
        var = np.maximum(_box_sum(xs * xs, r) / n - mean * mean, 0.0)
        return mean, var
    from numpy.lib.stride_tricks import sliding_window_view

    size = 2 * r + 1
    mean = np.empty((k, h, w))
    var = np.empty((k, h, w))
    pad = [(0, 0), (r, r), (r, r)]
    xp = np.pad(np.where(valid, x, np.nan), pad, constant_values=np.nan)
    pp = np.pad(np.where(valid, p, -1.0), pad, constant_values=-1.0)
    rows = max(1, (1 << 22) // max(1, w * size * size))  # ~32 MiB of views per chunk
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        xv = sliding_window_view(xp[:, r0:r1 + 2 * r], (size, size), axis=(1, 2))
        pv = sliding_window_view(pp[:, r0:r1 + 2 * r], (size, size), axis=(1, 2))
        xv = xv.reshape(k, r1 - r0, w, size * size)
        pv = pv.reshape(k, r1 - r0, w, size * size)
        n_valid = (pv >= 0).sum(-1, keepdims=True)
        keep = np.maximum(1, np.ceil(fraction * n_valid)).astype(np.int64)
        order = np.argsort(-pv, axis=-1, kind="stable")
        ranked = np.take_along_axis(xv, order, axis=-1)
        top = np.arange(size * size) < keep
        sel = np.where(top, ranked, np.nan)
        with np.errstate(invalid="ignore"):
            m = np.nanmean(sel, axis=-1)
            s = np.nanvar(sel, axis=-1)
        mean[:, r0:r1] = np.nan_to_num(m)
        var[:, r0:r1] = np.nan_to_num(s)
    return mean, var


def _check_settings(window: int, smoothness: float, neigh_fraction: float,
                    keep_above: float | None) -> None:
    if window < 3 or window % 2 == 0:
        raise DataError(f"the smoothing window must be odd and >= 3, got {window}")
    if not smoothness > 0 or not np.isfinite(smoothness):  # NaN fails both comparisons
        raise DataError(f"smoothness must be a positive number, got {smoothness}")
    if not 0 < neigh_fraction <= 1:
        raise DataError(f"neigh_fraction must be in (0, 1], got {neigh_fraction}")
    if keep_above is not None and not 0 < keep_above <= 1:
        raise DataError(f"the keep-above threshold must be in (0, 1], got {keep_above}")


def smooth_probabilities(proba: np.ndarray, *, window: int = 7, smoothness: float = 20.0,
                         neigh_fraction: float = 0.5, keep_above: float | None = None,
                         labels: np.ndarray | None = None) -> np.ndarray:
    """Smoothed probabilities ``[K, H, W]`` of ``proba`` (NaN = nodata; see the module doc).

    ``labels``: the map's labels, to keep exactly at the pixels ``keep_above`` protects
    (when two quantised probabilities tie, the argmax alone could pick the other class).
    """
    _check_settings(window, smoothness, neigh_fraction, keep_above)
    p = np.asarray(proba, dtype=np.float64)
    valid: np.ndarray = np.asarray(np.isfinite(p).all(axis=0))
    pc = np.clip(np.where(valid, p, 0.5), _EPS, 1 - _EPS)
    x = np.log(pc / (1 - pc))
    m, s2 = _neighbour_stats(x, pc, valid, window // 2, neigh_fraction)
    post = (m * smoothness + x * s2) / (smoothness + s2)
    q = 1.0 / (1.0 + np.exp(-post))
    q /= q.sum(axis=0, keepdims=True)
    if keep_above is not None:
        keep = valid & (np.nan_to_num(p).max(axis=0) >= keep_above)
        q[:, keep] = p[:, keep]
        if labels is not None:
            lab = np.asarray(labels)
            fix = keep & (lab < p.shape[0])
            # a tiny nudge so the argmax is the map's label where quantisation tied them
            rows, cols = np.nonzero(fix)
            q[lab[rows, cols].astype(np.int64), rows, cols] += 1e-6
    q[:, ~valid] = np.nan
    return q.astype(np.float32)


class BayesianSmoother:
    """The smoothing as a map model over a cube of probability bands (see the module doc).

    ``labels_path``: the map's labels raster (read for the pixels ``keep_above`` keeps);
    ``transform``: its affine transform, to locate a window from the cube's coordinates.
    """

    input_kind = "patches"  # a halo of context, the core returned

    def __init__(self, classes: list[str], *, window: int = 7, smoothness: float = 20.0,
                 neigh_fraction: float = 0.5, keep_above: float | None = None,
                 labels_path: str | Path | None = None, transform: Any = None) -> None:
        _check_settings(window, smoothness, neigh_fraction, keep_above)
        self._classes = list(classes)
        self.window, self.smoothness = int(window), float(smoothness)
        self.neigh_fraction, self.keep_above = float(neigh_fraction), keep_above
        self.labels_path = None if labels_path is None else str(labels_path)
        self.transform = transform
        self.name = (f"bayes-smooth(window={self.window},smoothness={self.smoothness},"
                     f"neigh_fraction={self.neigh_fraction},keep_above={keep_above})")
        # the map job's fingerprint: same inputs and settings, same identity
        self.run_digest = self.name

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    @property
    def bands(self) -> list[str]:
        return list(self._classes)

    @property
    def time_grid(self) -> TimeGrid:
        return TimeGrid.any()

    @property
    def halo(self) -> int:
        return self.window // 2

    def _labels(self, cube: Any) -> np.ndarray | None:
        if self.labels_path is None or self.keep_above is None:
            return None
        import rasterio
        from rasterio.windows import Window

        t = self.transform
        col0 = round((float(cube["x"].values[0]) - t.c) / t.a - 0.5)
        row0 = round((float(cube["y"].values[0]) - t.f) / t.e - 0.5)
        with rasterio.open(self.labels_path) as src:
            return np.asarray(src.read(1, window=Window(col0, row0, cube.sizes["x"],
                                                         cube.sizes["y"])))

    def predict_window(self, cube: Any, core: tuple[slice, slice]
                       ) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(cube.values, dtype=np.float32)[0]  # one "date": [K, h, w]
        q = smooth_probabilities(values, window=self.window, smoothness=self.smoothness,
                                 neigh_fraction=self.neigh_fraction,
                                 keep_above=self.keep_above, labels=self._labels(cube))
        rows, cols = core
        out = q[:, rows, cols]
        return np.nan_to_num(out), np.isfinite(out).all(axis=0)


def isolated_fraction(labels_path: str | Path, *, block: int = 1024) -> float:
    """Share of mapped pixels whose label differs from each of their mapped 8 neighbours
    (pixels without a mapped neighbour are not counted), read window by window."""
    import rasterio
    from rasterio.windows import Window

    isolated = counted = 0
    with rasterio.open(labels_path) as src:
        for r in range(0, src.height, block):
            for c in range(0, src.width, block):
                r0, c0 = max(0, r - 1), max(0, c - 1)
                r1, c1 = min(src.height, r + block + 1), min(src.width, c + block + 1)
                lab = src.read(1, window=Window(c0, r0, c1 - c0, r1 - r0)).astype(np.int16)
                lab = np.pad(lab, 1, constant_values=NODATA_LABEL)
                core = lab[1 + (r - r0):1 + (r - r0) + min(block, src.height - r),
                           1 + (c - c0):1 + (c - c0) + min(block, src.width - c)]
                same = np.zeros(core.shape, dtype=bool)
                has = np.zeros(core.shape, dtype=bool)
                top, left = 1 + (r - r0), 1 + (c - c0)
                hh, ww = core.shape
                for dr in (-1, 0, 1):
                    for dc in (-1, 0, 1):
                        if dr == 0 and dc == 0:
                            continue
                        nb = lab[top + dr:top + dr + hh, left + dc:left + dc + ww]
                        ok = nb != NODATA_LABEL
                        has |= ok
                        same |= ok & (nb == core)
                mapped = (core != NODATA_LABEL) & has
                isolated += int((mapped & ~same).sum())
                counted += int(mapped.sum())
    return isolated / counted if counted else 0.0


@dataclass
class SmoothResult:
    """A smoothed map product and the salt-and-pepper measure before and after."""

    paths: dict[str, Path]
    classes: list[str]
    isolated_before: float
    isolated_after: float
    n_windows: int
    n_resumed: int


def smooth_map(probabilities: str | Path, out_dir: str | Path, *,
               labels: str | Path | None = None, window: int = 7, smoothness: float = 20.0,
               neigh_fraction: float = 0.5, keep_above: float | None = None, tile: int = 512,
               resume: bool = True, progress: bool = False, workers: int | None = None,
               scheduler: str | None = None) -> SmoothResult:
    """Smooth a map's probabilities COG (``round(p * 254)`` per class, 255 = nodata, as
    the map job writes it) into ``out_dir`` (``labels.tif``, ``probabilities.tif``,
    ``uncertainty.tif``) through the map job. ``labels``: the map's labels COG (default:
    ``<stem minus _probabilities>.tif`` beside it), used for ``keep_above`` and the
    before/after measure."""
    import rasterio

    from cropscope.data.readers.class_tags import band_class_names
    from cropscope.data.readers.cube import CubeSource
    from cropscope.mapping.job import run_map_job

    prob = Path(probabilities)
    if not prob.is_file():
        raise DataError(f"probability map not found: {prob}")
    with rasterio.open(prob) as src:
        classes, transform, dtype = band_class_names(src), src.transform, src.dtypes[0]
        grid = (src.crs, src.transform, src.width, src.height)
    if len(classes) < 2:
        raise DataError(f"{prob} has {len(classes)} band; a probability map has one per class")
    if dtype != "uint8":
        raise DataError(f"{prob}: expected uint8 probabilities (p x 254), got {dtype}")
    if labels is None:
        guess = prob.with_name(prob.name.replace("_probabilities", "")) \
            if "_probabilities" in prob.name else prob.with_name("labels.tif")
        labels = guess if guess.is_file() else None
    if labels is not None:
        with rasterio.open(labels) as lab:
            if (lab.crs, lab.transform, lab.width, lab.height) != grid:
                raise DataError(f"the labels {labels} are not on the grid of the probabilities "
                                f"{prob} (CRS, transform or size differ): give the labels "
                                "map made with them")
    source = CubeSource.scan(prob, dates=["2000-01-01"], band_names=classes,
                             nodata=NODATA_LABEL, scale=1.0 / 254.0)
    model = BayesianSmoother(classes, window=window, smoothness=smoothness,
                             neigh_fraction=neigh_fraction, keep_above=keep_above,
                             labels_path=labels, transform=transform)
    res = run_map_job(model, source, out_dir, tile=tile, resume=resume, progress=progress,
                      workers=workers, scheduler=scheduler)
    before = isolated_fraction(labels) if labels is not None else float("nan")
    after = isolated_fraction(res.paths["labels"])
    return SmoothResult(res.paths, classes, before, after, res.n_windows, res.n_resumed)
