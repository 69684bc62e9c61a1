"""Shared by the training-step benchmarks: each configuration runs in a child process (so
its peak memory is its own) and reports one JSON line; memory helpers for CPU runs."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from typing import Any


def rss_mib() -> float:
    """Resident memory of this process now (MiB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_in_child(script: str, cfg: dict[str, Any], timeout: float | None
                 ) -> tuple[dict[str, Any] | None, str]:
    """Run ``script --one JSON`` and parse its last stdout line; ``(None, why)`` when it
    fails or runs past ``timeout`` seconds."""
    try:
        proc = subprocess.run([sys.executable, script, "--one", json.dumps(cfg)],
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"over the {timeout:.0f} s budget"
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        return None, tail[0]
    return json.loads(proc.stdout.strip().splitlines()[-1]), ""


def collect_row(script: str, cfg: dict[str, Any], timeout: float | None, label: str,
                rows: list[dict[str, Any]], skipped: list[str]) -> None:
    """Run one configuration in a child; append its row, or ``label: why`` to ``skipped``."""
    row, why = run_in_child(script, cfg, timeout)
    if row is None:
        skipped.append(f"{label}: {why}")
        print(f"skipped {skipped[-1]}", file=sys.stderr)
        return
    rows.append(row)
    print(f"done {label}", file=sys.stderr)


def time_steps(step: Callable[[], None], steps: int, cuda: bool) -> float:
    """Seconds per call of ``step`` over ``steps`` calls after one warm-up call (CUDA peak
    memory statistics are reset after the warm-up)."""
    import time

    import torch

    step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps
