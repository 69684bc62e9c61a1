"""The allocator settings of cropscope's own processes: freed memory kept for reuse."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from cropscope.allocator import ALLOCATOR_ENV

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# a process that allocates a 64 MiB array and frees it: glibc's default serves it with mmap
# (its adaptive threshold stops at 32 MiB) and unmaps it on free, so the next window's
# array faults every page in again; with the settings it comes from the heap and the freed
# memory stays there, for the next allocation
_PROBE = """
import ctypes, sys
import numpy as np
from cropscope.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "1" else False
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
a = np.ones(8 << 20)
mapped = libc.mallinfo2().hblkhd
del a
kept = libc.mallinfo2().fordblks
print(applied, mapped >> 20, kept >> 20)
"""


def _probe(apply: bool, env: dict[str, str]) -> tuple[str, int, int]:
    """(applied, MiB in mmapped blocks while the array lives, MiB free in the heap after)"""
    out = subprocess.run([sys.executable, "-c", _PROBE, "1" if apply else "0"], env=env,
                         capture_output=True, text=True, check=True, timeout=60).stdout.split()
    return out[0], int(out[1]), int(out[2])


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt")
def test_freed_memory_is_kept_for_reuse() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    applied, mapped, kept = _probe(True, env)
    assert applied == "True" and mapped < 64 and kept >= 64
    applied, mapped, kept = _probe(False, env)  # glibc's default: mapped, then returned
    assert applied == "False" and mapped >= 64 and kept < 64


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt")
def test_the_users_malloc_settings_win() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    env["MALLOC_ARENA_MAX"] = "2"
    applied, mapped, _ = _probe(True, env)
    assert applied == "False" and mapped >= 64


def test_the_command_applies_it() -> None:
    code = ("import sys, cropscope.allocator as a; from cropscope.cli.main import main; "
            "sys.argv = ['cropscope', '--version']\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print(a._applied)")
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True, timeout=60).stdout.split()
    assert out[-1] == str(GLIBC)
