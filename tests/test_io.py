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
