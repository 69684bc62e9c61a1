"""Stratified estimators of map accuracy and class area from a probability sample.

A map is assessed with a *probability sample* of reference points: the map's pixels are cut
into strata (usually the map classes), ``n_h`` pixels are drawn at random (without
replacement) in stratum ``h`` of ``N_h`` pixels, and a reference class is observed at each.
From such a sample the estimators here give the error matrix in area proportions, overall,
user's and producer's accuracy and the area of every class, each with its standard error and
a 95 % confidence interval — the "good practices" of Olofsson et al. (2014, Remote Sens.
Environ. 148:42–57) when the strata are the map classes, and of Stehman (2014, Int. J.
Remote Sens. 35:4923–4939) when they are not (e.g. strata from an older map or a buffer).

One estimator serves both cases: every quantity is a stratified total (the Horvitz–Thompson
estimator of a total, ``sum_h N_h * mean_h(y)``) or a ratio of two such totals, for a
suitable per-point variable ``y`` (Stehman 2014, eqs. 2–3 and 26–28):

- the area of reference class ``k``: ``y_u = a_u * [ref_u == k]``;
- the error-matrix cell ``(i, j)`` as an area proportion: ``y_u = a_u * [map_u == i and
  ref_u == j]`` over the total area;
- overall accuracy: ``y_u = a_u * [map_u == ref_u]`` over the total area;
- user's accuracy of ``k``: ``y_u = a_u * [map_u == ref_u == k]`` over ``x_u = a_u *
  [map_u == k]``; producer's accuracy: the same ``y`` over ``x_u = a_u * [ref_u == k]``.

``a_u`` is the area of point ``u``'s pixel (hectares), so maps whose pixels differ in area
(a geographic CRS) are estimated by area, not by pixel count; with equal pixel areas and
strata = map classes the estimates are exactly Olofsson's. Variances are the stratified ones
(Stehman 2014 eqs. 25 and 28) without the finite-population correction, as in Olofsson et al.
(``fpc=True`` multiplies each stratum's term by ``1 - n_h / N_h``, which matters only when
a sample is a sizeable share of its stratum). The 95 % interval is ``estimate ± 1.96 SE``.

Shapes: ``map_class``, ``reference``, ``stratum`` and ``pixel_area`` are per-point arrays
``[n]``; ``stratum_pixels`` ``[H]`` and ``stratum_area`` ``[H]`` (hectares) describe the
whole population. Each stratum needs at least two sample points (a variance from one point
is undefined).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cropscope.errors import EvaluationError

__all__ = ["Z95", "AreaEstimate", "Estimate", "estimate_accuracy_and_area"]

#: the normal quantile of a two-sided 95 % interval, rounded as in Olofsson et al. (2014)
Z95 = 1.96


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its standard error and 95 % confidence interval."""

    value: float
    se: float

    @property
    def ci95(self) -> float:
        """Half-width of the 95 % confidence interval."""
        return Z95 * self.se

    def to_dict(self) -> dict[str, float]:
        return {"estimate": self.value, "se": self.se, "ci95": self.ci95,
                "lower": self.value - self.ci95, "upper": self.value + self.ci95}


