"""Harmonic regression coefficients (cropnet.md §2.2).

Per sample and band, fit by ordinary least squares on the valid observations::

    y(t) = c + Σ_{k=1..order} a_k cos(2πk t) + b_k sin(2πk t),    t in periods (years)

Coefficients are laid out band-major: for each band ``c, cos1, sin1, cos2, sin2, ...``
(``2 * order + 1`` values), see :func:`harmonic_feature_names`.

All fits are done at once, in chunks of samples: ``X^T W y`` (``W`` = validity weights, so
every sample may have its own valid set) is, with shared times, one float64 product per band
and sub-chunk of samples (``[n, T] @ [T, p]``), with per-sample times a batched product;
``X^T W X`` comes from the ``4*order+1`` weighted sums of the harmonics up to ``2*order``
(product-to-sum formulas), one matrix product for the whole chunk; then a batched Cholesky
solve written with vectorised numpy operations over the batch axis. A tiny ridge
(``ridge * n_valid`` on the diagonal) keeps the solve stable. Everything after the values is
float64: float32 accumulation would be faster but changes the coefficients (the normal
equations square the condition number). Cost, 1 M series x 70 dates x 4 bands, one thread:
about 10-13x one ``np.isfinite`` pass over the input (``benchmarks/bench_features.py``,
``docs/features.md``); the numpy passes of the solve and of ``X^T W X``, not memory, bound it.

Rank-deficient fits give NaN coefficients: a sample/band with fewer valid observations than
coefficients, or whose normal matrix has a Cholesky pivot below ``1e-10`` of its diagonal
(e.g. all observations on a few dates, or a harmonic order too high for the time span).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.features._arrays import check_series_arrays
from cropscope.threads import available_cpus, current_threads

try:
    from threadpoolctl import threadpool_limits as _threadpool_limits
except ImportError:  # pragma: no cover
    _threadpool_limits = None

__all__ = [
    "fit_harmonics_array",
    "harmonic_coefficients",
    "harmonic_design",
    "harmonic_feature_names",
    "harmonic_time",
    "reconstruct_harmonics",
]

_PIVOT_TOL = 1e-10
_CHUNK_ELEMENTS = 1 << 20  # values per chunk of samples (solve batch)
_INNER_CHUNK = 512  # samples per pass over the values (cache-sized)


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Limit BLAS to one thread if threadpoolctl (a scikit-learn dependency) is present."""
    if _threadpool_limits is None:  # pragma: no cover
        yield
        return
    with _threadpool_limits(1, user_api="blas"):
        yield


def _check_order(order: int) -> int:
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or order < 0:
        raise DataError(f"harmonic order must be a non-negative integer, got {order!r}")
    return int(order)


def _cos_sin(t: np.ndarray, period: float) -> tuple[np.ndarray, np.ndarray]:
    """``cos, sin`` of ``2π t / period``; integral ``t`` (days) go through a lookup table,
    which is much cheaper than float64 trig calls on large arrays."""
    omega = 2.0 * np.pi / period
    if t.size > 256:
        lo, hi = float(t.min()), float(t.max())
        if hi - lo < 1e6 and np.array_equal(t, np.round(t)):
            grid = omega * (lo + np.arange(int(hi - lo) + 1))
            idx = (t - lo).astype(np.intp)
            return np.cos(grid)[idx], np.sin(grid)[idx]
    return np.cos(omega * t), np.sin(omega * t)


def _harmonic_rows(t: np.ndarray, order: int, period: float = 1.0) -> np.ndarray:
    """Harmonics of ``2π t / period`` (``t [..., T]``) as rows: ``[..., 2*order+1, T]``.

    Higher harmonics come from the angle-addition formulas (one cos/sin evaluation in all).
    """
    out = np.empty((*t.shape[:-1], 2 * order + 1, t.shape[-1]))
    out[..., 0, :] = 1.0
    if order:
        c1, s1 = _cos_sin(t, period)
        out[..., 1, :], out[..., 2, :] = c1, s1
        for k in range(2, order + 1):
            ck, sk = out[..., 2 * k - 3, :], out[..., 2 * k - 2, :]
            out[..., 2 * k - 1, :] = ck * c1 - sk * s1
            out[..., 2 * k, :] = sk * c1 + ck * s1
    return out


def harmonic_design(t_years: np.ndarray, order: int, period: float = 1.0) -> np.ndarray:
    """Design matrix ``[..., 2*order+1]``: ``1, cos(2πk t/period), sin(2πk t/period)``."""
    order = _check_order(order)
    if period <= 0:
        raise DataError(f"harmonic period must be positive, got {period}")
    t = np.asarray(t_years, dtype=np.float64)
    rows = _harmonic_rows(t.reshape(1, -1), order, float(period))[0]
    return np.ascontiguousarray(rows.T).reshape(*t.shape, 2 * order + 1)


def harmonic_feature_names(bands: Sequence[str], order: int) -> list[str]:
    """Column names matching :func:`harmonic_coefficients`, e.g. ``B4_c, B4_cos1, B4_sin1``."""
    order = _check_order(order)
    terms = ["c"] + [f"{f}{k}" for k in range(1, order + 1) for f in ("cos", "sin")]
    return [f"{b}_{term}" for b in bands for term in terms]


def _cholesky_solve_inplace(
    gram: np.ndarray, rhs: np.ndarray, tol: float = _PIVOT_TOL
) -> np.ndarray:
    """Solve SPD systems in batch-last layout: ``gram [p, p, B]``, ``rhs [p, R, B]``.

    ``rhs`` is overwritten by the solution and ``gram`` by its factor (lower triangle ``L``,
    diagonal ``1 / L_jj``). Returns ``ok [B]`` (False: pivot below ``tol`` times its
    diagonal, i.e. numerically rank-deficient). Vectorised over the batch; the Python loops
    run only over the small matrix dimension ``p``. Every step writes into an existing array
    (no batch-sized temporaries): this solve costs more than all passes over the values.
    """
    p, _, batch = gram.shape
    ok = np.ones(batch, dtype=bool)
    tmp = np.empty(batch)
    limit = np.empty(batch)
    above = np.empty(batch, dtype=bool)
    for j in range(p):
        row = gram[j]
        pivot = row[j]
        np.multiply(pivot, tol, out=limit)  # from the diagonal before elimination
        for k in range(j):
            pivot -= np.multiply(row[k], row[k], out=tmp)
        ok &= np.greater(pivot, limit, out=above)
        np.sqrt(np.maximum(pivot, 1e-300, out=pivot), out=pivot)
        np.divide(1.0, pivot, out=pivot)  # the diagonal keeps 1 / L_jj
        for i in range(j + 1, p):
            acc = gram[i, j]
            for k in range(j):
                acc -= np.multiply(gram[i, k], row[k], out=tmp)
            acc *= pivot
    tmp_r = np.empty(rhs.shape[1:])
    for i in range(p):  # forward: L z = b
        for k in range(i):
            rhs[i] -= np.multiply(gram[i, k], rhs[k], out=tmp_r)
        rhs[i] *= gram[i, i]
    for i in range(p - 1, -1, -1):  # backward: L^T x = z
        for k in range(i + 1, p):
            rhs[i] -= np.multiply(gram[k, i], rhs[k], out=tmp_r)
        rhs[i] *= gram[i, i]
    return ok


@functools.lru_cache(maxsize=16)
def _gram_map(order: int) -> np.ndarray:
    """Matrix ``[p*p, 4*order+1]`` mapping weighted sums of the harmonics up to ``2*order``
    (columns of ``harmonic_design(t, 2*order)``) to the entries of ``X^T W X``.

    Uses cos a cos b = (cos(a-b) + cos(a+b))/2, sin a sin b = (cos(a-b) - cos(a+b))/2 and
    sin a cos b = (sin(a+b) + sin(a-b))/2.
    """
    p = 2 * order + 1
    terms = [("c", 0)] + [(f, k) for k in range(1, order + 1) for f in ("c", "s")]

    def col(kind: str, k: int) -> tuple[int, float]:
        if k == 0:
            return 0, 1.0 if kind == "c" else 0.0
        sign = -1.0 if (kind == "s" and k < 0) else 1.0
        k = abs(k)
        return (2 * k - 1 if kind == "c" else 2 * k), sign

    out = np.zeros((p * p, 4 * order + 1))
    for i, (fi, a) in enumerate(terms):
        for j, (fj, b) in enumerate(terms):
            if fi == "c" and fj == "c":
                parts = [("c", a - b, 0.5), ("c", a + b, 0.5)]
            elif fi == "s" and fj == "s":
                parts = [("c", a - b, 0.5), ("c", a + b, -0.5)]
            elif fi == "s":
                parts = [("s", a + b, 0.5), ("s", a - b, 0.5)]
            else:
                parts = [("s", a + b, 0.5), ("s", b - a, 0.5)]
            for kind, k, weight in parts:
                idx, sign = col(kind, k)
                out[i * p + j, idx] += weight * sign
    return out


def _all_any_bands(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``valid.all(-1), valid.any(-1)`` for a C-contiguous bool ``[n, T, C]``, fast.

    numpy reductions over a short last axis are slow; for C in 1, 2, 4, 8 the C bools of one
    step are read as one unsigned integer instead.
    """
    nc = valid.shape[-1]
    word = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}.get(nc)
    if word is not None and valid.flags.c_contiguous:
        packed = valid.view(word)[..., 0]
        return packed == word(int.from_bytes(b"\x01" * nc, "little")), packed != 0
    all_, any_ = valid[..., 0].copy(), valid[..., 0].copy()
    for c in range(1, nc):
        all_ &= valid[..., c]
        any_ |= valid[..., c]
    return all_, any_


def _zeroed(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``np.where(valid, values, 0)`` for float32, via a bit mask (about 2x faster)."""
    bits = valid.astype(np.uint32)
    np.negative(bits, out=bits)  # 1 -> 0xFFFFFFFF, 0 -> 0
    np.bitwise_and(values.view(np.uint32), bits, out=bits)
    return bits.view(np.float32)


def _fit_chunk(
    v: np.ndarray,
    t: np.ndarray,
    m: np.ndarray | None,
    order: int,
    period_days: float,
    ridge: float,
    inner: int = _INNER_CHUNK,
) -> np.ndarray:
    """Coefficients ``[n, C*p]`` of one chunk of samples.

    The passes over the values run on sub-chunks of ``inner`` samples (kept in cache); the
    batched solve runs on the whole chunk (fewer, longer numpy calls). With shared times,
    ``X^T W y`` is one matrix product per band and sub-chunk (``[inner, T] @ [T, p]``, the
    band copied to a contiguous float64 buffer) rather than one tiny product per sample.
    """
    n, nt, nc = v.shape
    p = 2 * order + 1
    # harmonics up to 2*order: the first p rows are the design, all rows give X^T W X below
    basis = _harmonic_rows(t, 2 * order, period_days)  # [q, T] or [n, q, T]
    # X^T W y in float64: the normal equations square the condition number
    shared_t = basis.ndim == 2
    if shared_t:
        design = np.ascontiguousarray(basis[:p].T)  # [T, p]
        rhs = np.empty((nc, n, p))  # per band
        band = np.empty((min(inner, n), nt))
    else:
        design_t = basis[:, :p, :]  # [n, p, T]
        rhs = np.empty((n, p, nc))
    step_all = np.empty((n, nt), dtype=bool)
    shared_w = True  # same valid steps in every band
    for lo in range(0, n, inner):
        sl = slice(lo, lo + inner)
        valid = np.isfinite(v[sl])
        if m is not None:
            valid &= m[sl, :, None]
        step_all[sl], step_any = _all_any_bands(valid)
        shared_w = shared_w and np.array_equal(step_all[sl], step_any)
        y = _zeroed(np.ascontiguousarray(v[sl]), valid)
        if shared_t:  # per band: a contiguous float64 copy, then one product
            rows = band[: len(y)]
            for c in range(nc):
                np.copyto(rows, y[:, :, c])
                np.matmul(rows, design, out=rhs[c, sl])
        else:
            np.matmul(design_t[sl], y, out=rhs[sl])
    if shared_w:
        weights = step_all.astype(np.float64)  # [n, T]
        order_rhs = (2, 0, 1) if shared_t else (1, 2, 0)
        rhs = np.ascontiguousarray(rhs.transpose(order_rhs))  # [p, C, n]
    else:
        valid = np.isfinite(v) if m is None else np.isfinite(v) & m[:, :, None]
        weights = valid.transpose(0, 2, 1).reshape(n * nc, nt).astype(np.float64)  # [n*C, T]
        order_rhs = (2, 1, 0) if shared_t else (1, 0, 2)
        rhs = np.ascontiguousarray(rhs.transpose(order_rhs)).reshape(p, 1, n * nc)
    # X^T W X from the 4*order+1 weighted sums of harmonics up to 2*order (product formulas)
    if shared_t:
        sums = basis @ weights.T  # [q, batch]
    else:
        per_sample = weights.reshape(n, -1, nt).transpose(0, 2, 1)  # [n, T, 1 or C]
        sums = np.matmul(basis, per_sample).transpose(1, 0, 2).reshape(basis.shape[1], -1)
    n_valid = sums[0].copy()  # the constant harmonic: number of valid steps (exact)
    gram = _gram_map(order) @ sums  # [p*p, batch]
    gram = np.ascontiguousarray(gram).reshape(p, p, -1)
    diag = np.arange(p)
    gram[diag, diag] += ridge * np.maximum(n_valid, 1.0)
    ok = _cholesky_solve_inplace(gram, rhs)
    ok &= n_valid >= p
    rhs[:, :, ~ok] = np.nan
    coef = rhs.transpose(2, 1, 0) if shared_w else rhs[:, 0].T.reshape(n, nc, p)
    return coef.reshape(n, nc * p).astype(np.float32)


def fit_harmonics_array(
    values: np.ndarray,
    t: np.ndarray,
    mask: np.ndarray | None = None,
    order: int = 3,
    period_days: float = 365.25,
    ridge: float = 1e-12,
    chunk: int | None = None,
    n_jobs: int | None = None,
) -> np.ndarray:
    """Harmonic coefficients of plain arrays: ``values [N, T, C]`` → ``[N, C*(2*order+1)]``.

    ``t`` is the time of each step in days (``[T]`` shared or ``[N, T]``); the design uses
    ``t / period_days``, so pass days since 1 January of the season's year for
    day-of-year phases. Observations that are NaN (per band) or where ``mask [N, T]`` is
    False are ignored. Rank-deficient fits are NaN. Returns float32.

    Samples are processed in chunks (``chunk`` samples; default: about 4 MiB of values) with
    BLAS limited to one thread: the products are small, and threaded BLAS only adds
    synchronisation cost there. Chunks run in ``n_jobs`` threads (default: cropscope's thread count,
    :func:`cropscope.threads.current_threads`).
    """
    order = _check_order(order)
    if period_days <= 0:
        raise DataError(f"period_days must be positive, got {period_days}")
    arr, tt, mask = check_series_arrays(values, t, mask, "t", np.float64)
    n, nt, nc = arr.shape
    size = chunk or max(1, _CHUNK_ELEMENTS // max(1, nt * nc))
    out = np.empty((n, nc * (2 * order + 1)), dtype=np.float32)

    def work(lo: int) -> None:
        sl = slice(lo, lo + size)
        out[sl] = _fit_chunk(
            arr[sl],
            tt if tt.ndim == 1 else tt[sl],
            None if mask is None else mask[sl],
            order,
            float(period_days),
            ridge,
        )

    starts = range(0, n, size)
    workers = min(_n_workers(n_jobs), len(starts))
    with _single_threaded_blas():
        if workers <= 1:
            for lo in starts:
                work(lo)
        else:  # numpy releases the GIL in these kernels: chunks run on all cores
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(work, starts))
    return out


def _n_workers(n_jobs: int | None) -> int:
    """Threads to use: ``n_jobs`` (``None``: cropscope's thread count; -1: every core)."""
    if n_jobs is None:
        return current_threads()
    if n_jobs < 0:
        return available_cpus()
    return max(1, n_jobs)


def harmonic_time(ts: TimeSeriesSet, period_days: float = 365.25) -> tuple[np.ndarray, float]:
    """Fit times ``t`` (days, ``[T]`` or ``[N, T]``) and period used for a set.

    With dates, ``t`` is days since 1 January of the year of each sample's first date, so
    phases follow day of year and a season crossing New Year stays continuous. Without dates,
    ``t`` is the step index and one period spans the whole series (``T`` steps).
    """
    if ts.dates is None:
        return np.arange(ts.n_times, dtype=np.float64), float(ts.n_times)
    dates = ts.dates
    first = np.nanmin(dates, axis=-1, keepdims=True)
    if np.isnat(first).any():
        raise DataError("harmonic fitting needs dates; some samples have only NaT dates")
    jan1 = first.astype("datetime64[Y]").astype("datetime64[D]")
    return (dates - jan1).astype(np.int64).astype(np.float64), float(period_days)


def harmonic_coefficients(
    ts: TimeSeriesSet, order: int = 3, period_days: float = 365.25
) -> np.ndarray:
    """Harmonic coefficients ``[N, C*(2*order+1)]`` float32 of a set (valid steps only).

    Time is day-of-year based (see :func:`harmonic_time`); names from
    :func:`harmonic_feature_names`. Rank-deficient fits (e.g. too few valid observations)
    give NaN coefficients.
    """
    t, period = harmonic_time(ts, period_days)
    mask = ts.mask
    if ts.dates is not None and np.isnat(ts.dates).any():  # undated steps do not count
        mask = mask & ~np.isnat(ts.dates)
        t = np.where(np.isnat(ts.dates), 0.0, t)
    return fit_harmonics_array(ts.values, t, mask=mask, order=order, period_days=period)


def reconstruct_harmonics(
    coefficients: np.ndarray, t: np.ndarray, order: int, period_days: float = 365.25
) -> np.ndarray:
    """Evaluate fitted harmonics at times ``t`` (days, ``[T]`` or ``[N, T]``) → ``[N, T, C]``."""
    order = _check_order(order)
    p = 2 * order + 1
    coef = np.asarray(coefficients, dtype=np.float64)
    if coef.ndim != 2 or coef.shape[1] % p:
        raise DataError(f"coefficients must be [N, C*{p}], got shape {coef.shape}")
    n = coef.shape[0]
    design = harmonic_design(np.asarray(t, dtype=np.float64) / period_days, order)
    coef = coef.reshape(n, -1, p)  # [N, C, p]
    if design.ndim == 2:
        return np.einsum("tp,ncp->ntc", design, coef).astype(np.float32)
    return np.einsum("ntp,ncp->ntc", design, coef).astype(np.float32)
