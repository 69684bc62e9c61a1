"""Shared fixtures: tiny generated series, and the real-data folder.

Tests marked ``realdata`` read ``../shared/data`` (or ``$CROPSCOPE_DATA_DIR``). They skip
when it is absent, except under ``CI=true``, where a missing folder is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

# one thread per test process: the suite runs in parallel workers (pytest -n 2), and
# nested OpenMP/BLAS threads in each worker only oversubscribe the cores
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
from pathlib import Path

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.settings import data_dir

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def restore_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what ``cropscope.threads.set_threads`` does to this test process: environment,
    OpenMP/BLAS pools, torch."""
    import sys

    from threadpoolctl import threadpool_info, threadpool_limits

    from cropscope import threads

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "GDAL_NUM_THREADS", "LOKY_MAX_CPU_COUNT", threads.THREADS_ENV):
        if var in os.environ:  # monkeypatch restores them afterwards
            monkeypatch.setenv(var, os.environ[var])
        else:
            monkeypatch.delenv(var, raising=False)
    pools = threadpool_info()
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    yield
    threads._reset_for_tests()
    for pool in pools:
        threadpool_limits(limits={pool["prefix"]: pool["num_threads"]})
    if torch is not None and torch_threads is not None:
        torch.set_num_threads(torch_threads)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real data folder; skip (or fail in CI) when it is missing."""
    path = data_dir()
    if not (path / "README.md").is_file():
        if IN_CI:
            pytest.fail(f"real data folder missing in CI: {path}")
        pytest.skip(f"real data folder not found: {path}")
    return path


def shared_folder(real_data_dir: Path, name: str) -> Path:
    """``real_data_dir / name``; skip (or fail in CI) when that dataset is missing."""
    path = real_data_dir / name
    if not path.is_dir():
        if IN_CI:
            pytest.fail(f"real data folder missing in CI: {path}")
        pytest.skip(f"{path} not found")
    return path


def make_toy_set(
    n_per_class: int = 20,
    n_times: int = 12,
    bands: tuple[str, ...] = ("B4", "B8"),
    n_classes: int = 3,
    seed: int = 0,
    nan_fraction: float = 0.0,
) -> TimeSeriesSet:
    """Separable synthetic classes: each class has its own seasonal peak date."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_times)
    values, labels = [], []
    for k in range(n_classes):
        peak = (k + 1) * n_times / (n_classes + 1)
        curve = np.exp(-0.5 * ((t - peak) / 1.5) ** 2)
        for _ in range(n_per_class):
            series = np.stack([curve * (i + 1) * 0.3 for i in range(len(bands))], axis=1)
            values.append(series + rng.normal(0, 0.03, series.shape))
            labels.append(f"class_{k}")
    arr = np.asarray(values, dtype=np.float32)
    if nan_fraction:
        gaps = rng.random(arr.shape[:2]) < nan_fraction
        gaps[:, 0] = False
        arr[gaps] = np.nan
    dates = np.datetime64("2020-01-05") + (t * 30).astype("timedelta64[D]")
    regions = np.array(["north", "south"])[np.arange(len(labels)) % 2]
    import pandas as pd

    return TimeSeriesSet.from_labels(
        arr, list(bands), labels, dates=dates, meta=pd.DataFrame({"region": regions})
    )


@pytest.fixture
def toy_set() -> TimeSeriesSet:
    return make_toy_set()
