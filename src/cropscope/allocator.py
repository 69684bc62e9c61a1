"""How a cropscope process hands memory back to the system: keep it, for streaming jobs.

A map job allocates the same window-sized arrays (tens of MB) over and over. glibc's malloc
serves arrays over its mmap threshold (128 KiB, raised adaptively up to 32 MiB) with fresh
``mmap`` calls and returns them with ``munmap``, trims the top of its heaps, and gives
every thread its own arena. Each window's arrays then come back as fresh pages: a page
fault for every 4 KiB, and in a multi-threaded process a TLB shoot-down on every
``munmap``. On the 2-core VM these kernel costs are also erratic, as the hypervisor
reclaims pages the guest freed: a 2,000 x 2,000 px map job at 2 threads spent from 0.4 s
to 3.9 s in the kernel (user time 2.6 s throughout), 56,000 to 177,000 page faults a run.

:func:`keep_freed_memory` sets three glibc options (``mallopt``) so that freed memory is
kept and reused: one arena shared by all threads (``M_ARENA_MAX=1``), arrays below
128 MiB from the heap (``M_MMAP_THRESHOLD``), and no trimming below 1 GiB of free top
(``M_TRIM_THRESHOLD``). The same job then ran with 10-300 page faults and 0.2 s in the
kernel, run after run (``benchmarks/bench_map.py``; ``docs/performance.md``). The cost:
the process keeps its high-water mark of heap memory until it exits, which for a map job
is bounded by the windows in flight.

Process-wide, so only the processes cropscope owns call it: the ``cropscope`` command at
start and the map job's Dask workers (through the equivalent ``MALLOC_*`` environment
variables). A library user may call it at the start of a mapping script. Nothing is
changed where the user set any of ``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` (their choice wins), or where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["ALLOCATOR_ENV", "allocator_env", "keep_freed_memory"]

#: glibc ``mallopt`` parameters (malloc.h) and the values set, as environment variables
#: (read by glibc when a process starts: the form child processes are given)
ALLOCATOR_ENV = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": str(128 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
}
_MALLOPT = {"MALLOC_ARENA_MAX": -8, "MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_TRIM_THRESHOLD_": -1}

_applied: bool | None = None


def allocator_env() -> dict[str, str]:
    """The settings as environment variables for child processes: :data:`ALLOCATOR_ENV`,
    or nothing where the user set any of these variables (their choice wins)."""
    return {} if any(var in os.environ for var in ALLOCATOR_ENV) else dict(ALLOCATOR_ENV)


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (see the module docstring). Returns whether
    the settings are in force in this process: False off glibc or where the user set
    ``MALLOC_*`` variables. Idempotent."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or not allocator_env():
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 -- present in glibc only (not in musl)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _applied = all(mallopt(_MALLOPT[k], int(v)) == 1 for k, v in ALLOCATOR_ENV.items())
    return _applied
