"""Smoothing of gappy time series: Whittaker (penalised least squares) and Savitzky–Golay.

Both work on ``values [N, T, C]`` (or ``[N, T]``) with NaN gaps, vectorised over all series
(loops run over time steps only), and both fill the gaps: the output is defined at every
step of a series that has enough valid observations.

Whittaker smoother (Eilers 2003, "A perfect smoother")
------------------------------------------------------
For one series ``y [T]`` with weights ``w`` (1 = observed, 0 = gap) the smooth ``z``
minimises ``Σ w_i (y_i - z_i)² + λ Σ (D_d z)²``, i.e. solves the banded system
``(W + λ DᵀD) z = W y``. ``D_d`` is the matrix of ``d``-th order differences, or, for
uneven times ``x``, of divided differences scaled so that unit spacing gives the plain
differences: ``D_k = diag(k / (x_{i+k} - x_i)) Δ D_{k-1}``. ``λ`` is in units of the time
axis: the :class:`TimeSeriesSet` wrapper measures time in *typical steps* (days divided by
the median spacing of the dates), so ``λ`` means the same for a 10-day and a 16-day series,
and regular series give exactly the equal-spacing smoother. A series needs at least ``d``
valid observations; with fewer it becomes the mean of its valid values (NaN without any).

The system is symmetric positive definite with half-bandwidth ``d``; it is solved by a
banded LDLᵀ factorisation written with numpy and vectorised over all series (each series
has its own weights, so each needs its own factorisation): ``O(N·T·d²)`` work and a few
``[N, T]`` arrays of memory, against ``O(N)`` sparse factorisations with per-series Python
calls in a loop of ``scipy.sparse.linalg.spsolve`` (the reference in the tests).

We looked for a maintained package first: ``whittaker-eilers`` (Rust, weights and uneven
``x``) smooths one series per Python call, ``vam-whittaker`` (WFP, Cython, regular grids
with V-curve ``λ`` search) targets raster stacks with its own layout; neither takes a batch
of series with per-series gaps and dates in one call, so the solve is here (about 60 lines).

Savitzky–Golay with gaps
------------------------
At each step ``i`` a polynomial of degree ``polyorder`` is fitted by least squares to the
valid observations of the ``window`` steps around ``i`` (the window is shifted inwards at
the ends, as in ``scipy.signal.savgol_filter(mode="interp")``), at the times ``x`` of those
steps; the fitted value at ``x_i`` is the output. Gaps simply drop out of the fit. A
window with fewer valid observations than ``polyorder + 1`` uses the highest degree they
allow; one without any gives NaN. Without gaps and with even times this *is*
``savgol_filter(..., mode="interp")``, which is then used directly (fast path).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError

__all__ = [
    "savitzky_golay",
    "savitzky_golay_array",
    "whittaker",
    "whittaker_array",
]

_CHUNK_ELEMENTS = 1 << 20  # series x steps per chunk


def _as_series(values: Any) -> tuple[np.ndarray, bool]:
    """``values`` as float64 ``[M, T]`` series (M = N·C, band-major within a sample) and
    whether the input was ``[N, T]``."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 2:
        return arr, True
    if arr.ndim != 3:
        raise DataError(f"values must be [N, T, C] or [N, T], got shape {arr.shape}")
    n, t, c = arr.shape
    return arr.transpose(0, 2, 1).reshape(n * c, t), False


def _back(series: np.ndarray, shape: tuple[int, ...], flat: bool) -> np.ndarray:
    if flat:
        return series.astype(np.float32)
    n, t, c = shape
    return series.reshape(n, c, t).transpose(0, 2, 1).astype(np.float32)


def _times(x: Any, n: int, t: int, c: int) -> np.ndarray:
    """Times as ``[T]`` or ``[M, T]`` (repeated per band), checked strictly increasing."""
    if x is None:
        return np.arange(t, dtype=np.float64)
    xx = np.asarray(x, dtype=np.float64)
    if xx.shape not in {(t,), (n, t)}:
        raise DataError(f"x must be [T] or [N, T] for {(n, t)} series, got {xx.shape}")
    if not np.isfinite(xx).all():
        raise DataError("times x must be finite")
    if t > 1 and not (np.diff(xx, axis=-1) > 0).all():
        raise DataError("times x must increase strictly within each series")
    return xx if xx.ndim == 1 else np.repeat(xx, c, axis=0)


# --------------------------------------------------------------------------- Whittaker
def _difference_coefficients(x: np.ndarray, order: int, t: int) -> np.ndarray:
    """Rows of the (divided) difference matrix: ``[..., T - order, order + 1]``."""
    coef = np.ones((*x.shape[:-1], t, 1))
    for k in range(1, order + 1):
        rows = t - k
        span = x[..., k:] - x[..., :rows]  # x_{r+k} - x_r
        prev = coef  # [..., rows + 1, k]
        new = np.zeros((*x.shape[:-1], rows, k + 1))
        new[..., :, 1:] += prev[..., 1:, :]
        new[..., :, :-1] -= prev[..., :-1, :]
        coef = new * (k / span)[..., None]
    return coef