@dataclass
class AreaEstimate:
    """Everything estimated from one sample (see the module doc); classes in ``classes``
    order, matrix rows = map class, columns = reference class."""

    classes: list[str]
    #: error matrix of estimated area proportions ``[K, K]`` (sums to 1)
    proportions: np.ndarray
    #: the sample's error matrix (point counts) ``[K, K]``
    counts: np.ndarray
    overall_accuracy: Estimate
    users_accuracy: dict[str, Estimate]
    producers_accuracy: dict[str, Estimate]
    #: estimated area of each reference class, hectares
    area_ha: dict[str, Estimate]
    #: estimated share of the total area of each reference class
    area_share: dict[str, Estimate]
    #: mapped (pixel-counted) area of each map class, hectares
    mapped_area_ha: dict[str, float]
    total_area_ha: float
    n_points: int
    #: ``"map classes"`` (Olofsson) or the name of the strata raster (Stehman)
    strata: str
    #: points and pixels per stratum
    stratum_table: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every estimate with ``estimate``, ``se``, ``ci95``, bounds."""
        return {
            "classes": list(self.classes),
            "n_points": self.n_points,
            "strata": self.strata,
            "total_area_ha": self.total_area_ha,
            "overall_accuracy": self.overall_accuracy.to_dict(),
            "users_accuracy": {k: v.to_dict() for k, v in self.users_accuracy.items()},
            "producers_accuracy": {k: v.to_dict() for k, v in self.producers_accuracy.items()},
            "area_ha": {k: v.to_dict() for k, v in self.area_ha.items()},
            "area_share": {k: v.to_dict() for k, v in self.area_share.items()},
            "mapped_area_ha": dict(self.mapped_area_ha),
            "error_matrix_proportions": self.proportions.tolist(),
            "error_matrix_counts": self.counts.astype(int).tolist(),
            "stratum_table": list(self.stratum_table),
        }


class _Strata:
    """Per-stratum sums of point variables, to form totals, ratios and their variances."""

    def __init__(self, stratum: np.ndarray, pixels: np.ndarray, fpc: bool) -> None:
        self.index = stratum
        self.N = pixels.astype(np.float64)
        self.n = np.bincount(stratum, minlength=len(pixels)).astype(np.float64)
        sampled = self.n > 0
        # finite-population correction per stratum (1: none)
        self.fpc = np.where(sampled, 1.0 - self.n / np.maximum(self.N, 1.0), 0.0) if fpc \
            else sampled.astype(np.float64)
        self.sampled = sampled

    def mean(self, y: np.ndarray) -> np.ndarray:
        s = np.bincount(self.index, weights=y, minlength=len(self.N))
        return np.divide(s, self.n, out=np.zeros_like(s), where=self.sampled)

    def cov(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Sample covariance of ``y`` and ``x`` within each stratum (``n_h - 1`` divisor)."""
        my, mx = self.mean(y), self.mean(x)
        d = (y - my[self.index]) * (x - mx[self.index])
        s = np.bincount(self.index, weights=d, minlength=len(self.N))
        return np.divide(s, self.n - 1, out=np.zeros_like(s), where=self.n > 1)

    def total(self, y: np.ndarray) -> float:
        return float(np.sum(self.N * self.mean(y)))

    def total_var(self, y: np.ndarray) -> float:
        w = np.divide(self.N**2 * self.fpc, self.n, out=np.zeros_like(self.N),
                      where=self.sampled)
        return float(np.sum(w * self.cov(y, y)))

    def ratio(self, y: np.ndarray, x: np.ndarray) -> Estimate:
        """``total(y) / total(x)`` with the linearised variance (Stehman 2014 eq. 28)."""
        tx = self.total(x)
        if tx <= 0:
            return Estimate(float("nan"), float("nan"))
        r = self.total(y) / tx
        w = np.divide(self.N**2 * self.fpc, self.n, out=np.zeros_like(self.N),
                      where=self.sampled)
        var = np.sum(w * (self.cov(y, y) + r * r * self.cov(x, x) - 2 * r * self.cov(y, x)))
        return Estimate(r, float(np.sqrt(max(var, 0.0))) / tx)


