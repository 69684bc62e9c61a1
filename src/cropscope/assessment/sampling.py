"""Sampling design for accuracy assessment: how many points, how many per stratum, which.

- :func:`sample_size`: the number of points for a target standard error of overall accuracy
  (Olofsson et al. 2014, eq. 13; Cochran 1977, eq. 5.25) or of one class's area share,
  from the strata weights ``W_h`` (mapped area shares) and the expected user's accuracies
  ``U_h`` (``S_h = sqrt(U_h (1 - U_h))``). For a class's area the reference share of that
  class in stratum ``h`` is ``U_k`` in its own stratum and, in the others, the stratum's
  expected error ``1 - U_h`` spread evenly over the other classes (a stated assumption).
- :func:`allocate`: ``n`` points over the strata — ``proportional`` (``n W_h``), ``equal``,
  ``neyman`` (``n W_h S_h / sum W S``) or ``olofsson`` (the recommendation of Olofsson et
  al. 2014, §5.1.2: each stratum whose proportional share is below ``minimum`` gets
  ``minimum`` points, the rest are shared proportionally). Counts are rounded by largest
  remainder, so they sum to ``n``; each stratum gets at least 2 points (a variance needs
  two) and at most its pixel count.
- :func:`draw_stratified_sample`: a stratified random sample of pixels from a class raster,
  streamed by window (two passes, memory ~ one window whatever the map's size): pass 1
  counts the pixels per class, the ranks of the chosen pixels are drawn per stratum with
  ``numpy.random.default_rng(seed)``, pass 2 picks the pixels of those ranks in window order.
  The same map, design and seed give the same points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cropscope.errors import EvaluationError

__all__ = [
    "ALLOCATIONS",
    "SamplePoints",
    "allocate",
    "draw_stratified_sample",
    "sample_size",
]

ALLOCATIONS = ("olofsson", "proportional", "equal", "neyman")


def _weights(weights: Sequence[float] | np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise EvaluationError("strata weights must be non-negative with a positive sum")
    return w / w.sum()


def _accuracies(expected_ua: float | Sequence[float] | np.ndarray, k: int) -> np.ndarray:
    u = np.broadcast_to(np.asarray(expected_ua, dtype=np.float64), (k,)).copy()
    if not ((u > 0) & (u <= 1)).all():
        raise EvaluationError("expected user's accuracies must be in (0, 1]")
    return u


def sample_size(weights: Sequence[float] | np.ndarray,
                expected_ua: float | Sequence[float] | np.ndarray, target_se: float, *,
                target_class: int | None = None) -> int:
    """Points needed for a standard error ``target_se`` of overall accuracy (or, with
    ``target_class``, of that class's area share); see the module doc."""
    w = _weights(weights)
    u = _accuracies(expected_ua, len(w))
    if not 0 < target_se < 1:
        raise EvaluationError(f"the target standard error must be in (0, 1), got {target_se}")
    if target_class is None:
        s = np.sqrt(u * (1 - u))
    else:
        if not 0 <= target_class < len(w):
            raise EvaluationError(f"target class {target_class} is not a stratum")
        k = len(w)
        p = (1 - u) / max(k - 1, 1)
        p[target_class] = u[target_class]
        s = np.sqrt(p * (1 - p))
    n = (float(np.sum(w * s)) / target_se) ** 2
    return max(math.ceil(n - 1e-9), 2 * len(w))


def _round_to(total: int, shares: np.ndarray) -> np.ndarray:
    """Integers proportional to ``shares`` summing to ``total`` (largest remainder)."""
    raw = shares / shares.sum() * total if shares.sum() > 0 else np.zeros_like(shares)
    out = np.floor(raw).astype(np.int64)
    short = total - int(out.sum())
    if short > 0:
        order = np.argsort(-(raw - out), kind="stable")
        out[order[:short]] += 1
    return out


def allocate(n: int, pixels: Sequence[int] | np.ndarray, method: str = "olofsson", *,
             weights: Sequence[float] | np.ndarray | None = None,
             expected_ua: float | Sequence[float] | np.ndarray = 0.8,
             minimum: int = 50) -> np.ndarray:
    """Points per stratum (see the module doc). ``pixels``: ``N_h``; ``weights``: ``W_h``
    (default: the pixel shares); ``expected_ua`` for ``neyman``; ``minimum`` for
    ``olofsson``."""
    big_n = np.asarray(pixels, dtype=np.int64)
    present = big_n > 0
    if method not in ALLOCATIONS:
        raise EvaluationError(f"allocation must be one of {ALLOCATIONS}, got {method!r}")
    if not present.any():
        raise EvaluationError("the map has no pixel to sample")
    w = _weights(big_n if weights is None else weights)
    w = np.where(present, w, 0.0)
    h = int(present.sum())
    floor = np.where(big_n >= 2, 2, big_n)
    if n < int(floor.sum()):
        raise EvaluationError(f"{n} points cannot cover {h} strata with 2 points each; "
                              f"ask for at least {int(floor.sum())}")
    if n > int(big_n.sum()):
        raise EvaluationError(f"{n} points but the map has only {int(big_n.sum())} pixels")
    if method == "proportional":
        out = _round_to(n, w)
    elif method == "equal":
        out = _round_to(n, present.astype(np.float64))
    elif method == "neyman":
        u = _accuracies(expected_ua, len(w))
        out = _round_to(n, w * np.sqrt(u * (1 - u)))
    else:
        if minimum < 2:
            raise EvaluationError(f"the minimum per class must be >= 2, got {minimum}")
        prop = w * n
        rare = present & (prop < minimum)
        fixed = np.where(rare, np.minimum(minimum, big_n), 0)
        rest = n - int(fixed.sum())
        if rest < 0:
            raise EvaluationError(f"{int(rare.sum())} rare classes x {minimum} points exceed "
                                  f"the {n} points; raise --n or lower --min-per-class")
        out = fixed + _round_to(rest, np.where(rare, 0.0, w))
    # every stratum at least 2 (when it has 2 pixels), at most its pixels; keep the total
    out = np.clip(np.maximum(out, floor), 0, big_n)
    return _rebalance(out, n, big_n, floor)


def _rebalance(out: np.ndarray, n: int, big_n: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Move points so the counts sum to ``n`` within ``floor <= out <= big_n``: surplus
    taken from, and deficits given to, the largest allocations first."""
    out = out.copy()
    while int(out.sum()) > n:
        can = np.flatnonzero(out > floor)
        out[can[np.argmax(out[can])]] -= 1
    while int(out.sum()) < n:
        can = np.flatnonzero(out < big_n)
        out[can[np.argmax(big_n[can] - out[can])]] += 1
    return out


@dataclass
class SamplePoints:
    """A drawn sample: pixel ``rows``/``cols``, the map ``codes`` there, pixel-centre ``x``/
    ``y`` in the map's CRS, and the design (``allocation`` per code)."""

    rows: np.ndarray
    cols: np.ndarray
    codes: np.ndarray
    x: np.ndarray
    y: np.ndarray
    allocation: dict[int, int]


def draw_stratified_sample(path: Any, allocation: Mapping[int, int], *, seed: int = 0,
                           band: int = 1, pixels: Mapping[int, int] | None = None,
                           block: int = 512) -> SamplePoints:
    """Draw ``allocation[code]`` pixels at random (without replacement) among the pixels of
    each class ``code`` of the class raster ``path`` (see the module doc). ``pixels``:
    the per-code counts when already known (skips pass 1)."""
    import rasterio
    from rasterio.windows import Window

    from cropscope.data.pixel_areas import raster_class_areas

    if pixels is None:
        counts, _, _ = raster_class_areas(path, band=band, block=block)
        pixels = {int(c): int(v) for c, v in enumerate(counts) if v > 0}
    rng = np.random.default_rng(seed)
    ranks: dict[int, np.ndarray] = {}
    for code in sorted(allocation):
        want, have = int(allocation[code]), int(pixels.get(code, 0))
        if want > have:
            raise EvaluationError(f"class {code}: {want} points asked, {have} pixels")
        if want > 0:
            ranks[code] = np.sort(rng.choice(have, size=want, replace=False))
    seen = dict.fromkeys(ranks, 0)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    codes_out: list[np.ndarray] = []
    with rasterio.open(path) as src:
        t = src.transform
        for r in range(0, src.height, block):
            for c in range(0, src.width, block):
                h, w = min(block, src.height - r), min(block, src.width - c)
                codes = src.read(band, window=Window(c, r, w, h)).ravel()
                for code, chosen in ranks.items():
                    where = np.flatnonzero(codes == code)
                    start = seen[code]
                    lo, hi = np.searchsorted(chosen, [start, start + len(where)])
                    if hi > lo:
                        pick = where[chosen[lo:hi] - start]
                        rows.append(r + pick // w)
                        cols.append(c + pick % w)
                        codes_out.append(np.full(len(pick), code, dtype=np.int64))
                    seen[code] = start + len(where)
        rr = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        cc = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        xs = t.c + t.a * (cc + 0.5) + t.b * (rr + 0.5)
        ys = t.f + t.d * (cc + 0.5) + t.e * (rr + 0.5)
    return SamplePoints(rr, cc, np.concatenate(codes_out) if codes_out else
                        np.zeros(0, dtype=np.int64), xs, ys,
                        {int(k): int(v) for k, v in allocation.items()})
