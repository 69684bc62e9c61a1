"""Speed of the gap-aware smoothers against what a user would write otherwise.

Run: ``.venv/bin/python benchmarks/bench_smoothing.py [--n 20000] [--t 36] [--threads 1]``

``n`` synthetic NDVI-like series of ``t`` steps with 30 % gaps (NaN), irregular per-series
times, and in one process, interleaved and repeated (``--repeat``, median reported):

- ``whittaker_array`` (λ = 10, order 2, uneven times) on all series against a loop of
  ``scipy.sparse.linalg.spsolve`` per series (the formula (W + λDᵀD) z = W y with divided
  differences) on a subsample;
- ``savitzky_golay_array`` (window 7, degree 2, with gaps) on all series against a
  per-series, per-window ``numpy.polyfit`` loop on a subsample (same result), and against
  linear gap filling followed by ``scipy.signal.savgol_filter`` (what one usually does:
  faster, but a different result at the gaps, printed as the max difference).

Throughput is compared per series. Peak memory: the tracemalloc peak of one call on all
series (untimed run), without the input. Threads: ``--threads`` (default 1) through
:func:`cropscope.threads.set_threads`; the kernels themselves run on one thread.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.signal import savgol_filter
from scipy.sparse.linalg import spsolve

from cropscope.features.gapfill import interpolate_gaps_array
from cropscope.features.smoothing import savitzky_golay_array, whittaker_array

LAMBDA, ORDER, WINDOW, POLY = 10.0, 2, 7, 2


def make(n: int, t: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.uniform(0.6, 1.4, (n, t)), axis=1)
    y = 0.2 + 0.6 * np.exp(-0.5 * ((x - t / 2) / (t / 6)) ** 2) + rng.normal(0, 0.05, (n, t))
    y[rng.random((n, t)) < 0.3] = np.nan
    return y.astype(np.float32), x


def whittaker_loop(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = np.empty(y.shape)
    t = y.shape[1]
    for i in range(len(y)):
        d = sp.eye(t, format="csr")
        for k in range(1, ORDER + 1):
            rows = t - k
            delta = sp.diags([-np.ones(rows), np.ones(rows)], [0, 1], shape=(rows, rows + 1))
            d = sp.diags(k / (x[i, k:] - x[i, :rows])) @ delta @ d
        w = np.isfinite(y[i]).astype(float)
        out[i] = spsolve((sp.diags(w) + LAMBDA * (d.T @ d)).tocsc(), w * np.nan_to_num(y[i]))
    return out


def polyfit_loop(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    n, t = y.shape
    out = np.full(y.shape, np.nan)
    half = WINDOW // 2
    for i in range(n):
        for j in range(t):
            s = min(max(j - half, 0), t - WINDOW)
            sl = slice(s, s + WINDOW)
            ok = np.isfinite(y[i, sl])
            if ok.any():
                deg = min(POLY, int(ok.sum()) - 1)
                out[i, j] = np.polyfit(x[i, sl][ok] - x[i, j], y[i, sl][ok], deg)[-1]
    return out


def fill_then_savgol(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    filled = interpolate_gaps_array(y, x)
    return savgol_filter(filled, WINDOW, POLY, axis=1, mode="interp")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def peak_mb(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--t", type=int, default=36)
    ap.add_argument("--sub", type=int, default=300, help="series for the loop baselines")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from cropscope.threads import set_threads

    set_threads(args.threads)
    y, x = make(args.n, args.t)
    ys, xs = y[: args.sub], x[: args.sub]
    runs: dict[str, list[float]] = {}
    results: dict[str, Any] = {}
    cases: dict[str, tuple[Callable[[], Any], int]] = {
        "whittaker_array": (lambda: whittaker_array(y, LAMBDA, ORDER, x=x), args.n),
        "spsolve loop": (lambda: whittaker_loop(ys, xs), args.sub),
        "savitzky_golay_array": (lambda: savitzky_golay_array(y, WINDOW, POLY, x=x), args.n),
        "polyfit loop": (lambda: polyfit_loop(ys, xs), args.sub),
        "fill + savgol_filter": (lambda: fill_then_savgol(y, x), args.n),
    }
    for _ in range(args.repeat):  # interleaved
        for name, (fn, _n) in cases.items():
            seconds, out = timed(fn)
            runs.setdefault(name, []).append(seconds)
            results[name] = out
    print(f"{args.n} series x {args.t} steps, 30 % gaps, uneven times; threads {args.threads}; "
          f"median of {args.repeat} interleaved runs")
    print("| method | n series | s | series/s | peak MB | vs baseline |")
    print("|---|---|---|---|---|---|")
    rate = {name: n / float(np.median(runs[name])) for name, (_, n) in cases.items()}
    base = {"whittaker_array": "spsolve loop", "savitzky_golay_array": "polyfit loop",
            "fill + savgol_filter": "polyfit loop"}
    for name, (fn, n) in cases.items():
        mb = peak_mb(fn) if n == args.n else float("nan")
        ratio = f"{rate[name] / rate[base[name]]:.1f}x" if name in base else "base"
        print(f"| {name} | {n:,} | {np.median(runs[name]):.2f} | {rate[name]:,.0f} | "
              f"{mb:.0f} | {ratio} |")
    dw = np.abs(results["whittaker_array"][: args.sub] - results["spsolve loop"]).max()
    ds = np.nanmax(np.abs(results["savitzky_golay_array"][: args.sub] - results["polyfit loop"]))
    df = np.nanmax(np.abs(results["fill + savgol_filter"][: args.sub] - results["polyfit loop"]))
    print(f"max |difference| to the loop: whittaker {dw:.1e}, savitzky-golay {ds:.1e}; "
          f"fill + savgol_filter differs from the gap-aware fit by up to {df:.2f}")


if __name__ == "__main__":
    main()
