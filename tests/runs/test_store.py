"""Run directories: complete or absent, verified on load, paths and names checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cropscope.errors import ModelError
from cropscope.models.runs import load_run_model
from cropscope.runs import (
    MANIFEST_FILE,
    RunSpec,
    TimeGrid,
    begin_run,
    finish_run,
    inside,
    open_run,
    staged_run,
)
from cropscope.training.rundir import train_run
from tests.conftest import make_toy_set


def _spec(**kw: object) -> RunSpec:
    base: dict = {"kind": "segmentation", "network": {"name": "agrifm", "kwargs": {}},
                  "classes": ["a", "b"]}
    base.update(kw)
    return RunSpec(**base)


def test_spec_round_trip_and_time_grid() -> None:
    spec = _spec(time_grid=TimeGrid.from_dates(np.array(["2021-03-01", "2021-04-01"],
                                                        dtype="datetime64[D]")),
                 sources={"S2": {"bands": ["B2", "B3"], "wavelengths": [490.0, 560.0]}},
                 normalisation={"mean": {"S2": [1.0, 2.0]}, "std": {"S2": [1.0, 1.0]}})
    again = RunSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert again.time_grid.dates == ("2021-03-01", "2021-04-01") and again.bands() == ["B2", "B3"]


@pytest.mark.parametrize("name", ["os:system", "pkg.mod:func", "../x", "", "A", 3, None])
def test_names_never_point_to_code(name: object) -> None:
    with pytest.raises(ModelError, match="invalid network name"):
        _spec(network={"name": name, "kwargs": {}})


@pytest.mark.parametrize("bad", [
    {"format": "other"},
    {"format": "cropscope-run", "format_version": 99, "kind": "classifier"},
    {"format": "cropscope-run", "format_version": 1, "kind": "weird"},
    {"format": "cropscope-run", "format_version": 1, "kind": "segmentation",
     "network": {"name": "agrifm"}, "classes": "Cerrado"},
    {"format": "cropscope-run", "format_version": 1, "kind": "segmentation",
     "network": {"name": "agrifm"}, "time_grid": {"kind": "dates", "dates": ["x"]}},
    {"format": "cropscope-run", "format_version": 1, "kind": "segmentation",
     "network": {"name": "agrifm"}, "factory": "os:system"},
    [1, 2],
])
def test_bad_specs_are_one_model_error(bad: object) -> None:
    with pytest.raises(ModelError):
        RunSpec.from_dict(bad)


def test_inside_refuses_paths_that_leave(tmp_path) -> None:
    assert inside(tmp_path, "a/b.json") == tmp_path / "a" / "b.json"
    for rel in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(ModelError, match="leaves the run directory"):
            inside(tmp_path, rel)


def test_a_run_is_loadable_only_once_finished(tmp_path) -> None:
    out = begin_run(tmp_path / "run")
    (out / "weights.bin").write_bytes(b"123")
    with pytest.raises(ModelError, match=r"not a cropscope run|not a complete run"):
        open_run(out)
    finish_run(out, _spec())
    assert set(open_run(out).files) == {"run.json", "weights.bin"}
    begin_run(out)  # a new training over it: not loadable until finished again
    with pytest.raises(ModelError, match="not a complete run"):
        open_run(out)


def test_tampered_and_missing_files_are_refused(tmp_path) -> None:
    out = begin_run(tmp_path / "run")
    (out / "weights.bin").write_bytes(b"123")
    finish_run(out, _spec())
    (out / "weights.bin").write_bytes(b"124")
    with pytest.raises(ModelError, match=r"checksum of weights\.bin"):
        open_run(out)
    (out / "weights.bin").unlink()
    with pytest.raises(ModelError, match=r"weights\.bin is missing"):
        open_run(out)


def test_manifest_paths_that_leave_are_refused(tmp_path) -> None:
    out = begin_run(tmp_path / "run")
    finish_run(out, _spec())
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    manifest["sha256"]["../../etc/passwd"] = "0" * 64
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="leaves the run directory"):
        open_run(out)


def test_staged_run_failure_keeps_the_old_run(tmp_path) -> None:
    target = tmp_path / "run"
    with staged_run(target) as stage:
        (stage / "a.txt").write_text("old")
        finish_run(stage, _spec())
    with pytest.raises(RuntimeError, match="boom"), staged_run(target) as stage:
        (stage / "a.txt").write_text("new")
        raise RuntimeError("boom")
    assert (target / "a.txt").read_text() == "old" and open_run(target)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary folder left


def test_failed_training_leaves_no_run(tmp_path, monkeypatch) -> None:
    ts = make_toy_set(n_per_class=10)

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("cropscope.evaluation.report.write_report", explode)
    monkeypatch.setattr("cropscope.evaluation.write_report", explode)
    with pytest.raises(RuntimeError):
        train_run(ts, "rf", tmp_path / "run", config={"n_estimators": 5}, holdout=0.3)
    assert not (tmp_path / "run").exists()


def test_classifier_run_json_naming_a_module_runs_nothing(tmp_path) -> None:
    ts = make_toy_set(n_per_class=10)
    train_run(ts, "rf", tmp_path / "run", config={"n_estimators": 5}, holdout=0)
    path = tmp_path / "run" / "model.json"
    meta = json.loads(path.read_text())
    meta["model"] = "os:system"
    path.write_text(json.dumps(meta))
    with pytest.raises(ModelError):  # checksum first, then the name check
        load_run_model(tmp_path / "run")
    (tmp_path / "run" / MANIFEST_FILE).unlink()
    (tmp_path / "run" / "run.json").unlink()
    with pytest.raises(ModelError, match="not a complete run"):  # a bare model folder
        load_run_model(tmp_path / "run")
    from cropscope.models import Classifier

    with pytest.raises(ModelError, match="invalid model name"):  # read directly: name check
        Classifier.load(tmp_path / "run")


def test_staged_run_refuses_a_folder_that_is_not_a_run(tmp_path) -> None:
    """--out pointing at a folder of the user's own files must not delete them."""
    mine = tmp_path / "mydata"
    (mine / "sub").mkdir(parents=True)
    (mine / "samples.csv").write_text("id,label\n")
    with pytest.raises(ModelError, match="not a cropscope run"), staged_run(mine) as stage:
        finish_run(stage, _spec())
    assert sorted(p.name for p in mine.iterdir()) == ["samples.csv", "sub"]
    assert [p.name for p in tmp_path.iterdir()] == ["mydata"]  # no temporary folder left
    empty = tmp_path / "empty"
    empty.mkdir()
    with staged_run(empty) as stage:  # an empty folder is fine
        finish_run(stage, _spec())
    assert open_run(empty)


def test_a_tuning_in_progress_may_be_replaced_by_its_run(tmp_path) -> None:
    from cropscope.runs import STUDY_FILE, check_replaceable

    out = tmp_path / "tuned"
    out.mkdir()
    (out / STUDY_FILE).write_bytes(b"")
    (out / f"{STUDY_FILE}-journal").write_bytes(b"")
    check_replaceable(out)
    (out / ".git").mkdir()  # anything else, even hidden, is the user's
    with pytest.raises(ModelError, match="not a cropscope run"):
        check_replaceable(out)


def test_run_json_without_its_kind_is_named_plainly() -> None:
    from cropscope.runs import RunSpec

    data = _spec().to_dict()
    del data["kind"]
    with pytest.raises(ModelError, match="no 'kind'") as exc:
        RunSpec.from_dict(data)
    assert "__init__" not in str(exc.value)
