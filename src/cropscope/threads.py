"""How many CPU threads cropscope uses, decided and applied in one place.

``resolve_threads(n)`` decides: an explicit ``n`` (``--threads N``), else
``$CROPSCOPE_THREADS``, else a default that does not collapse on a shared machine:
``$OMP_NUM_THREADS`` when the user set it, otherwise the usable cores (CPU affinity and
cgroup quota) minus the cores other processes keep busy right now (a 0.1 s sample of
``/proc/stat``; at least one).

``set_threads(n)`` applies a count to every pool cropscope drives: torch (intra-op, and
inter-op while torch still allows it), the OpenMP and BLAS pools already loaded
(threadpoolctl), and, through the environment, the libraries loaded later and child
processes (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
``GDAL_NUM_THREADS``, ``LOKY_MAX_CPU_COUNT`` for joblib). LightGBM ignores
``OMP_NUM_THREADS``, and scikit-learn's ``n_jobs`` is per estimator, so the models ask
:func:`current_threads` and pass the count explicitly.

Why the default matters: libgomp (the OpenMP runtime of torch, LightGBM and
scikit-learn) spins on a core while it waits for work. With another CPU-bound process on
the machine, a team of as many threads as cores spends its time spinning against that
process and waiting at barriers for a descheduled thread: TempCNN trained 8-10x and LightGBM
4-7x slower at two threads than at one on a loaded 2-core machine. cropscope therefore sets
``OMP_WAIT_POLICY=PASSIVE`` when it is imported (before those libraries load; a value the
user set wins), and its default count leaves the busy cores to their owners.

The import is light: torch and threadpoolctl are only touched when already imported (or
when a count is applied).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable

from cropscope.errors import SettingsError

__all__ = [
    "THREADS_ENV",
    "available_cpus",
    "current_threads",
    "ensure_threads",
    "map_chunks",
    "resolve_threads",
    "set_threads",
]

#: environment variable with the thread count (a positive integer, or ``auto``)
THREADS_ENV = "CROPSCOPE_THREADS"

#: variables that carry the count to libraries loaded later and to child processes
_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "GDAL_NUM_THREADS",
    "LOKY_MAX_CPU_COUNT",
)

# OpenMP threads sleep instead of spinning while they wait (read by libgomp, LLVM and
# Intel OpenMP when they load; cropscope is imported before them in the CLI)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: the user's OMP_NUM_THREADS as it was before cropscope wrote its own
_USER_OMP = os.environ.get("OMP_NUM_THREADS")

_current: int | None = None
_torch_applied: int | None = None


def _positive_int(value: object, what: str) -> int:
    """``value`` as a positive int, or a :class:`SettingsError` naming ``what``."""
    if isinstance(value, bool):
        raise SettingsError(f"{what} must be a positive integer, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            raise SettingsError(f"{what} must be a positive integer, got {value!r}") from None
    elif isinstance(value, int):
        number = value
    else:
        raise SettingsError(f"{what} must be a positive integer, got {value!r}")
    if number < 1:
        raise SettingsError(f"{what} must be a positive integer (1 or more), got {number}")
    return number


def available_cpus() -> int:
    """Cores this process may use: the CPU affinity set, capped by a cgroup CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max" and float(period) > 0:
            cpus = min(cpus, max(1, math.ceil(float(quota) / float(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def _cpu_ticks() -> dict[int, tuple[int, int]]:
    """``{cpu: (busy, total)}`` jiffies of every CPU line in ``/proc/stat``."""
    out: dict[int, tuple[int, int]] = {}
    with open("/proc/stat") as fh:
        for line in fh:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *fields = line.split()
            values = [int(v) for v in fields[:8]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
            out[int(name[3:])] = (sum(values) - idle, sum(values))
    return out


def _busy_cpus(sample_s: float = 0.1) -> float:
    """Cores of our affinity set kept busy by other processes, sampled over ``sample_s``."""
    try:
        mine = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        mine = set()
    try:
        before, own0, t0 = _cpu_ticks(), time.process_time(), time.perf_counter()
        time.sleep(sample_s)
        after, own1, t1 = _cpu_ticks(), time.process_time(), time.perf_counter()
    except (OSError, ValueError, IndexError):
        try:
            return max(0.0, os.getloadavg()[0])
        except (AttributeError, OSError):
            return 0.0
    busy = total = 0
    for cpu, (b1, n1) in after.items():
        if mine and cpu not in mine:
            continue
        b0, n0 = before.get(cpu, (b1, n1))
        busy, total = busy + b1 - b0, total + n1 - n0
    if total <= 0:
        return 0.0
    cpus = len(mine) if mine else len(after)
    ours = (own1 - own0) / max(t1 - t0, 1e-6)
    return max(0.0, busy / total * cpus - ours)


def default_threads() -> int:
    """The count used when neither ``--threads`` nor ``$CROPSCOPE_THREADS`` is given."""
    if _USER_OMP:
        first = _USER_OMP.split(",")[0].strip()
        if first.isdigit() and int(first) > 0:
            return int(first)
    cpus = available_cpus()
    if cpus == 1:
        return 1
    free = cpus - _busy_cpus()
    return max(1, min(cpus, int(free + 0.5)))


def resolve_threads(n: int | str | None = None) -> int:
    """The thread count to use: ``n``, else ``$CROPSCOPE_THREADS``, else the default.

    Zero, negative and non-integer values raise :class:`~cropscope.errors.SettingsError`.
    ``$CROPSCOPE_THREADS`` may be empty or ``auto`` (the default).
    """
    if n is not None:
        return _positive_int(n, "the thread count (--threads)")
    env = os.environ.get(THREADS_ENV, "").strip()
    if env and env.lower() != "auto":
        return _positive_int(env, f"${THREADS_ENV}")
    return default_threads()


def _apply_torch(n: int) -> None:
    global _torch_applied
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "set_num_threads"):
        return
    torch.set_num_threads(n)
    try:  # allowed once, before any inter-op work started
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass
    _torch_applied = n


def _apply_pools(n: int) -> None:
    """Limit the OpenMP/BLAS pools already loaded in this process."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a scikit-learn dependency
        return
    threadpool_limits(limits=n)


def set_threads(n: int | str | None = None) -> int:
    """Use ``resolve_threads(n)`` threads from now on in this process (and its children).

    Returns the count applied. Torch is capped when it is imported (now, or at the next
    :func:`ensure_threads`: every model calls it before it fits or predicts).
    """
    global _current
    count = resolve_threads(n)
    for var in _ENV_VARS:
        os.environ[var] = str(count)
    _current = count
    _apply_torch(count)
    _apply_pools(count)
    return count


def current_threads() -> int:
    """The count in force: the last :func:`set_threads`, else the resolved default (applied)."""
    if _current is None:
        return set_threads(None)
    return _current


def ensure_threads() -> int:
    """Apply the count to libraries imported since it was set (or set the default first).

    Cheap when nothing changed; models call it before they fit or predict.
    """
    if _current is None:
        return set_threads(None)
    torch = sys.modules.get("torch")
    if torch is not None and _torch_applied != _current:
        _apply_torch(_current)
        _apply_pools(_current)
    return _current


def map_chunks(fn: Callable[[int, int], None], n: int, size: int,
               n_jobs: int | None = None) -> None:
    """Call ``fn(lo, hi)`` for the consecutive chunks ``[lo, hi)`` of ``range(n)`` (``size``
    items each, the last one shorter) on up to ``n_jobs`` worker threads (default:
    :func:`current_threads`), one at a time in order when one thread is enough. For kernels
    that release the GIL (numpy) and write disjoint rows of one output: the result then does
    not depend on the thread count."""
    from concurrent.futures import ThreadPoolExecutor

    size = max(1, int(size))
    starts = list(range(0, n, size))
    workers = min(len(starts), current_threads() if n_jobs is None else max(1, int(n_jobs)))
    if workers <= 1:
        for lo in starts:
            fn(lo, min(n, lo + size))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda lo: fn(lo, min(n, lo + size)), starts))


def _reset_for_tests() -> None:
    """Forget the applied count (tests only)."""
    global _current, _torch_applied
    _current = None
    _torch_applied = None
