"""Throughput of the feature kernels against straightforward baselines and the memory limit.

Run: ``.venv/bin/python benchmarks/bench_features.py [--n 1000000] [--threads 1]``

Generates ``n`` synthetic pixel series (shared irregular ~5-day dates over one year, ~70
observations, 4 bands, ~20 % cloudy steps as NaN; float32 ``[n, 70, 4]``, 1.04 GiB at
1 M series) and measures in one process:

- ``composite_median_array`` (10-day medians) on all series vs xarray
  ``DataArray.resample(time="10D").median()`` on a subsample;
- ``fit_harmonics_array`` (order 3) on all series vs a per-series ``numpy.linalg.lstsq``
  loop on a subsample;
- the **single-pass limit**: ``np.isfinite`` over the whole input, i.e. reading it once
  (and writing a quarter of its bytes). No kernel that reads the input can be much faster,
  so ``kernel / single pass`` says how far a kernel is from the memory limit.
- the **products alone**: the float64 matrix products every exact harmonic fit needs
  (``X^T W y`` of each band, and the weighted harmonic sums that give ``X^T W X``), with the
  chunk sizes of ``fit_harmonics_array`` on float64 buffers already filled: no conversion,
  no masking, no solve. It is a compute bound for the fit as numpy and BLAS can do it, as
  the single pass is a memory bound.

The single pass and the two fast kernels run interleaved (single, composite, harmonics,
repeated ``--repeat`` times) so that load from other processes hits them alike; the tables
use the median of the repeats (wall clock, and process CPU time as a check on a shared
machine). Throughput against the baselines is compared per series (series/s). Peak memory
is the tracemalloc peak of one call (numpy registers its buffers with tracemalloc), measured
in separate untimed runs so that tracing does not affect the timings; it excludes the input.
Correctness: the fast results must equal the baselines on the subsample (max abs difference
printed). Threads: ``--threads`` (default 1) is applied with
:func:`cropscope.threads.set_threads` (BLAS pools, and the chunk threads of
``fit_harmonics_array``); compositing and the single pass run on one thread.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import tracemalloc
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from cropscope.features.compositing import composite_median_array
from cropscope.features.harmonics import (
    _CHUNK_ELEMENTS,
    _INNER_CHUNK,
    fit_harmonics_array,
    harmonic_design,
)

ORDER = 3
WINDOW_DAYS = 10
PERIOD_DAYS = 365.25


def make_series(
    n: int, n_times: int, n_bands: int, cloud: float, seed: int, chunk: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic seasonal reflectance ``float32 [n, T, C]`` (NaN = cloud) and day numbers."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(3, 8, size=n_times - 1)  # 3..7 days, mean 5
    days = np.concatenate([[3], 3 + np.cumsum(steps)]).astype(np.int64)  # days since Jan 1
    t = days / PERIOD_DAYS
    values = np.empty((n, n_times, n_bands), dtype=np.float32)
    band_scale = np.linspace(0.6, 1.4, n_bands, dtype=np.float32)
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        base = rng.uniform(0.05, 0.2, (m, 1)).astype(np.float32)
        amp = rng.uniform(0.1, 0.5, (m, 1)).astype(np.float32)
        peak = rng.uniform(0.3, 0.7, (m, 1)).astype(np.float32)
        width = rng.uniform(0.05, 0.15, (m, 1)).astype(np.float32)
        curve = base + amp * np.exp(-0.5 * ((t[None].astype(np.float32) - peak) / width) ** 2)
        block = curve[:, :, None] * band_scale
        block += rng.normal(0.0, 0.01, block.shape).astype(np.float32)
        block[rng.random((m, n_times)) < cloud] = np.nan
        values[lo : lo + m] = block
    return values, days


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float]:
    """Result and best wall time of ``repeat`` calls."""
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def interleaved(
    fns: dict[str, Callable[[], Any]], repeat: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU seconds of each function, called in turn ``repeat`` times."""
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            result = fn()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
            del result
    return wall, cpu


