"""The map job on a Dask cluster: the driver writes, so outputs equal the single-process run."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cropscope.allocator import ALLOCATOR_ENV
from cropscope.errors import DataError
from cropscope.io import read_json
from cropscope.mapping import local_cluster, run_map_job
from cropscope.threads import THREADS_ENV
from tests.mapping.test_job import (
    N_TIMES,
    Crash,
    assert_cog,
    model,  # noqa: F401  (fixture)
    read_outputs,
    scene,  # noqa: F401  (fixture)
)

distributed = pytest.importorskip("distributed")
rasterio = pytest.importorskip("rasterio")

pytestmark = pytest.mark.slow

OUTPUTS = ("labels", "probabilities", "uncertainty")


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """One local cluster (two single-threaded worker processes) shared by the module, set
    up as map jobs set up their own."""
    with local_cluster(2) as cluster:
        yield cluster.scheduler_address


def _worker_env() -> dict:
    import os
    import threading

    names = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_",
             "GDAL_CACHEMAX", "OMP_NUM_THREADS", THREADS_ENV)
    return {"env": {k: os.environ.get(k) for k in names}, "threads": threading.active_count()}


def test_local_cluster_workers_keep_freed_memory(address: str) -> None:
    """Dask's MALLOC_TRIM_THRESHOLD_=65536 made every window's temporaries page-fault again
    (1.6-2x a window's time); the workers keep freed memory for reuse instead (the
    allocator settings of the cropscope command), a small GDAL cache and one thread each."""
    with distributed.Client(address) as client:
        envs = client.run(_worker_env)
    assert len(envs) == 2
    for info in envs.values():
        user_set = any(var in os.environ for var in ALLOCATOR_ENV)
        for var, value in ALLOCATOR_ENV.items():
            assert info["env"][var] == (os.environ.get(var) if user_set else value)
        assert info["env"]["GDAL_CACHEMAX"] and info["env"]["OMP_NUM_THREADS"] == "1"
        assert info["env"][THREADS_ENV] == "1"
    with pytest.raises(DataError, match="positive"), local_cluster(0):
        pass


def _worker_log_after(messages: list[str]) -> list[str]:
    """Log ``messages`` as errors on a worker's ``distributed.worker`` logger; what reaches
    a handler there."""
    import logging

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    log = logging.getLogger("distributed.worker")
    handler = Keep()
    log.addHandler(handler)
    try:
        for message in messages:
            log.error(message)
    finally:
        log.removeHandler(handler)
    return seen


def test_closing_cluster_drops_only_heartbeat_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker whose heartbeat meets the closing scheduler logged a traceback
    (dask/distributed#7105; it failed a CI run): as a local cluster closes, its workers drop
    that one message, and still log every other one."""
    from cropscope.mapping import job

    messages = ["Failed to communicate with scheduler during heartbeat.", "a real failure"]
    calls: list[str] = []
    quiet = job._quiet_heartbeats

    def record(dist, cluster) -> None:  # the filter goes in before the cluster closes
        calls.append(str(cluster.status))
        quiet(dist, cluster)

    monkeypatch.setattr(job, "_quiet_heartbeats", record)
    with local_cluster(1) as cluster, distributed.Client(cluster) as client:
        before = list(client.run(_worker_log_after, messages).values())
        job._quiet_heartbeats(distributed, cluster)
        after = list(client.run(_worker_log_after, messages).values())
    assert before == [messages]
    assert after == [messages[1:]]
    assert calls == ["Status.running", "Status.running"]


