"""Fault suite (issue 20): trainings and map jobs stopped at random points, the final write
included, leave a result that is complete and identical to an uninterrupted one, or one that
is refused with a clear message; run again, they deliver the uninterrupted result.

Every cropscope writer puts a finished file in place with ``os.replace`` (``atomic_path``,
staged runs, the map delivery), so the points are "the k-th ``os.replace`` of the call", k
drawn (seeded) from all of them, the last one always included. The process is "killed" there
by an exception no library code catches (a :class:`BaseException`, like ``KeyboardInterrupt``).
A real ``kill -9`` of ``cropscope train`` at seeded moments is here too; that of map jobs is
in ``tests/mapping/test_job.py`` and ``tests/mapping/test_dask.py``.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cropscope.errors import ModelError
from cropscope.models import load_run_model
from cropscope.runs import MANIFEST_FILE, file_sha256
from tests.conftest import make_toy_set

pytest.importorskip("rasterio")


class Killed(BaseException):
    """The process stops here (nothing in cropscope or its libraries catches it)."""


def count_replaces(fn: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> int:
    """How many ``os.replace`` calls ``fn()`` makes."""
    real = os.replace
    calls = {"n": 0}

    def counting(src: Any, dst: Any) -> None:
        calls["n"] += 1
        real(src, dst)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", counting)
        fn()
    return calls["n"]


def killed_at(k: int, fn: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``fn()`` and stop it at its ``k``-th ``os.replace`` (1-based), before the rename."""
    real = os.replace
    calls = {"n": 0}

    def dying(src: Any, dst: Any) -> None:
        calls["n"] += 1
        if calls["n"] == k:
            raise Killed
        real(src, dst)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", dying)
        with pytest.raises(Killed):
            fn()


def points(total: int, n: int, seed: int) -> list[int]:
    """``n`` stopping points among ``1..total`` (seeded), always with the last one."""
    rng = random.Random(seed)
    chosen = set(rng.sample(range(1, total), min(n - 1, total - 1))) if total > 1 else set()
    return sorted(chosen | {total})


def run_state(out: Path) -> str | None:
    """The run at ``out``: its manifest digest when it loads, None when refused."""
    try:
        load_run_model(out)
    except ModelError as exc:
        assert "not a complete run" in str(exc) or "not found" in str(exc) \
            or "no run.json" in str(exc), str(exc)
        return None
    return file_sha256(out / MANIFEST_FILE)


# ---------------------------------------------------------------------------- training
@pytest.mark.slow
@pytest.mark.parametrize("name,config", [
    ("rf", {"n_estimators": 5, "n_jobs": 1}),
    ("tempcnn", {"epochs": 3, "batch_size": 16, "hidden": 8, "filters": 4, "device": "cpu"}),
])
def test_training_stopped_anywhere_is_refused_or_complete_and_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, config: dict) -> None:
    from cropscope.training.rundir import load_run, train_run

    ts = make_toy_set(n_per_class=10)
    ref = train_run(ts, name, tmp_path / "ref", config=config, holdout=0.25)
    want = load_run(ref.run_dir).predict_proba(ts)
    total = count_replaces(lambda: train_run(ts, name, tmp_path / "count", config=config,
                                             holdout=0.25), monkeypatch)
    assert total > 3
    for i, k in enumerate(points(total, 4, seed=len(name))):
        out = tmp_path / f"run{i}"
        train_run(ts, "logreg", out, holdout=0)  # an older, complete run at the target
        old = run_state(out)
        killed_at(k, lambda out=out: train_run(ts, name, out, config=config, holdout=0.25),
                  monkeypatch)
        state = run_state(out)
        # the old run, untouched, or nothing loadable; never new weights beside old files
        assert state in (old, None), (k, total)
        if state == old:
            assert json.loads((out / "run.json").read_text())["model"]["name"] == "logreg"
        train_run(ts, name, out, config=config, holdout=0.25)  # run again: resumes
        np.testing.assert_array_equal(load_run(out).predict_proba(ts), want)


