"""Classifier runs resume: an interrupted ``train_run`` / ``train_scene`` leaves the old run
untouched and its checkpoint folder beside it; called again it continues and delivers the
run an uninterrupted training gives; the checkpoint folder is then removed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from cropscope.engine.checkpoints import read_last
from cropscope.engine.tasks import ClassificationTask
from cropscope.errors import ModelError
from cropscope.hyperspectral.scene import train_scene
from cropscope.runs import checkpoint_folder, open_run
from cropscope.training.rundir import load_run, train_run
from tests.conftest import make_toy_set
from tests.hyperspectral.test_scene import TINY_ST, make_scene

TEMPCNN = {"epochs": 4, "batch_size": 16, "n_models": 2, "hidden": 8, "device": "cpu"}


class _Killed(Exception):
    pass


def _kill_at(monkeypatch: pytest.MonkeyPatch, nth: int) -> None:
    """Raise after the ``nth`` checkpoint write of this process (a crash mid-training)."""
    real = ClassificationTask._write_checkpoint
    count = {"n": 0}

    def write_then_die(self: ClassificationTask, epoch: int, **kw: bool) -> None:
        real(self, epoch, **kw)
        count["n"] += 1
        if count["n"] == nth:
            raise _Killed

    monkeypatch.setattr(ClassificationTask, "_write_checkpoint", write_then_die)


def test_pixel_classifier_run_resumes_to_the_uninterrupted_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ts = make_toy_set(n_per_class=12)
    ref = train_run(ts, "tempcnn", tmp_path / "ref", config=TEMPCNN, holdout=0.25)
    out = tmp_path / "run"
    train_run(ts, "logreg", out, holdout=0)  # an older run at the target
    with monkeypatch.context() as m:
        _kill_at(m, 6)  # network 2 of 2, after its second epoch
        with pytest.raises(_Killed):
            train_run(ts, "tempcnn", out, config=TEMPCNN, holdout=0.25)
    assert open_run(out).spec.model["name"] == "logreg"  # the old run is untouched
    folder = checkpoint_folder(out)
    assert read_last(folder / "network-0")["epoch"] == 4
    assert read_last(folder / "network-1")["epoch"] == 2
    with pytest.raises(ModelError, match="changed"):  # other data: refused, not mixed
        train_run(make_toy_set(n_per_class=12, seed=5), "tempcnn", out, config=TEMPCNN,
                  holdout=0.25)
    res = train_run(ts, "tempcnn", out, config=TEMPCNN, holdout=0.25)
    assert not folder.exists()
    assert open_run(out).spec.model["name"] == "tempcnn"
    np.testing.assert_array_equal(load_run(out).predict_proba(ts),
                                  load_run(ref.run_dir).predict_proba(ts))
    assert res.metrics is not None and ref.metrics is not None
    res.metrics.pop("duration_s", None)
    ref.metrics.pop("duration_s", None)
    assert res.metrics == ref.metrics


def test_patch_classifier_run_resumes(tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    scene = make_scene()
    config = {**TINY_ST, "epochs": 3}
    ref = train_scene("spectral-transformer", scene, tmp_path / "ref", config=config)
    with monkeypatch.context() as m:
        _kill_at(m, 2)
        with pytest.raises(_Killed):
            train_scene("spectral-transformer", scene, tmp_path / "run", config=config)
    assert not (tmp_path / "run").exists()
    assert read_last(checkpoint_folder(tmp_path / "run") / "network-0")["epoch"] == 2
    train_scene("spectral-transformer", scene, tmp_path / "run", config=config)
    assert open_run(tmp_path / "run").spec.kind == "classifier"
    samples = scene.samples(np.ones(scene.shape, dtype=bool), 3)
    np.testing.assert_array_equal(load_run(tmp_path / "run").predict_proba(samples),
                                  ref.model.predict_proba(samples))