def _penalty_bands(x: np.ndarray, order: int, t: int) -> list[np.ndarray]:
    """Bands ``k = 0..order`` of ``DᵀD``: ``bands[k][..., i] = (DᵀD)[i, i + k]``."""
    c = _difference_coefficients(x, order, t)
    rows = t - order
    bands = [np.zeros((*x.shape[:-1], t)) for _ in range(order + 1)]
    for k in range(order + 1):
        for j in range(order + 1 - k):
            bands[k][..., j:j + rows] += c[..., :, j] * c[..., :, j + k]
    return bands


def _solve_banded(diag_w: np.ndarray, lam: float, pen: list[np.ndarray], rhs: np.ndarray
                  ) -> np.ndarray:
    """Solve ``(diag(w) + λ P) z = rhs`` for every row (``P`` banded, symmetric) by LDLᵀ."""
    m, t = rhs.shape
    d = len(pen) - 1
    a = [np.broadcast_to(lam * pen[k], (m, t)).copy() for k in range(d + 1)]
    a[0] += diag_w
    dd = np.empty((m, t))
    low = np.zeros((d + 1, m, t))  # low[k][:, i] = L[i + k, i]
    for i in range(t):
        acc = a[0][:, i].copy()
        for k in range(1, min(d, i) + 1):
            acc -= low[k][:, i - k] ** 2 * dd[:, i - k]
        dd[:, i] = acc
        for k in range(1, min(d, t - 1 - i) + 1):
            r = i + k
            acc = a[k][:, i].copy()
            for j in range(max(0, r - d), i):
                acc -= low[r - j][:, j] * low[i - j][:, j] * dd[:, j]
            low[k][:, i] = acc / dd[:, i]
    u = rhs.copy()
    for i in range(1, t):
        for k in range(1, min(d, i) + 1):
            u[:, i] -= low[k][:, i - k] * u[:, i - k]
    u /= dd
    for i in range(t - 2, -1, -1):
        for k in range(1, min(d, t - 1 - i) + 1):
            u[:, i] -= low[k][:, i] * u[:, i + k]
    return u


