"""Thread counts: resolving (explicit > $CROPSCOPE_THREADS > default), applying, bad values."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cropscope import threads
from cropscope.errors import SettingsError
from tests.conftest import make_toy_set


def test_explicit_value_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(threads.THREADS_ENV, "3")
    assert threads.resolve_threads(2) == 2
    assert threads.resolve_threads("5") == 5
    assert threads.resolve_threads() == 3
    monkeypatch.setenv(threads.THREADS_ENV, " 4 ")
    assert threads.resolve_threads(None) == 4


@pytest.mark.parametrize("value", [0, -1, "0", "-3", "two", "1.5", 1.5, True, ""])
def test_bad_explicit_values(value: object) -> None:
    with pytest.raises(SettingsError, match="positive integer"):
        threads.resolve_threads(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["0", "-2", "abc", "1.5", "2,2"])
def test_bad_env_values(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(threads.THREADS_ENV, value)
    with pytest.raises(SettingsError, match=threads.THREADS_ENV):
        threads.resolve_threads()


@pytest.mark.parametrize("value", ["", "auto", "AUTO"])
def test_empty_or_auto_env_is_the_default(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(threads.THREADS_ENV, value)
    monkeypatch.setattr(threads, "default_threads", lambda: 7)
    assert threads.resolve_threads() == 7


def test_default_honours_the_users_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    monkeypatch.setattr(threads, "_USER_OMP", "3")
    assert threads.resolve_threads() == 3
    monkeypatch.setattr(threads, "_USER_OMP", "2,1")  # nested OpenMP list: the outer count
    assert threads.resolve_threads() == 2


@pytest.mark.parametrize(("cpus", "busy", "expected"),
                         [(2, 0.05, 2), (2, 0.97, 1), (2, 1.6, 1), (2, 5.0, 1), (8, 2.2, 6),
                          (1, 0.0, 1)])
def test_default_leaves_busy_cores_alone(monkeypatch: pytest.MonkeyPatch, cpus: int,
                                         busy: float, expected: int) -> None:
    monkeypatch.setattr(threads, "_USER_OMP", None)
    monkeypatch.setattr(threads, "available_cpus", lambda: cpus)
    monkeypatch.setattr(threads, "_busy_cpus", lambda sample_s=0.1: busy)
    assert threads.default_threads() == expected


def test_busy_cpus_sample_and_available_cpus() -> None:
    busy = threads._busy_cpus(0.02)
    assert busy >= 0.0
    assert 1 <= threads.available_cpus() <= (os.cpu_count() or 1)


def test_set_threads_caps_every_pool(restore_threads: None) -> None:
    torch = pytest.importorskip("torch")
    from threadpoolctl import threadpool_info

    assert threads.set_threads(2) == 2
    assert threads.current_threads() == 2
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "GDAL_NUM_THREADS", "LOKY_MAX_CPU_COUNT"):
        assert os.environ[var] == "2"
    assert torch.get_num_threads() == 2
    assert all(p["num_threads"] == 2 for p in threadpool_info())
    assert threads.set_threads(1) == 1
    assert torch.get_num_threads() == 1
    with pytest.raises(SettingsError):
        threads.set_threads(0)
    assert threads.current_threads() == 1  # a bad value changes nothing


def test_ensure_threads_applies_the_default_once(restore_threads: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    threads._reset_for_tests()
    monkeypatch.setenv(threads.THREADS_ENV, "1")
    assert threads.ensure_threads() == 1
    monkeypatch.setenv(threads.THREADS_ENV, "2")
    assert threads.ensure_threads() == 1  # applied already: unchanged until set_threads


@pytest.mark.parametrize("name", ["lightgbm", "rf"])
def test_tree_models_use_the_thread_count(restore_threads: None, name: str) -> None:
    from cropscope.models.registry import create_model

    pytest.importorskip("lightgbm" if name == "lightgbm" else "skops")
    ts = make_toy_set(n_per_class=10)
    threads.set_threads(1)
    model = create_model(name, n_estimators=5).fit(ts)
    assert model.config["n_jobs"] is None
    assert model.estimator_.get_params()["n_jobs"] == 1  # type: ignore[attr-defined]
    threads.set_threads(2)
    model.predict(ts)
    explicit = create_model(name, n_estimators=5, n_jobs=2).fit(ts)
    assert explicit.estimator_.get_params()["n_jobs"] == 2  # type: ignore[attr-defined]


def test_import_sets_passive_wait_and_stays_light() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import os, sys, cropscope.threads; "
            "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True, timeout=60).stdout.split()
    assert out == ["PASSIVE", "False"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's choice wins
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True, timeout=60).stdout.split()
    assert out == ["ACTIVE", "False"]


def test_import_bounds_the_gdal_block_cache() -> None:
    """GDAL's default cache (5 % of RAM) only costs map jobs page faults: 256 MB unless the
    user set one, in place before rasterio opens a file."""
    pytest.importorskip("rasterio")
    env = {k: v for k, v in os.environ.items() if k != "GDAL_CACHEMAX"}
    code = ("import cropscope, rasterio, numpy as np; from rasterio.io import MemoryFile; "
            "f = MemoryFile(); ds = f.open(driver='GTiff', width=8, height=8, count=1, "
            "dtype='uint8'); ds.write(np.zeros((1, 8, 8), 'uint8')); "
            "from rasterio.env import get_gdal_config; print(get_gdal_config('GDAL_CACHEMAX'))")
    for user, mib in ((None, 256), ("64", 64)):
        if user is not None:
            env["GDAL_CACHEMAX"] = user
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True, timeout=60).stdout.split()
        assert int(out[-1]) in (mib, mib << 20)  # GDAL rewrites it in bytes once read