@pytest.mark.slow
def test_cli_training_killed_with_sigkill_is_refused_or_complete_and_resumes(
        tmp_path: Path) -> None:
    """The real thing: ``cropscope train`` killed with SIGKILL (no clean-up handler runs) at
    seeded moments of its run, over an older complete run at ``--out``. Afterwards ``--out``
    holds the old run untouched, nothing loadable, or the complete new run; the same
    command run again resumes and gives exactly the uninterrupted run's probabilities."""
    import signal
    import subprocess
    import sys
    import time

    from cropscope.training.rundir import load_run, train_run

    ts = make_toy_set(n_per_class=15)
    table = tmp_path / "samples.csv"
    ts.to_long().drop(columns="valid").to_csv(table, index=False)

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "cropscope.cli.main", "train", "--table", str(table),
                "--model", "tempcnn", "--out", str(out), "--threads", "1", "--holdout",
                "0.25", "--set", "epochs=8", "--set", "batch_size=16", "--set", "hidden=8",
                "--set", "filters=4", "--set", "device=cpu"]  # fmt: skip

    start = time.perf_counter()
    subprocess.run(command(tmp_path / "ref"), check=True, capture_output=True, timeout=600)
    duration = time.perf_counter() - start
    want = load_run(tmp_path / "ref").predict_proba(ts)
    rng = random.Random(7)
    outcomes = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        train_run(ts, "logreg", out, holdout=0)  # an older, complete run at the target
        old = run_state(out)
        proc = subprocess.Popen(command(out), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(duration * rng.uniform(0.5, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        state = run_state(out)
        outcomes.append("old" if state == old else "none" if state is None else "new")
        if state not in (old, None):  # it had finished: the complete new run
            np.testing.assert_array_equal(load_run(out).predict_proba(ts), want)
        subprocess.run(command(out), check=True, capture_output=True, timeout=600)
        np.testing.assert_array_equal(load_run(out).predict_proba(ts), want)
    print("outcomes after SIGKILL:", outcomes)


@pytest.mark.slow
def test_segmentation_training_stopped_anywhere_is_refused_then_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Segmentation and H2Crop runs share this path (``train_segmentation_run``)."""
    torch = pytest.importorskip("torch")
    from cropscope.data.readers.h5patches import ArrayPatchDataset
    from cropscope.runs import TimeGrid
    from cropscope.training.segmentation_run import train_segmentation_run

    rng = np.random.default_rng(0)
    samples = []
    for _ in range(6):
        x = rng.normal(size=(2, 2, 16, 16)).astype("float32")
        samples.append(({"S2": x}, (x[0, 0] > 0).astype("int64")))
    kwargs = {"preset": None, "sources": {"S2": 2}, "num_classes": 2, "embed_dim": 8,
              "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4], "decoder_dim": 16,
              "patch_size": [2, 2, 2]}
    config = {"epochs": 2, "batch_size": 3, "device": "cpu"}

    def train(out: Path) -> None:
        train_segmentation_run(ArrayPatchDataset(samples), out, network_kwargs=kwargs,
                               classes=["a", "b"], bands={"S2": ["B4", "B8"]},
                               time_grid=TimeGrid.any(), config=config)

    train(tmp_path / "ref")
    want = load_run_model(tmp_path / "ref")
    total = count_replaces(lambda: train(tmp_path / "count"), monkeypatch)
    for i, k in enumerate(points(total, 3, seed=1)):
        out = tmp_path / f"run{i}"
        killed_at(k, lambda out=out: train(out), monkeypatch)
        assert run_state(out) is None, (k, total)  # an unfinished run is refused
        train(out)
        got = load_run_model(out)
        for (key, a), b in zip(got.network.state_dict().items(),
                               want.network.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, msg=key)


@pytest.mark.slow
def test_h2crop_training_stopped_anywhere_is_refused_then_identical(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``train_h2crop`` (the H2Crop protocol: run folder, test reports) stopped at any of its
    writes leaves nothing ``load_h2crop_run`` accepts; run again, it gives the uninterrupted
    network."""
    torch = pytest.importorskip("torch")
    from cropscope.data.readers.h2crop import generate_h2crop
    from cropscope.training.h2crop import load_h2crop_run, train_h2crop

    torch.set_num_threads(1)
    root = generate_h2crop(tmp_path / "data", 6, size=24, hyper_size=8, hyper_bands=12,
                           months=4, seed=0)

    def train(out: Path) -> None:
        train_h2crop(root, "S2", months=4, out_dir=out, normalise="train", progress=False,
                     training={"epochs": 2, "batch_size": 2, "device": "cpu", "seed": 0})

    train(tmp_path / "ref")
    want = load_h2crop_run(tmp_path / "ref").state_dict()
    total = count_replaces(lambda: train(tmp_path / "count"), monkeypatch)
    assert total > 3
    for i, k in enumerate(points(total, 3, seed=2)):
        out = tmp_path / f"run{i}"
        killed_at(k, lambda out=out: train(out), monkeypatch)
        with pytest.raises(ModelError, match=r"not a complete run|no run\.json|not found"):
            load_h2crop_run(out)
        train(out)
        got = load_h2crop_run(out).state_dict()
        for key, value in want.items():
            torch.testing.assert_close(got[key], value, msg=key)


# ---------------------------------------------------------------------------- map jobs
def _read(paths: dict[str, Path]) -> dict[str, Any]:
    import rasterio

    out: dict[str, Any] = {}
    for name, path in paths.items():
        if path.suffix == ".tif":
            with rasterio.open(path) as src:
                out[name] = src.read()
        elif path.suffix == ".json":
            out[name] = json.loads(path.read_text())
        else:
            out[name] = path.read_bytes()
    return out


@pytest.mark.slow
def test_map_delivery_stopped_anywhere_is_absent_or_complete_then_identical(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``cropscope predict`` on a cube (map job + delivery), stopped at random points, the
    last moves of the delivery included, over an earlier map of another model."""
    from cropscope.mapping import deliver_map, map_output_paths
    from cropscope.models import create_model
    from tests.mapping.test_job import N_TIMES, write_scene

    scene = write_scene(tmp_path / "scene")
    train = make_toy_set(n_per_class=15, n_times=N_TIMES, bands=("B4", "B8"))
    model = create_model("rf", n_estimators=10, n_jobs=1).fit(train)
    other = create_model("logreg").fit(train)

    def deliver(out: Path, m: Any = model) -> Any:
        return deliver_map(m, scene, out, tile=32, progress=False)

    want = _read(deliver(tmp_path / "ref" / "map.tif").paths)
    total = count_replaces(lambda: deliver(tmp_path / "count" / "map.tif"), monkeypatch)
    for i, k in enumerate(points(total, 5, seed=3)):
        out = tmp_path / f"m{i}" / "map.tif"
        deliver(out, other)  # an earlier map at the target
        targets = {n: p for n, p in map_output_paths(out).items() if n != "parcels"}
        older = _read(targets)
        killed_at(k, lambda out=out: deliver(out), monkeypatch)
        if targets["labels"].exists():  # labels present: the whole product, of one run
            got = _read(targets)
            assert all(np.array_equal(got[n], older[n]) if isinstance(got[n], np.ndarray)
                       else got[n] == older[n] for n in got) or \
                all(np.array_equal(got[n], want[n]) if isinstance(got[n], np.ndarray)
                    else got[n] == want[n] for n in got), (k, total)
        deliver(out)  # run again: resumes and delivers
        got = _read(targets)
        for name in want:
            if isinstance(want[name], np.ndarray):
                np.testing.assert_array_equal(got[name], want[name])
            else:
                assert got[name] == want[name], name


def test_predict_table_disk_full_leaves_no_file(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from cropscope.training.rundir import train_run
    from cropscope.workflows.predict import predict_run

    ts = make_toy_set(n_per_class=6)
    train_run(ts, "rf", tmp_path / "run", config={"n_estimators": 3}, holdout=0)
    table = tmp_path / "t.csv"
    ts.to_long().drop(columns="valid").to_csv(table, index=False)

    def full(src: Any, dst: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    with monkeypatch.context() as m:
        m.setattr(os, "replace", full)
        with pytest.raises(OSError, match="No space"):
            predict_run(tmp_path / "run", table, tmp_path / "p.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "t.csv"]  # no temp left