@pytest.fixture(scope="module")
def reference(scene: Path, model, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    result = run_map_job(model, scene, tmp_path_factory.mktemp("ref"), tile=16, progress=False)
    return read_outputs(result.paths)


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(OUTPUTS)
    for name in OUTPUTS:
        assert got[name].dtype == want[name].dtype
        np.testing.assert_array_equal(got[name], want[name])


def test_local_cluster_equals_single_process(
    scene: Path, model, reference, tmp_path: Path  # noqa: F811
) -> None:
    result = run_map_job(model, scene, tmp_path / "dask", tile=16, progress=False, workers=2)
    assert result.n_windows == 20 and result.n_resumed == 0
    assert_same(read_outputs(result.paths), reference)
    for name in OUTPUTS:
        assert_cog(result.paths[name])
    journal = read_json(result.journal)
    assert journal["complete"] and sorted(journal["done"]) == list(range(20))
    assert not (tmp_path / "dask" / ".map_job_partial").exists()


def test_killed_dask_job_resumes_to_the_same_outputs(
    scene: Path, model, reference, address: str, tmp_path: Path  # noqa: F811
) -> None:
    seen: list[int] = []

    def crash_after_5(window) -> None:
        seen.append(window.index)
        if len(seen) == 5:
            raise Crash

    out = tmp_path / "job"
    with pytest.raises(Crash):
        run_map_job(model, scene, out, tile=16, progress=False, scheduler=address,
                    on_window=crash_after_5)  # fmt: skip
    journal = read_json(out / "map_job.json")
    assert sorted(journal["done"]) == sorted(seen) and len(seen) == 5
    assert not journal["complete"] and not (out / "labels.tif").exists()

    resumed = run_map_job(model, scene, out, tile=16, progress=False, scheduler=address,
                          on_window=lambda w: seen.append(w.index))  # fmt: skip
    assert resumed.n_resumed == 5
    assert sorted(seen) == list(range(20))  # every window recorded exactly once
    assert_same(read_outputs(resumed.paths), reference)

    # the journal does not care who predicted: a single-process resume works too
    def crash_at_once(window) -> None:
        raise Crash

    with pytest.raises(Crash):
        run_map_job(model, scene, out, tile=16, progress=False, resume=False,
                    scheduler=address, on_window=crash_at_once)  # fmt: skip
    mixed = run_map_job(model, scene, out, tile=16, progress=False)
    assert mixed.n_resumed == 1
    assert_same(read_outputs(mixed.paths), reference)


def test_dask_options_are_checked(
    scene: Path, model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    with pytest.raises(DataError, match="not both"):
        run_map_job(model, scene, tmp_path / "x", workers=2, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(DataError, match="positive"):
        run_map_job(model, scene, tmp_path / "x", workers=0)
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were absent
    with pytest.raises(DataError, match=r"pip install 'cropscope\[dask\]'"):
        run_map_job(model, scene, tmp_path / "x", workers=2)
    assert not (tmp_path / "x" / "map_job.json").exists()  # checked before any work


def test_cli_predict_with_workers_writes_cogs(
    scene: Path, model, reference, tmp_path: Path  # noqa: F811
) -> None:
    from cropscope.training.rundir import train_run
    from tests.cli.test_cli import run_cli
    from tests.conftest import make_toy_set

    train = make_toy_set(n_per_class=15, n_times=N_TIMES, bands=("B4", "B8"))
    run = train_run(train, "rf", tmp_path / "run", config={"n_estimators": 10, "n_jobs": 1},
                    holdout=0.0)  # fmt: skip
    out = tmp_path / "maps" / "map.tif"
    proc = run_cli("predict", "--model", str(run.run_dir), "--input", str(scene),
                   "--out", str(out), "--tile", "16", "--workers", "2")  # fmt: skip
    assert "mapping" in proc.stderr and proc.stdout == ""
    # the files the workers kept open are closed in their own threads, not at their exit
    assert "Traceback" not in proc.stderr and "EnvError" not in proc.stderr, proc.stderr
    files = sorted(p.name for p in out.parent.iterdir())
    assert files == ["map.png", "map.qml", "map.tif", "map.tif.aux.xml", "map_areas.json",
                     "map_probabilities.tif", "map_uncertainty.tif"]  # (the work folder is gone)
    for name in ("map.tif", "map_probabilities.tif", "map_uncertainty.tif"):
        assert_cog(out.parent / name)
    expected = run_map_job(run.model, scene, tmp_path / "inproc", tile=16, progress=False)
    got = read_outputs({"labels": out, "probabilities": out.parent / "map_probabilities.tif",
                        "uncertainty": out.parent / "map_uncertainty.tif"})  # fmt: skip
    assert_same(got, read_outputs(expected.paths))
    areas = read_json(out.parent / "map_areas.json")
    assert list(areas) == list(run.model.classes)
    assert sum(a["pixels"] for a in areas.values()) == 50 * 70 - 40


_ENDED_THREAD = """
import contextlib, sys, threading
sys.path.insert(0, {root!r})
from cropscope.data.readers.cube import CubeSource
from cropscope.mapping import job

source = CubeSource.scan({scene!r})

def open_in_thread():  # what _keep_open does in a worker's executor thread
    stack = contextlib.ExitStack()
    stack.enter_context(source.opened())
    job._OPEN_SOURCES[threading.get_ident()] = (source, stack)

worker = threading.Thread(target=open_in_thread)
worker.start()
worker.join()  # the executor replaced its thread: the opener has ended
job._close_kept_sources()  # runs in another thread
assert not job._OPEN_SOURCES and source._handles is None
print("closed")
"""


def test_files_kept_open_by_an_ended_thread_are_closed_without_a_traceback(
        scene: Path, tmp_path: Path) -> None:  # noqa: F811
    """A worker thread that opened the cube's files may end before the closing task runs
    (in another thread): the files are still closed then, not left to the interpreter's
    exit, where GDAL's per-thread environment is gone (a traceback on stderr)."""
    import subprocess

    script = tmp_path / "ended.py"
    script.write_text(_ENDED_THREAD.format(root=str(Path(__file__).resolve().parents[2]),
                                           scene=str(scene)))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "closed", proc.stderr
    assert "Traceback" not in proc.stderr and "EnvError" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("address", ["localhost", "tcp://", "foo://x"])
def test_malformed_scheduler_address_is_a_data_error(
    scene: Path, model, tmp_path: Path, address: str  # noqa: F811
) -> None:
    import dask

    before = dask.config.get("scheduler", None)
    with pytest.raises(DataError, match="not a Dask scheduler address"):
        run_map_job(model, scene, tmp_path / "out", tile=16, progress=False, scheduler=address)
    # no half-made Client left as the process's default scheduler (later computes failed)
    assert dask.config.get("scheduler", None) == before
    assert not list((tmp_path / "out").glob("*.tif"))  # no output (the partial work stays)
