"""Temporal compositing: per-window medians of irregular, cloudy time series.

A composite replaces the irregular observations of each series by one value per window of a
regular grid (e.g. 10 days or one calendar month): the median of the valid observations that
fall in the window, per band. Windows without a valid observation are NaN (mask False).
Input ``values [N, T, C]`` float32, output ``[N, n_windows, C]`` float32.

The kernel is vectorised over samples and processed in cache-sized chunks of samples; there
is no Python loop over series. Windows are grouped by the number ``k`` of candidate steps
they hold (shared dates: per window; per-sample dates: per (sample, window) cell); ``k = 1,
2, 3`` use closed-form NaN-aware medians (``fmin``/``fmax``), larger ``k`` a small min/max
sorting network or ``np.sort``.

Shared dates (the common, large case) are laid out for memory traffic, because the kernel is
bound by it: the ``C`` bands of one step are moved as one item (a 4·C-byte dtype), so each
chunk is read from memory once by ``np.take`` straight into contiguous per-group slabs; the
medians run on those contiguous slabs with preallocated buffers; and one more ``np.take``
writes the finished windows in output order. Per-window copies of strided ``[N, C]`` slices
(numpy loops of C elements) and fancy-index scatters are avoided. The results are bitwise
those of the per-group formulas in :func:`_median_of`. Cost, 1 M series x 70 dates x 4
bands, one thread: about 3.5-6x one ``np.isfinite`` pass over the input
(``benchmarks/bench_features.py``, ``docs/features.md``).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Literal

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.features._arrays import check_series_arrays

__all__ = [
    "composite_median",
    "composite_median_array",
    "parse_step",
    "regular_grid",
    "window_index",
]

Step = int | str
Align = Literal["none", "season", "start"]

_MONTHLY = "monthly"
_CHUNK_ELEMENTS = 1 << 18  # values per chunk of samples, per-sample dates (~1 MiB of float32)
_SHARED_CHUNK_ELEMENTS = 1 << 17  # values per chunk, shared dates (~512 KiB, stays in L2)
_NETWORK_MAX = 8  # largest window size handled by a min/max sorting network


# --------------------------------------------------------------------------- grids
def parse_step(step: Step) -> int | str:
    """Normalise a compositing step: a positive number of days, or ``"monthly"``.

    Accepts ints (``10``), day strings (``"10D"``, ``"10d"``, ``"10"``) and ``"month"``,
    ``"monthly"``, ``"M"``, ``"MS"``, ``"1M"``.
    """
    if isinstance(step, bool):
        raise DataError(f"invalid compositing step {step!r}")
    if isinstance(step, int | np.integer):
        days = int(step)
    elif isinstance(step, str):
        s = step.strip().lower()
        if s in {"month", "monthly", "m", "ms", "1m", "1ms"}:
            return _MONTHLY
        s = s[:-1] if s.endswith("d") else s
        if not s.isdigit():
            raise DataError(
                f"invalid compositing step {step!r}; use a number of days (5, '10D') or 'monthly'"
            )
        days = int(s)
    else:
        raise DataError(f"invalid compositing step {step!r}; use days (int) or 'monthly'")
    if days <= 0:
        raise DataError(f"compositing step must be a positive number of days, got {step!r}")
    return days


def _as_day(value: Any, what: str) -> np.datetime64:
    try:
        if isinstance(value, _dt.datetime):
            value = value.date()
        day = np.datetime64(value, "D")
    except (ValueError, TypeError):
        raise DataError(f"cannot interpret {what}={value!r} as a date") from None
    if np.isnat(day):
        raise DataError(f"{what} is not a valid date: {value!r}")
    return day


def regular_grid(start: Any, end: Any, step: Step) -> np.ndarray:
    """Start dates (``datetime64[D]``) of the regular windows covering ``[start, end]``.

    Day steps give ``start, start + step, ...`` up to the last start ``<= end``. Monthly
    steps give the first day of every month from ``start``'s month to ``end``'s month.
    """
    first, last = _as_day(start, "start"), _as_day(end, "end")
    if last < first:
        raise DataError(f"grid end {last} is before its start {first}")
    parsed = parse_step(step)
    if parsed == _MONTHLY:
        months = np.arange(first.astype("datetime64[M]"), last.astype("datetime64[M]") + 1)
        return months.astype("datetime64[D]")
    n = int((last - first).astype(np.int64)) // int(parsed) + 1
    return first + np.arange(n) * np.timedelta64(int(parsed), "D")


def window_index(dates: np.ndarray, grid_start: Any, step: Step, n_windows: int) -> np.ndarray:
    """Window number of each date on a regular grid (``-1`` outside ``[0, n_windows)``)."""
    dates = np.asarray(dates, dtype="datetime64[D]")
    origin = _as_day(grid_start, "start")
    parsed = parse_step(step)
    if parsed == _MONTHLY:
        idx = (dates.astype("datetime64[M]") - origin.astype("datetime64[M]")).astype(np.int64)
    else:
        idx = (dates - origin).astype(np.int64) // int(parsed)
    idx[np.isnat(dates) | (idx < 0) | (idx >= n_windows)] = -1
    return idx


# --------------------------------------------------------------------------- kernel
def _median_of(slabs: list[np.ndarray]) -> np.ndarray:
    """NaN-ignoring elementwise median of ``k`` equally shaped arrays (NaN where all NaN)."""
    k = len(slabs)
    if k == 1:
        return slabs[0]
    if k == 2:
        a, b = slabs
        return (np.fmin(a, b) + np.fmax(a, b)) * np.float32(0.5)
    if k == 3:
        a, b, c = slabs
        lo, hi = np.fmin(a, b), np.fmax(a, b)
        # Exact median of three when all are valid (NaN-propagating min/max)...
        full = np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))
        # ...otherwise the mean of the (at most two) valid values.
        part = (np.fmin(lo, c) + np.fmax(hi, c)) * np.float32(0.5)
        return np.where(np.isnan(full), part, full)
    inf = np.float32(np.inf)
    if k > _NETWORK_MAX:
        stacked = np.stack(slabs)
        stacked[np.isnan(stacked)] = inf
        stacked.sort(axis=0)
        count = (stacked < inf).sum(axis=0)
        lo = np.take_along_axis(stacked, np.maximum(count - 1, 0)[None] // 2, axis=0)[0]
        hi = np.take_along_axis(stacked, (count // 2)[None], axis=0)[0]
    else:
        srt = [np.where(np.isnan(s), inf, s) for s in slabs]
        for i in range(k):  # bubble network; NaN (as +inf) sinks to the end
            for j in range(k - 1 - i):
                a, b = srt[j], srt[j + 1]
                srt[j], srt[j + 1] = np.minimum(a, b), np.maximum(a, b)
        count = sum((s < inf).astype(np.int8) for s in srt)
        lo_at, hi_at = (count - 1) // 2, count // 2
        lo, hi = srt[0].copy(), srt[0].copy()
        for j in range(1, k):
            np.copyto(lo, srt[j], where=lo_at == j)
            np.copyto(hi, srt[j], where=hi_at == j)
    out = (lo + hi) * np.float32(0.5)
    out[count == 0] = np.nan
    return out


def _chunk_size(n_times: int, n_bands: int, chunk: int | None, elements: int) -> int:
    if chunk is not None:
        return max(1, int(chunk))
    return max(1, elements // max(1, n_times * n_bands))


_HALF = np.float32(0.5)


def _median2_into(a: np.ndarray, b: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> None:
    """``_median_of([a, b])`` written into ``out`` (1-D float32 slabs, no allocation)."""
    np.fmin(a, b, out=tmp)
    np.fmax(a, b, out=out)
    np.add(out, tmp, out=out)
    np.multiply(out, _HALF, out=out)


def _median3_into(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, out: np.ndarray, work: list[np.ndarray]
) -> None:
    """``_median_of([a, b, c])`` written into ``out``; ``work``: 3 float32 and 1 bool buffer."""
    t1, t2, full, ok = work
    np.minimum(a, b, out=t1)
    np.maximum(a, b, out=t2)
    np.minimum(t2, c, out=t2)
    np.maximum(t1, t2, out=full)  # exact median when all valid, else NaN
    np.fmin(a, b, out=t1)
    np.fmax(a, b, out=t2)
    np.fmin(t1, c, out=t1)
    np.fmax(t2, c, out=t2)
    np.add(t1, t2, out=out)
    np.multiply(out, _HALF, out=out)  # mean of the smallest and largest valid value
    np.equal(full, full, out=ok)
    np.copyto(out, full, where=ok)


def _item_dtype(n_bands: int) -> np.dtype:
    """A dtype whose item is the ``n_bands`` float32 values of one step, moved as a unit."""
    size = 4 * n_bands
    known: dict[int, type] = {4: np.uint32, 8: np.uint64, 16: np.complex128}
    return np.dtype(known[size]) if size in known else np.dtype((np.void, size))


class _Group:
    """Windows holding ``k`` candidate steps: their step numbers per slot and buffer places.

    ``slots[j]`` is where slot ``j`` (the ``j``-th step of every window of the group) is
    gathered and ``result`` where the group's medians go, both in columns of the chunk
    buffer (one column holds one item per sample of the chunk).
    """

    def __init__(self, k: int, steps: list[np.ndarray], first: int) -> None:
        self.k = k
        self.width = len(steps[0])
        self.steps = steps
        self.slots = [first + j * self.width for j in range(k)]
        self.result = self.slots[0] if k == 1 else first + k * self.width
        self.end = self.result + self.width if k > 1 else first + self.width


def _shared_groups(
    win: np.ndarray, n_windows: int
) -> tuple[list[_Group], np.ndarray, np.ndarray, np.ndarray, int]:
    """Groups and, per window, the buffer column, offset and width its median is read from
    (empty windows read the NaN item at column ``nan_col``)."""
    keep = win >= 0
    counts = np.bincount(win[keep], minlength=n_windows)
    order = np.flatnonzero(keep)[np.argsort(win[keep], kind="stable")]
    starts = np.cumsum(counts) - counts
    groups: list[_Group] = []
    column = np.zeros(n_windows, dtype=np.intp)
    offset = np.zeros(n_windows, dtype=np.intp)
    width = np.zeros(n_windows, dtype=np.intp)
    used = 0
    for k in np.unique(counts[counts > 0]):
        ws = np.flatnonzero(counts == k)
        steps = [order[starts[ws] + j].astype(np.intp) for j in range(int(k))]
        group = _Group(int(k), steps, used)
        groups.append(group)
        column[ws], offset[ws], width[ws] = group.result, np.arange(len(ws)), len(ws)
        used = group.end
    nan_col = used
    column[counts == 0] = nan_col
    return groups, column, offset, width, nan_col


def _composite_shared(
    values: np.ndarray, win: np.ndarray, n_windows: int, mask: np.ndarray | None, chunk: int
) -> np.ndarray:
    n, t, c = values.shape
    if n == 0 or c == 0 or n_windows == 0:
        return np.full((n, n_windows, c), np.nan, dtype=np.float32)
    out = np.empty((n, n_windows, c), dtype=np.float32)
    item = _item_dtype(c)
    out_items = out.view(item).reshape(n, n_windows)
    nan_item = np.full(c, np.nan, dtype=np.float32).view(item).reshape(())
    groups, column, offset, width, nan_col = _shared_groups(win, n_windows)
    rows = min(chunk, n)
    buf = np.empty((nan_col + 1) * rows, dtype=item)
    work = {
        g.k: [np.empty(rows * g.width * c, dtype=np.float32) for _ in range(3)]
        + [np.empty(rows * g.width * c, dtype=bool)]
        for g in groups
        if g.k > 1
    }

    def read_index(m: int) -> np.ndarray:
        """Flat buffer position of each output item of an ``m``-sample chunk, ``[m, W]``."""
        return column * m + np.arange(m, dtype=np.intp)[:, None] * width + offset

    index = read_index(rows)
    for lo in range(0, n, rows):
        m = min(rows, n - lo)
        if m != rows:
            index = read_index(m)
        block = np.ascontiguousarray(values[lo : lo + m]).view(item).reshape(m, t)
        if mask is not None:
            block = np.where(mask[lo : lo + m], block, nan_item)
        for g in groups:
            slabs = [buf[s * m : (s + g.width) * m].reshape(m, g.width) for s in g.slots]
            for j, slab in enumerate(slabs):
                np.take(block, g.steps[j], axis=1, out=slab, mode="clip")
            if g.k == 1:
                continue
            flat = [slab.view(np.float32).reshape(-1) for slab in slabs]
            dest = buf[g.result * m : (g.result + g.width) * m].view(np.float32)
            scratch = [w[: dest.size] for w in work[g.k]]
            if g.k == 2:
                _median2_into(flat[0], flat[1], dest, scratch[0])
            elif g.k == 3:
                _median3_into(flat[0], flat[1], flat[2], dest, scratch)
            else:
                dest[...] = _median_of(flat)
        buf[nan_col * m] = nan_item
        np.take(buf[: (nan_col + 1) * m], index, out=out_items[lo : lo + m], mode="clip")
    return out


def _composite_per_sample(
    values: np.ndarray, win: np.ndarray, n_windows: int, mask: np.ndarray | None, chunk: int
) -> np.ndarray:
    n, t, c = values.shape
    out = np.full((n, n_windows, c), np.nan, dtype=np.float32)
    steps = np.arange(t)
    for lo in range(0, n, chunk):
        v = values[lo : lo + chunk]
        w = win[lo : lo + chunk].copy()
        m = v.shape[0]
        if mask is not None:
            w[~mask[lo : lo + chunk]] = -1
        w[w < 0] = n_windows  # dropped steps sort to the end
        order = np.argsort(w, axis=1, kind="stable")
        sw = np.take_along_axis(w, order, axis=1)
        # rank of each step inside its (sample, window) cell
        new_run = np.ones_like(sw, dtype=bool)
        new_run[:, 1:] = sw[:, 1:] != sw[:, :-1]
        run_start = np.maximum.accumulate(np.where(new_run, steps, 0), axis=1)
        rank = steps - run_start
        ok = sw < n_windows
        if not ok.any():
            continue
        rows = np.broadcast_to(np.arange(m)[:, None], sw.shape)[ok]
        cell = rows * n_windows + sw[ok]  # flat (sample, window) cell of each observation
        rank = rank[ok]
        k_max = int(rank.max()) + 1
        buf = np.full((k_max, m * n_windows, c), np.nan, dtype=np.float32)
        buf[rank, cell] = v[rows, order[ok]]
        # cells with the same number of observations share one vectorised median
        count = np.bincount(cell, minlength=m * n_windows)
        dest = out[lo : lo + m].reshape(m * n_windows, c)
        for k in np.unique(count[count > 0]):
            cells = np.flatnonzero(count == k)
            dest[cells] = _median_of([buf[j, cells] for j in range(int(k))])
    return out


def _composite_by_index(
    values: np.ndarray,
    win: np.ndarray,
    n_windows: int,
    mask: np.ndarray | None = None,
    chunk: int | None = None,
) -> np.ndarray:
    """Median composite given each step's window number (``-1`` = drop), ``[N, T', C]``."""
    values, win, mask = check_series_arrays(values, win, mask, "window index", np.int64)
    _, t, c = values.shape
    if win.ndim == 1:
        size = _chunk_size(t, c, chunk, _SHARED_CHUNK_ELEMENTS)
        return _composite_shared(values, win, n_windows, mask, size)
    size = _chunk_size(t, c, chunk, _CHUNK_ELEMENTS)
    return _composite_per_sample(values, win, n_windows, mask, size)


def composite_median_array(
    values: np.ndarray,
    day_index: np.ndarray,
    window_days: int,
    n_windows: int,
    start_day: int = 0,
    mask: np.ndarray | None = None,
    chunk: int | None = None,
) -> np.ndarray:
    """Median composite of plain arrays: ``values [N, T, C]`` → ``[N, n_windows, C]`` float32.

    ``day_index`` holds integer days (``[T]`` shared or ``[N, T]`` per sample); window ``w``
    covers days ``[start_day + w * window_days, start_day + (w + 1) * window_days)``. NaN
    values (per band) and steps where ``mask`` is False are ignored; empty windows are NaN.
    ``chunk`` sets how many samples are processed at once (default: cache-sized).
    """
    if int(window_days) <= 0 or int(n_windows) < 0:
        raise DataError("window_days must be positive and n_windows non-negative")
    days = np.asarray(day_index)
    if not np.issubdtype(days.dtype, np.integer):
        raise DataError(f"day_index must hold integer days, got dtype {days.dtype}")
    win = (days.astype(np.int64) - int(start_day)) // int(window_days)
    win[(win < 0) | (win >= n_windows)] = -1
    return _composite_by_index(values, win, int(n_windows), mask=mask, chunk=chunk)


# --------------------------------------------------------------------------- alignment
def _align_dates(dates: np.ndarray, align: str, start: np.datetime64 | None) -> np.ndarray:
    """Shift each sample's dates (``[N, T]``) so that different seasons share one grid."""
    firsts = np.min(np.where(np.isnat(dates), np.datetime64("9999-12-31"), dates), axis=1)
    if align == "start":
        ref = start if start is not None else firsts.min()
        shift = firsts - ref
    else:  # "season": whole calendar years, keeping day-of-year
        ref_year = (start if start is not None else firsts.min()).astype("datetime64[Y]")
        years = firsts.astype("datetime64[Y]")
        months = firsts.astype("datetime64[M]")
        dom = firsts - months.astype("datetime64[D]")
        n_years = (years - ref_year).astype(np.int64)
        target = (months - 12 * n_years).astype("datetime64[D]") + dom
        shift = firsts - target
    return dates - shift[:, None]


