"""Fixtures shared by the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_toy_set


@pytest.fixture
def toy_table(tmp_path) -> Path:
    df = make_toy_set(n_per_class=15).to_long().drop(columns="valid")
    path = tmp_path / "samples.csv"
    df.to_csv(path, index=False)
    return path