def whittaker_array(values: Any, lmbda: float = 1.0, order: int = 2, x: Any = None,
                    weights: Any = None) -> np.ndarray:
    """Whittaker-smoothed ``values`` (``[N, T, C]`` or ``[N, T]``, NaN = gap) as float32.

    ``lmbda`` > 0 is the smoothing weight, ``order`` (1–3) the difference order, ``x`` the
    times (``[T]`` or ``[N, T]``, strictly increasing; default: the step index) and
    ``weights`` optional observation weights of the same shape as ``values`` (gaps always
    weigh 0). See the module doc.
    """
    if not np.isfinite(lmbda) or lmbda <= 0:
        raise DataError(f"Whittaker lambda must be positive, got {lmbda!r}")
    if int(order) != order or not 1 <= order <= 3:
        raise DataError(f"Whittaker order must be 1, 2 or 3, got {order!r}")
    order = int(order)
    arr = np.asarray(values)
    series, flat = _as_series(arr)
    n, t = arr.shape[:2]
    c = 1 if flat else arr.shape[2]
    xx = _times(x, n, t, c)
    valid = np.isfinite(series)
    w = valid.astype(np.float64)
    if weights is not None:
        ww, _ = _as_series(weights)
        if ww.shape != series.shape or (ww[valid] < 0).any():
            raise DataError("weights must have the shape of values and be >= 0")
        w = np.where(valid, ww, 0.0)
    y = np.where(valid, series, 0.0)
    out = np.full(series.shape, np.nan)
    n_valid = (w > 0).sum(axis=1)
    # fewer than `order` observations leave the system singular; with t <= order there
    # is no difference to penalise: both keep the data and fill gaps with the mean
    few = np.ones(len(series), bool) if t <= order else n_valid < order
    solve = ~few
    if few.any():
        total = w[few].sum(axis=1)
        mean = np.divide((w * y)[few].sum(axis=1), total, out=np.full(total.shape, np.nan),
                         where=total > 0)
        out[few] = mean[:, None]
        if t <= order:
            out[few] = np.where(valid[few], series[few], mean[:, None])
    if solve.any():
        idx = np.flatnonzero(solve)
        size = max(1, _CHUNK_ELEMENTS // max(t, 1))
        shared = xx.ndim == 1
        pen_shared = _penalty_bands(xx, order, t) if shared else None
        for lo in range(0, len(idx), size):
            part = idx[lo:lo + size]
            pen = pen_shared if pen_shared is not None else _penalty_bands(xx[part], order, t)
            out[part] = _solve_banded(w[part], float(lmbda), pen, (w * y)[part])
    return _back(out, arr.shape, flat)


# --------------------------------------------------------------------------- Savitzky–Golay
def savitzky_golay_array(values: Any, window: int = 5, polyorder: int = 2,
                         x: Any = None) -> np.ndarray:
    """Savitzky–Golay-smoothed ``values`` (``[N, T, C]`` or ``[N, T]``, NaN = gap) as
    float32: local polynomial fits of degree ``polyorder`` over ``window`` steps (odd,
    ``polyorder < window <= T``) at times ``x`` (default: the step index). See the module
    doc."""
    if int(window) != window or window < 1 or window % 2 == 0:
        raise DataError(f"Savitzky-Golay window must be a positive odd number, got {window!r}")
    if int(polyorder) != polyorder or not 0 <= polyorder < window:
        raise DataError(f"Savitzky-Golay polyorder must be in [0, window), got {polyorder!r}")
    window, polyorder = int(window), int(polyorder)
    arr = np.asarray(values)
    series, flat = _as_series(arr)
    n, t = arr.shape[:2]
    c = 1 if flat else arr.shape[2]
    if window > t:
        raise DataError(f"Savitzky-Golay window {window} is longer than the series ({t} steps)")
    xx = _times(x, n, t, c)
    valid = np.isfinite(series)
    even = xx.ndim == 1 and np.allclose(np.diff(xx), xx[1] - xx[0]) if t > 1 else True
    if valid.all() and even:
        from scipy.signal import savgol_filter

        return _back(savgol_filter(series, window, polyorder, axis=1, mode="interp"),
                     arr.shape, flat)
    half = window // 2
    out = np.full(series.shape, np.nan)
    y = np.where(valid, series, 0.0)
    w = valid.astype(np.float64)
    for i in range(t):
        s = min(max(i - half, 0), t - window)
        sl = slice(s, s + window)
        dx = xx[..., sl] - xx[..., i:i + 1]  # [W] or [M, W]
        scale = np.max(np.abs(dx), axis=-1, keepdims=True)
        dx = np.broadcast_to(dx / np.where(scale > 0, scale, 1.0), (len(series), window))
        ww, yy = w[:, sl], y[:, sl]
        count = ww.sum(axis=1)
        # weighted moments: Gram matrix G[p, q] = S[p + q], right-hand side b[p]
        power = np.ones_like(dx)
        moments, rhs = [], []
        for k in range(2 * polyorder + 1):
            moments.append((ww * power).sum(axis=1))
            if k <= polyorder:
                rhs.append((ww * yy * power).sum(axis=1))
            power = power * dx
        mom, b = np.stack(moments, axis=1), np.stack(rhs, axis=1)  # [M, 2P+1], [M, P+1]
        todo = count > 0
        for deg in range(polyorder, -1, -1):
            rows = todo & (count >= deg + 1)
            if not rows.any():
                continue
            idx = np.arange(deg + 1)
            gram = mom[rows][:, idx[:, None] + idx[None, :]]
            out[rows, i] = np.linalg.solve(gram, b[rows, : deg + 1, None])[:, 0, 0]
            todo &= ~rows
    return _back(out, arr.shape, flat)


# --------------------------------------------------------------------------- sets
def _step_time(ts: TimeSeriesSet) -> np.ndarray | None:
    """Times in typical steps (days / median spacing), or None for integer steps."""
    from cropscope.features.gapfill import time_axis_days

    if ts.dates is None:
        return None
    days = time_axis_days(ts)
    gaps = np.diff(days, axis=-1)
    positive = gaps[gaps > 0]
    step = float(np.median(positive)) if positive.size else 1.0
    return (days - days[..., :1]) / step


def _smoothed(ts: TimeSeriesSet, values: np.ndarray) -> TimeSeriesSet:
    return ts.replace(values=values)


def _observed(ts: TimeSeriesSet) -> np.ndarray:
    assert ts.mask is not None  # set by TimeSeriesSet.__post_init__
    return np.where(ts.mask[:, :, None], ts.values, np.float32(np.nan))


def whittaker(ts: TimeSeriesSet, lmbda: float = 1.0, order: int = 2) -> TimeSeriesSet:
    """``ts`` Whittaker-smoothed per sample and band (gaps filled; flagged steps, i.e.
    ``~ts.mask``, count as gaps), with time in typical steps of the dates (see the module
    doc). The mask becomes "finite"."""
    return _smoothed(ts, whittaker_array(_observed(ts), lmbda, order, x=_step_time(ts)))


def savitzky_golay(ts: TimeSeriesSet, window: int = 5, polyorder: int = 2) -> TimeSeriesSet:
    """``ts`` Savitzky–Golay-smoothed per sample and band over ``window`` steps (gaps and
    flagged steps drop out of the local fits and are filled), at the times of the dates."""
    return _smoothed(ts, savitzky_golay_array(_observed(ts), window, polyorder,
                                              x=_step_time(ts)))