def composite_median(
    ts: TimeSeriesSet,
    step: Step = 10,
    start: Any = None,
    end: Any = None,
    align: Align = "none",
    chunk: int | None = None,
) -> TimeSeriesSet:
    """Median composite of a set on a regular grid of ``step`` days or calendar months.

    Each output step is the per-band median of the sample's valid observations (``ts.mask``)
    dated in the window; empty windows are NaN with mask False. The output has shared dates:
    the window start dates from ``start`` (default: earliest date) to ``end`` (default: latest
    date, inclusive; later observations are dropped).

    ``align`` handles per-sample dates from different years or seasons:

    - ``"none"``: composite on calendar dates as they are.
    - ``"season"``: shift each sample by whole calendar years so that its first date falls in
      the reference year (the year of ``start``, else of the earliest first date). Day of year
      is kept (±1 day around 29 February), so a Sep 2005–Aug 2006 and a Sep 2013–Aug 2014
      season land on one Sep–Aug grid.
    - ``"start"``: shift each sample so that its first date equals the reference date
      (``start``, else the earliest first date): the grid counts days since the series start.
    """
    if ts.dates is None:
        raise DataError(
            "composite_median needs calendar dates; this set has dates=None (integer steps)"
        )
    if align not in {"none", "season", "start"}:
        raise DataError(f"unknown align={align!r}; use 'none', 'season' or 'start'")
    parsed = parse_step(step)
    start_day = None if start is None else _as_day(start, "start")
    dates = ts.dates
    if align != "none":
        dates = _align_dates(np.broadcast_to(dates, ts.values.shape[:2]), align, start_day)
    if np.isnat(dates).all():
        raise DataError("all dates are missing (NaT)")
    first = start_day if start_day is not None else np.nanmin(dates)
    last = _as_day(end, "end") if end is not None else np.nanmax(dates)
    grid = regular_grid(first, last, parsed)
    origin = grid[0] if parsed == _MONTHLY else first
    win = window_index(dates, origin, parsed, len(grid))
    win[(dates < first) | (dates > last)] = -1
    out = _composite_by_index(ts.values, win, len(grid), mask=ts.mask, chunk=chunk)
    return ts.replace(values=out, dates=grid)
