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
