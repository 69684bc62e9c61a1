"""The map job's reader and writer threads, and the threaded job against the serial one."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cropscope.io import read_json
from cropscope.mapping import run_map_job
from cropscope.mapping.pipeline import ReadAhead, WriteBehind
from tests.mapping.test_job import model, read_outputs, scene  # noqa: F401 (fixtures)


class Stop(BaseException):
    """Like a kill: nothing catches it."""


def no_threads_left(before: set[str]) -> bool:
    names = {t.name for t in threading.enumerate()} - before
    return not any(n.startswith("cropscope-") for n in names)


def test_read_ahead_yields_in_order_and_stays_bounded() -> None:
    read: list[int] = []

    def slow_read(i: int) -> int:
        read.append(i)
        return i * i

    ahead = ReadAhead(range(20), slow_read, depth=2)
    got = []
    try:
        for i, value in ahead:
            time.sleep(0.002)
            assert len(read) <= i + 1 + 3  # the one taken, two queued, one being read
            got.append((i, value))
    finally:
        assert ahead.close() == []
    assert got == [(i, i * i) for i in range(20)]


def test_read_ahead_raises_its_error_and_closes_early() -> None:
    before = {t.name for t in threading.enumerate()}

    def failing(i: int) -> int:
        if i == 3:
            raise Stop
        return i

    ahead = ReadAhead(range(10), failing)
    seen = []
    with pytest.raises(Stop):
        for i, _ in ahead:
            seen.append(i)
    ahead.close()
    assert seen == [0, 1, 2] and no_threads_left(before)
    # stopped by the consumer: what was read but not taken comes back (to be released)
    ahead = ReadAhead(range(10), lambda i: [i], depth=2)
    for i, _ in ahead:
        if i == 1:
            break
    left = ahead.close()
    assert all(isinstance(v, list) and v[0] > 1 for v in left) and no_threads_left(before)


def test_write_behind_writes_in_order_and_stops_at_the_first_error() -> None:
    before = {t.name for t in threading.enumerate()}
    written: list[int] = []
    writer = WriteBehind(written.append, depth=3)
    for i in range(50):
        writer.put(i)
    writer.finish()
    assert written == list(range(50)) and no_threads_left(before)

    written.clear()

    def write(i: int) -> None:
        if i == 4:
            raise Stop
        written.append(i)

    writer = WriteBehind(write, depth=2)
    with pytest.raises(Stop):
        for i in range(100):
            writer.put(i)
        writer.finish()
    assert written == [0, 1, 2, 3]  # nothing after the failed write
    writer.abort()
    assert no_threads_left(before)


def test_write_behind_abort_finishes_the_item_being_written() -> None:
    started, release = threading.Event(), threading.Event()
    written: list[int] = []

    def write(i: int) -> None:
        started.set()
        release.wait(5)
        written.append(i)

    writer = WriteBehind(write, depth=5)
    for i in range(4):
        writer.put(i)
    started.wait(5)
    threading.Timer(0.05, release.set).start()
    writer.abort()
    assert written == [0]


# ---------------------------------------------------------------------------- the job
@pytest.fixture
def two_threads(restore_threads: None) -> None:
    from cropscope.threads import set_threads

    set_threads(2)


def test_threaded_job_equals_the_serial_job_byte_for_byte(
        scene: Path, model, tmp_path: Path, restore_threads: None) -> None:  # noqa: F811
    from cropscope.threads import set_threads

    set_threads(1)
    serial = run_map_job(model, scene, tmp_path / "serial", tile=16, progress=False)
    set_threads(2)
    before = {t.name for t in threading.enumerate()}
    threaded = run_map_job(model, scene, tmp_path / "threaded", tile=16, progress=False)
    assert no_threads_left(before)
    for name, path in serial.paths.items():
        assert path.read_bytes() == threaded.paths[name].read_bytes(), name


def test_threaded_job_killed_in_the_writer_resumes_exactly(
        scene: Path, model, tmp_path: Path, two_threads: None,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    import cropscope.mapping.job as job

    reference = run_map_job(model, scene, tmp_path / "ref", tile=16, progress=False)
    real_write = job._write_window
    calls = {"n": 0}

    def write_then_die(paths, window, arrays) -> None:
        calls["n"] += 1
        if calls["n"] == 5:  # the labels of window 4 reach the disk, then the process dies
            real_write({"labels": paths["labels"]}, window, arrays)
            raise Stop
        real_write(paths, window, arrays)

    before = {t.name for t in threading.enumerate()}
    out = tmp_path / "job"
    with monkeypatch.context() as m:
        m.setattr(job, "_write_window", write_then_die)
        with pytest.raises(Stop):
            run_map_job(model, scene, out, tile=16, progress=False)
    assert no_threads_left(before)
    assert read_json(out / "map_job.json")["done"] == [0, 1, 2, 3]
    seen: list[int] = []
    resumed = run_map_job(model, scene, out, tile=16, progress=False,
                          on_window=lambda w: seen.append(w.index))  # fmt: skip
    assert resumed.n_resumed == 4 and sorted(seen) == list(range(4, 20))
    for name, path in reference.paths.items():
        assert path.read_bytes() == resumed.paths[name].read_bytes(), name


def test_threaded_job_stopped_by_a_model_error_leaves_no_thread(
        scene: Path, model, tmp_path: Path, two_threads: None,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = type(model).predict_proba_pixels

    def failing(self, *args, **kwargs) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 3:
            raise Stop
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "predict_proba_pixels", failing)
    before = {t.name for t in threading.enumerate()}
    out = tmp_path / "job"
    with pytest.raises(Stop):
        run_map_job(model, scene, out, tile=16, progress=False)
    assert no_threads_left(before)
    done = read_json(out / "map_job.json")["done"]
    assert done == list(range(len(done))) and len(done) <= 2