def peak_mb(fn: Callable[[], Any]) -> float:
    """tracemalloc peak (MiB) of one call, above what was allocated before it."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result = fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    del result
    return peak / 2**20


def xarray_composite(values: np.ndarray, days: np.ndarray) -> np.ndarray:
    import xarray as xr

    time_coord = np.datetime64("2021-01-01") + days.astype("timedelta64[D]")
    da = xr.DataArray(values, dims=("sample", "time", "band"), coords={"time": time_coord})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows
        out = da.resample(time=f"{WINDOW_DAYS}D").median()
    return out.transpose("sample", "time", "band").to_numpy()


def lstsq_loop(values: np.ndarray, days: np.ndarray) -> np.ndarray:
    design = harmonic_design(days / PERIOD_DAYS, ORDER)
    valid = np.isfinite(values).all(axis=2)
    out = np.empty((values.shape[0], values.shape[2] * design.shape[1]), dtype=np.float32)
    for i in range(values.shape[0]):
        coef = np.linalg.lstsq(design[valid[i]], values[i, valid[i]], rcond=None)[0]
        out[i] = coef.T.ravel()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="series for the fast kernels")
    parser.add_argument("--times", type=int, default=70, help="observations per series")
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--cloud", type=float, default=0.2, help="fraction of NaN steps")
    parser.add_argument("--n-xarray", type=int, default=50_000, help="xarray subsample")
    parser.add_argument("--n-lstsq", type=int, default=5_000, help="lstsq-loop subsample")
    parser.add_argument(
        "--repeat", type=int, default=3, help="interleaved timing repeats (median kept)"
    )
    parser.add_argument("--threads", type=int, default=1, help="BLAS / harmonics threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from cropscope.threads import set_threads

    threads = set_threads(args.threads)
    t0 = time.perf_counter()
    values, days = make_series(args.n, args.times, args.bands, args.cloud, args.seed)
    n_windows = int((days[-1] - days[0]) // WINDOW_DAYS) + 1
    print(
        f"data: {args.n:,} series x {args.times} dates x {args.bands} bands "
        f"({values.nbytes / 2**30:.2f} GiB float32), {np.isnan(values[:, :, 0]).mean():.0%} "
        f"cloudy steps, days {days[0]}..{days[-1]}; generated in {time.perf_counter() - t0:.1f} s"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
        f"Python {platform.python_version()}, numpy {np.__version__}; threads: {threads} "
        "(BLAS and fit_harmonics_array chunks); compositing and the single pass: 1"
    )
    sub_x = values[: args.n_xarray]
    sub_l = values[: args.n_lstsq]

    def single_pass() -> np.ndarray:
        return np.isfinite(values)

    def fast_comp() -> np.ndarray:
        return composite_median_array(values, days, WINDOW_DAYS, n_windows, start_day=days[0])

    def fast_harm() -> np.ndarray:
        return fit_harmonics_array(values, days, order=ORDER, period_days=PERIOD_DAYS)

    n_series, n_times, n_bands = values.shape
    design = harmonic_design(days / PERIOD_DAYS, ORDER)  # [T, p]
    sums_basis = np.ascontiguousarray(harmonic_design(days / PERIOD_DAYS, 2 * ORDER).T)
    chunk = max(1, _CHUNK_ELEMENTS // (n_times * n_bands))
    rows = np.ones((min(_INNER_CHUNK, n_series), n_times))  # one band of a sub-chunk
    weights = np.ones((min(chunk, n_series), n_times))  # validity weights of a chunk
    rhs = np.empty((len(rows), design.shape[1]))

    def products() -> None:
        for lo in range(0, n_series, chunk):
            m = min(chunk, n_series - lo)
            for sub in range(0, m, _INNER_CHUNK):
                k = min(_INNER_CHUNK, m - sub)
                for _ in range(n_bands):  # X^T W y, one band
                    np.matmul(rows[:k], design, out=rhs[:k])
            sums_basis @ weights[:m].T  # the weighted sums of X^T W X

    def base_comp() -> np.ndarray:
        return xarray_composite(sub_x, days)

    def base_harm() -> np.ndarray:
        return lstsq_loop(sub_l, days)

    # ---- correctness (first, untimed calls also warm up the code paths)
    comp = fast_comp()
    ref_x, t_x = timed(base_comp)
    fast_sub = comp[: args.n_xarray]
    same_nan = bool(np.array_equal(np.isnan(fast_sub), np.isnan(ref_x)))
    diff_comp = float(np.nanmax(np.abs(fast_sub.astype(np.float64) - ref_x)))
    del comp, fast_sub, ref_x
    harm = fast_harm()
    ref_l, t_l = timed(base_harm)
    diff_harm = float(np.nanmax(np.abs(harm[: args.n_lstsq].astype(np.float64) - ref_l)))
    n_nan = int(np.isnan(harm).any(axis=1).sum())
    del harm, ref_l

    # ---- timings: single pass and fast kernels interleaved, median of the repeats
    wall, cpu = interleaved(
        {"single": single_pass, "comp": fast_comp, "harm": fast_harm, "products": products},
        args.repeat,
    )
    med = {name: float(np.median(ts)) for name, ts in wall.items()}
    med_cpu = {name: float(np.median(ts)) for name, ts in cpu.items()}
    t_single, t_comp, t_harm = med["single"], med["comp"], med["harm"]
    ratio_comp = (args.n / t_comp) / (len(sub_x) / t_x)
    ratio_harm = (args.n / t_harm) / (len(sub_l) / t_l)
    per_comp, per_harm = t_comp / t_single, t_harm / t_single
    rows = [
        ("single pass (np.isfinite)", args.n, t_single, peak_mb(single_pass), None, 1.0),
        ("composite_median_array", args.n, t_comp, peak_mb(fast_comp), ratio_comp, per_comp),
        ("xarray resample('10D').median", len(sub_x), t_x, peak_mb(base_comp), None, None),
        ("fit_harmonics_array", args.n, t_harm, peak_mb(fast_harm), ratio_harm, per_harm),
        ("lstsq loop (per series)", len(sub_l), t_l, peak_mb(base_harm), None, None),
    ]

    # ---- table
    head = f"{'method':32s} {'n series':>10s} {'seconds':>8s} {'series/s':>12s} "
    head += f"{'peak MB':>8s} {'vs base':>8s} {'/ single':>8s}"
    print()
    print(head)
    print("-" * len(head))
    for name, n, sec, mb, ratio, per_single in rows:
        base = per_single is None  # the xarray / lstsq rows are the baselines
        rtxt = f"{ratio:7.1f}x" if ratio is not None else ("base" if base else "")
        stxt = f"{per_single:7.1f}x" if per_single is not None else ""
        print(f"{name:32s} {n:>10,d} {sec:8.2f} {n / sec:12,.0f} {mb:8.0f} {rtxt:>8s} {stxt:>8s}")
    print()
    print(
        f"single-pass limit: {t_single:.3f} s to read the input once; composite / single pass "
        f"= {per_comp:.1f}x, harmonics / single pass = {per_harm:.1f}x "
        f"(wall, median of {args.repeat} interleaved repeats; process CPU time: "
        f"{med_cpu['comp'] / med_cpu['single']:.1f}x and "
        f"{med_cpu['harm'] / med_cpu['single']:.1f}x)"
    )
    best = {name: min(ts) for name, ts in wall.items()}
    print(
        f"best of the repeats (page faults of fresh output arrays vary run to run on some "
        f"machines): composite / single pass = {best['comp'] / best['single']:.1f}x, "
        f"harmonics / single pass = {best['harm'] / best['single']:.1f}x"
    )
    print(
        f"compute bound (best of the repeats): the float64 products alone = "
        f"{best['products'] / best['single']:.1f}x the single pass; harmonics / products "
        f"alone = {best['harm'] / best['products']:.1f}x "
        f"(median {med['harm'] / med['products']:.1f}x)"
    )
    for name in wall:
        print(f"  {name:8s} wall s: {' '.join(f'{x:.3f}' for x in wall[name])}")
    print(
        f"compositing: {n_windows} windows of {WINDOW_DAYS} days; baseline run on the first "
        f"{len(sub_x):,} series, throughput compared per series. "
        f"max |fast - xarray| = {diff_comp:.2e}, same empty windows: {same_nan}"
    )
    print(
        f"harmonics: order {ORDER} ({2 * ORDER + 1} coefficients x {args.bands} bands); "
        f"baseline on the first {len(sub_l):,} series. "
        f"max |fast - lstsq| = {diff_harm:.2e}; rank-deficient fits (NaN): {n_nan}"
    )
    print(
        "peak MB: tracemalloc peak of one call (separate untimed run), excluding the input "
        f"array; total runtime {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
