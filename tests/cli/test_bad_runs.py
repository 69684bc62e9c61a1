"""Hostile or damaged run directories through the real command line: one ``error:`` line,
exit 2, and nothing named in a file is imported or executed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cropscope.runs import MANIFEST_FILE
from cropscope.runs.store import _write_manifest
from cropscope.training.rundir import train_run
from tests.cli.test_cli import assert_one_line_error
from tests.conftest import make_toy_set

EVIL = """
from pathlib import Path
Path(__file__).with_name("PWNED").write_text("imported")
def run(*a, **k):
    Path(__file__).with_name("PWNED").write_text("called")
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("runs")
    ts = make_toy_set(n_per_class=10)
    train_run(ts, "rf", base / "rf", config={"n_estimators": 5}, holdout=0)
    df = ts.to_long().drop(columns="valid")
    df.to_csv(base / "samples.csv", index=False)
    (base / "evil").mkdir()
    (base / "evil" / "evilmod.py").write_text(EVIL)
    return {"rf": base / "rf", "table": base / "samples.csv", "evil": base / "evil"}


def _predict(run: Path, table: Path, out: Path, evil: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{evil}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(
        [sys.executable, "-m", "cropscope.cli.main", "predict", "--model", str(run),
         "--input", str(table), "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )


def _variant(runs: dict[str, Path], tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(runs["rf"], tmp_path / name))


def _edit_json(path: Path, key: str, value: object) -> None:
    data = json.loads(path.read_text())
    target = data
    for part in key.split(".")[:-1]:
        target = target[part]
    target[key.split(".")[-1]] = value
    path.write_text(json.dumps(data))


@pytest.mark.slow
@pytest.mark.parametrize("case", ["model-names-a-module", "run-names-a-module",
                                  "unknown-model", "path-outside", "tampered-weights",
                                  "unfinished", "classes-as-string", "truncated-json"])
def test_bad_run_directories(runs: dict[str, Path], tmp_path: Path, case: str) -> None:
    run = _variant(runs, tmp_path, case)
    needle = ""
    if case == "model-names-a-module":
        _edit_json(run / "model.json", "model", "evilmod:run")
        _write_manifest(run)
        needle = "invalid model name"
    elif case == "run-names-a-module":
        _edit_json(run / "run.json", "model.name", "evilmod:run")
        _write_manifest(run)
        needle = "invalid model name"
    elif case == "unknown-model":
        _edit_json(run / "run.json", "model.name", "no-such-model")
        _edit_json(run / "model.json", "model", "no-such-model")
        _write_manifest(run)
        needle = "unknown model"
    elif case == "path-outside":
        manifest = json.loads((run / MANIFEST_FILE).read_text())
        manifest["sha256"]["../../evil/evilmod.py"] = "0" * 64
        (run / MANIFEST_FILE).write_text(json.dumps(manifest))
        needle = "leaves the run directory"
    elif case == "tampered-weights":
        weights = run / "forest.skops"
        weights.write_bytes(weights.read_bytes()[:-10])
        needle = "checksum of forest.skops"
    elif case == "unfinished":
        (run / MANIFEST_FILE).unlink()
        needle = "not a complete run"
    elif case == "classes-as-string":
        _edit_json(run / "model.json", "card.classes", "Cerrado")
        _write_manifest(run)
        needle = "classes"
    elif case == "truncated-json":
        text = (run / "run.json").read_text()
        (run / "run.json").write_text(text[: len(text) // 2])
        _write_manifest(run)
        needle = "not valid JSON"
    proc = _predict(run, runs["table"], tmp_path / "pred.csv", runs["evil"])
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc, needle)
    assert not (runs["evil"] / "PWNED").exists(), "code named in a run file was executed"
    assert not (tmp_path / "pred.csv").exists()


def test_the_untouched_run_predicts(runs: dict[str, Path], tmp_path: Path) -> None:
    proc = _predict(runs["rf"], runs["table"], tmp_path / "pred.csv", runs["evil"])
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "pred.csv").is_file()


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny AgriFM segmentation run and a scene it can map."""
    from cropscope.data.readers.cube import read_cube
    from cropscope.data.readers.h5patches import ArrayPatchDataset, tile_sample
    from cropscope.runs import TimeGrid
    from cropscope.training.segmentation_run import train_segmentation_run
    from tests.mapping.test_job import write_scene

    base = tmp_path_factory.mktemp("seg")
    scene = write_scene(base / "scene")
    x = read_cube(scene).values.astype("float32")
    labels = (x[0, 0] > 0.1).astype("int64")
    samples = [({"S2": s["S2"]}, lab) for s, lab in tile_sample({"S2": x}, labels, 16, 16)]
    kwargs = {"preset": None, "sources": {"S2": 2}, "num_classes": 2, "embed_dim": 8,
              "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4], "decoder_dim": 16,
              "patch_size": [2, 2, 2]}
    train_segmentation_run(ArrayPatchDataset(samples), base / "run", network_kwargs=kwargs,
                           classes=["a", "b"], bands={"S2": ["B4", "B8"]},
                           time_grid=TimeGrid.any(),
                           config={"epochs": 1, "batch_size": 4, "device": "cpu"})
    return {"run": base / "run", "scene": scene}


def _map(run: Path, scene: Path, out: Path, evil: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{evil}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(
        [sys.executable, "-m", "cropscope.cli.main", "predict", "--model", str(run),
         "--input", str(scene), "--out", str(out), "--tile", "32"],
        capture_output=True, text=True, timeout=300, env=env,
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", ["network-names-a-module", "unknown-network",
                                  "tampered-weights", "path-outside"])
def test_bad_segmentation_runs(seg_run: dict[str, Path], runs: dict[str, Path],
                               tmp_path: Path, case: str) -> None:
    run = Path(shutil.copytree(seg_run["run"], tmp_path / case))
    if case == "network-names-a-module":
        _edit_json(run / "run.json", "network.name", "evilmod:run")
        _write_manifest(run)
        needle = "invalid network name"
    elif case == "unknown-network":
        _edit_json(run / "run.json", "network.name", "no-such-network")
        _write_manifest(run)
        needle = "unknown network"
    elif case == "tampered-weights":
        weights = run / "weights.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        needle = "checksum of weights.safetensors"
    else:
        manifest = json.loads((run / MANIFEST_FILE).read_text())
        manifest["sha256"]["../evil/evilmod.py"] = "0" * 64
        (run / MANIFEST_FILE).write_text(json.dumps(manifest))
        needle = "leaves the run directory"
    proc = _map(run, seg_run["scene"], tmp_path / "map.tif", runs["evil"])
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc, needle)
    assert not (runs["evil"] / "PWNED").exists(), "code named in a run file was executed"
    assert not (tmp_path / "map.tif").exists()