def estimate_accuracy_and_area(
    map_class: np.ndarray,
    reference: np.ndarray,
    stratum: np.ndarray,
    stratum_pixels: Sequence[int] | np.ndarray,
    classes: Sequence[str],
    *,
    pixel_area: np.ndarray | float = 1.0,
    stratum_area: Sequence[float] | np.ndarray | None = None,
    mapped_area: Mapping[str, float] | None = None,
    stratum_names: Sequence[str] | None = None,
    strata: str = "map classes",
    fpc: bool = False,
) -> AreaEstimate:
    """Estimates from a stratified random sample (see the module doc).

    ``map_class`` / ``reference``: class codes ``0..K-1`` of each point on the map and in
    the reference; ``stratum``: each point's stratum ``0..H-1``; ``stratum_pixels``: ``N_h``
    pixels per stratum; ``pixel_area``: hectares of each point's pixel (a scalar for equal
    areas); ``stratum_area``: hectares per stratum (default ``N_h * pixel_area``);
    ``mapped_area``: the map's hectares per class, reported beside the estimates; ``fpc``:
    apply the finite-population correction.
    """
    names = [str(c) for c in classes]
    k = len(names)
    mc = np.asarray(map_class, dtype=np.int64)
    ref = np.asarray(reference, dtype=np.int64)
    st = np.asarray(stratum, dtype=np.int64)
    n = len(mc)
    if not (len(ref) == len(st) == n):
        raise EvaluationError("map classes, reference classes and strata differ in length")
    if n == 0:
        raise EvaluationError("no reference points to assess the map with")
    for label, arr in (("map", mc), ("reference", ref)):
        if arr.min() < 0 or arr.max() >= k:
            raise EvaluationError(f"{label} class codes must be in 0..{k - 1}")
    big_n = np.asarray(stratum_pixels, dtype=np.float64)
    h = len(big_n)
    if st.min() < 0 or st.max() >= h:
        raise EvaluationError(f"stratum codes must be in 0..{h - 1}")
    snames = [str(s) for s in (stratum_names or range(h))]
    strat = _Strata(st, big_n, fpc)
    empty = [snames[i] for i in np.flatnonzero((big_n > 0) & ~strat.sampled)]
    if empty:
        raise EvaluationError(f"stratum {empty[0]!r} has pixels but no reference point; every "
                              "stratum needs at least two (or a stratified design without it)")
    lone = [snames[i] for i in np.flatnonzero(strat.n == 1)]
    if lone:
        raise EvaluationError(f"stratum {lone[0]!r} has a single reference point: its variance "
                              "is undefined; every stratum needs at least two")
    outside = [snames[i] for i in np.flatnonzero(strat.sampled & (big_n <= 0))]
    if outside:
        raise EvaluationError(f"reference points fall in stratum {outside[0]!r}, which has no "
                              "pixels in the map")
    too_many = [snames[i] for i in np.flatnonzero(strat.n > big_n)]
    if too_many:
        raise EvaluationError(f"stratum {too_many[0]!r} has more reference points than pixels")

    a = np.broadcast_to(np.asarray(pixel_area, dtype=np.float64), (n,)).astype(np.float64)
    if not np.isfinite(a).all() or (a <= 0).any():
        raise EvaluationError("pixel areas must be positive")
    if stratum_area is None:
        if np.ndim(pixel_area) != 0:
            raise EvaluationError("give stratum_area with per-point pixel areas")
        total_area = float(big_n.sum()) * float(pixel_area)
    else:
        total_area = float(np.sum(np.asarray(stratum_area, dtype=np.float64)))
    ones = a
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (mc, ref), 1)
    prop = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                prop[i, j] = strat.ratio(a * ((mc == i) & (ref == j)), ones).value
    oa = strat.ratio(a * (mc == ref), ones)
    ua, pa, area, share = {}, {}, {}, {}
    for c, name in enumerate(names):
        hit = a * ((mc == c) & (ref == c))
        ua[name] = strat.ratio(hit, a * (mc == c))
        pa[name] = strat.ratio(hit, a * (ref == c))
        sh = strat.ratio(a * (ref == c), ones)
        share[name] = sh
        area[name] = Estimate(sh.value * total_area, sh.se * total_area)
    table = [{"stratum": snames[i], "pixels": int(big_n[i]), "points": int(strat.n[i])}
             for i in range(h)]
    return AreaEstimate(
        classes=names, proportions=prop, counts=counts, overall_accuracy=oa,
        users_accuracy=ua, producers_accuracy=pa, area_ha=area, area_share=share,
        mapped_area_ha={str(kk): float(v) for kk, v in (mapped_area or {}).items()},
        total_area_ha=total_area, n_points=n, strata=strata, stratum_table=table)
