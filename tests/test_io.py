"""Atomic writes: complete or absent, with the permissions the user's umask gives."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cropscope.io import atomic_path
from cropscope.runs import RunSpec, TimeGrid, finish_run, staged_run


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_file_gets_umask_permissions(tmp_path: Path, umask_027: None) -> None:
    with atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("x")
    assert _mode(tmp_path / "a.txt") == 0o640  # 0666 & ~027, not mkstemp's 0600
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert (tmp_path / "a.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_staged_run_folder_gets_umask_permissions(tmp_path: Path, umask_027: None) -> None:
    with staged_run(tmp_path / "run") as folder:
        spec = RunSpec(kind="classifier", model={"name": "rf", "config": {}},
                       classes=["a", "b"], time_grid=TimeGrid.any())
        finish_run(folder, spec)
    assert _mode(tmp_path / "run") == 0o750
    assert _mode(tmp_path / "run" / "run.json") == 0o640


def test_digest_tells_apart_what_a_resume_must_not_mix() -> None:
    import numpy as np

    from cropscope.io import digest

    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert digest(a, {"lr": 1}) == digest(a.copy(), {"lr": 1})
    others = [digest(a.reshape(3, 2), {"lr": 1}), digest(a.astype(np.float64), {"lr": 1}),
              digest(a + 1, {"lr": 1}), digest(a, {"lr": 2}), digest(a, None), digest(a)]
    assert len({digest(a, {"lr": 1}), *others}) == 1 + len(others)
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})  # key order does not count
    days = np.array(["2021-05-03", "2021-06-07"], dtype="datetime64[D]")
    assert digest(days) != digest(days + 1)  # dates have no buffer: hashed as bytes
    assert digest(np.asfortranarray(a)) == digest(a)  # layout does not count
