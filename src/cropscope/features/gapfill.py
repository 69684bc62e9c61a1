"""Gap filling: linear interpolation of missing steps along time.

Two layouts share one implementation (:func:`_fill_rows`, time-major ``[T, W]``: every step
one contiguous row, the loops run over the ``T`` steps, vectorised over the ``W`` series):

- :func:`interpolate_gaps_array` on sample-major series ``[N, T, C]`` (the
  :class:`~cropscope.data.TimeSeriesSet` layout);
- :func:`fill_pixel_gaps` on band-major pixel series ``[C, T, N]`` in place (the map job's
  layout, :mod:`cropscope.mapping.pixels`), filling only the pixels that have a gap: in a map
  most pixels often have none, and reshaping every pixel to time-major and back was a fifth
  of a map job's time.

Only series with a gap are reshaped at all; each series is filled on its own, so the
result does not depend on which other series share a chunk (tiled maps equal untiled ones).
"""

from __future__ import annotations

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError

__all__ = ["fill_pixel_gaps", "interpolate_gaps", "interpolate_gaps_array", "time_axis_days"]

_CHUNK_ELEMENTS = 1 << 20  # values per chunk of samples


def interpolate_gaps_array(values: np.ndarray, t: np.ndarray | None = None) -> np.ndarray:
    """Fill NaN steps of ``values`` (``[N, T, C]`` or ``[N, T]``) by linear interpolation.

    Interpolation runs along axis 1, independently per sample and band, at times ``t``
    (``[T]`` or ``[N, T]``, increasing; default: step index). Leading and trailing gaps take
    the nearest valid value. A series (sample, band) without any valid value stays NaN.
    Returns a new float32 array.
    """
    arr = np.array(values, dtype=np.float32)  # a copy: filled in place below
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise DataError(f"values must be [N, T, C] or [N, T], got shape {arr.shape}")
    n, nt, nc = arr.shape
    tt = None
    if t is not None:
        tt = np.asarray(t, dtype=np.float64)
        if tt.shape not in {(nt,), (n, nt)}:
            raise DataError(f"t must be [T] or [N, T] for {(n, nt)}, got {tt.shape}")
    with_gaps = np.flatnonzero(~np.isfinite(arr).all(axis=(1, 2)))
    size = max(1, _CHUNK_ELEMENTS // max(1, nt * nc))
    if with_gaps.size * 2 > n:  # most samples have gaps: contiguous chunks, no gather
        for lo in range(0, n, size):
            sl = slice(lo, lo + size)
            t_chunk = None if tt is None else (tt if tt.ndim == 1 else tt[sl])
            arr[sl] = _fill_chunk(arr[sl], t_chunk)
    else:
        for lo in range(0, with_gaps.size, size):
            idx = with_gaps[lo : lo + size]
            t_chunk = None if tt is None else (tt if tt.ndim == 1 else tt[idx])
            arr[idx] = _fill_chunk(arr[idx], t_chunk)
    return arr[:, :, 0] if squeeze else arr


def fill_pixel_gaps(values: np.ndarray, mask: np.ndarray, t: np.ndarray | None = None) -> None:
    """Fill, in place, the invalid steps of band-major pixel series ``values [C, T, N]``.

    ``mask [T, N]`` is True where a step is valid (every band); the bands of an invalid step
    are interpolated in time at ``t`` (``[T]`` days, default: step index) exactly as
    :func:`interpolate_gaps` fills a :class:`~cropscope.data.TimeSeriesSet` with that mask
    (the same arithmetic, bit for bit). Pixels without a valid step become NaN. Only the
    pixels with a gap are copied out, filled and written back.
    """
    if values.ndim != 3 or mask.shape != values.shape[1:]:
        raise DataError(f"values [C, T, N] and mask [T, N] do not fit: {values.shape}, "
                        f"{mask.shape}")
    nc, nt, n = values.shape
    tt = None if t is None else np.asarray(t, dtype=np.float64)
    if tt is not None and tt.shape != (nt,):
        raise DataError(f"t must be [T] = ({nt},), got {tt.shape}")
    with_gaps = np.flatnonzero(~mask.all(axis=0))
    size = max(1, _CHUNK_ELEMENTS // max(1, nt * nc))
    whole = with_gaps.size * 2 > n  # most pixels have gaps: contiguous chunks, no gather
    for lo in range(0, n if whole else with_gaps.size, size):
        sel: slice | np.ndarray = slice(lo, min(n, lo + size)) if whole \
            else with_gaps[lo : lo + size]  # fmt: skip
        rows = np.ascontiguousarray(values[:, :, sel].transpose(1, 0, 2))  # [T, C, m]
        np.copyto(rows, np.float32(np.nan), where=~mask[:, None, sel])
        if _fill_rows(rows.reshape(nt, -1), tt, nc):
            values[:, :, sel] = rows.transpose(1, 0, 2)


def _fill_chunk(arr: np.ndarray, t: np.ndarray | None) -> np.ndarray:
    """Fill one chunk ``[m, T, C]`` through the time-major rows ``[T, m*C]``."""
    m, nt, nc = arr.shape
    rows = np.ascontiguousarray(arr.transpose(1, 0, 2)).reshape(nt, m * nc)
    if _fill_rows(rows, t, nc):
        return rows.reshape(nt, m, nc).transpose(1, 0, 2)
    return arr


def _fill_rows(rows: np.ndarray, t: np.ndarray | None, nc: int) -> bool:
    """Fill the non-finite values of time-major series ``rows [T, W]`` in place.

    ``t``: ``None`` (step index), ``[T]`` or ``[m, T]`` with ``W = m * nc`` (column ``j``
    belongs to sample ``j // nc``). Returns whether there was anything to fill.
    """
    nt, width = rows.shape
    valid = np.isfinite(rows)
    gaps = np.flatnonzero(~valid)
    if gaps.size == 0:
        return False
    steps = np.arange(nt, dtype=np.int32)[:, None]
    prev = valid * (steps + 1) - 1  # own step where valid, else -1 ...
    nxt = valid * (steps - nt) + nt  # ... or nt
    for i in range(1, nt):  # forward / backward fill of the valid step index
        np.maximum(prev[i - 1], prev[i], out=prev[i])
        np.minimum(nxt[nt - i], nxt[nt - 1 - i], out=nxt[nt - 1 - i])
    step, col = np.divmod(gaps, width)
    p, q = prev.ravel()[gaps], nxt.ravel()[gaps]
    has_p, has_q = p >= 0, q < nt
    p = np.where(has_p, p, q)  # leading gap: next valid value
    q = np.where(has_q, q, p)  # trailing gap: previous valid value
    empty = ~(has_p | has_q)  # (sample, band) without any valid value
    p[empty] = q[empty] = 0
    flat = rows.reshape(-1)
    v_p = flat[p * width + col].astype(np.float64)
    v_q = flat[q * width + col].astype(np.float64)
    if t is None:
        t_gap, t_p, t_q = step, p, q
    elif t.ndim == 1:
        t_gap, t_p, t_q = t[step], t[p], t[q]
    else:
        sample = col // nc
        t_gap, t_p, t_q = t[sample, step], t[sample, p], t[sample, q]
    span = (t_q - t_p).astype(np.float64)
    frac = np.where(span > 0, (t_gap - t_p) / np.where(span > 0, span, 1.0), 0.0)
    filled = v_p + (v_q - v_p) * frac
    filled[empty] = np.nan
    flat[gaps] = filled
    return True


def time_axis_days(ts: TimeSeriesSet) -> np.ndarray:
    """Time of each step in days (``[T]`` or ``[N, T]``); the step index when dates are None."""
    if ts.dates is None:
        return np.arange(ts.n_times, dtype=np.float64)
    if np.isnat(ts.dates).any():
        raise DataError("dates contain missing values (NaT); drop or date those steps first")
    return ts.dates.astype(np.int64).astype(np.float64)


def _check_not_empty(ts: TimeSeriesSet, what: str) -> None:
    assert ts.mask is not None and ts.ids is not None  # set by TimeSeriesSet.__post_init__
    empty = ~ts.mask.any(axis=1)
    if empty.any():
        ids = ", ".join(str(i) for i in ts.ids[empty][:10])
        more = " ..." if empty.sum() > 10 else ""
        raise DataError(
            f"{what}: {int(empty.sum())} series have no valid observation (all NaN), "
            f"sample ids {ids}{more}; drop them first"
        )


def interpolate_gaps(ts: TimeSeriesSet) -> TimeSeriesSet:
    """Fill invalid steps (``~ts.mask`` or NaN) by linear interpolation in time.

    Uses the actual dates (or the step index when ``dates`` is None); leading and trailing
    gaps take the nearest valid value. Raises :class:`DataError` naming the sample ids of
    series with no valid observation at all.
    """
    _check_not_empty(ts, "cannot interpolate gaps")
    assert ts.mask is not None  # set by TimeSeriesSet.__post_init__
    values = np.where(ts.mask[:, :, None], ts.values, np.float32(np.nan))
    filled = interpolate_gaps_array(values, time_axis_days(ts))
    return ts.replace(values=filled)
