"""Scene tuning: trials never see the test region, the guard keeps neighbourhoods apart,
the reported figure is the test region's, and the study resumes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from cropscope.data.patches import PatchSet
from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import EvaluationError, ModelError
from cropscope.evaluation.spatial import make_spatial_split
from cropscope.hyperspectral.scene import evaluate_scene
from cropscope.hyperspectral.tuning import SCENE_FEATURES, scene_search_space, tune_scene
from cropscope.models import Classifier
from cropscope.models import base as model_base
from cropscope.models.discriminant import LinearDiscriminant
from cropscope.runs import open_run
from tests.hyperspectral.test_scene import make_scene

optuna = pytest.importorskip("optuna")

SPLIT = "blocks:6"
SPACE = {"shrinkage": {"type": "float", "low": 0.0, "high": 1.0},
         "patch_size": {"type": "categorical", "choices": [1, 3]}}


def _pixels(data: TimeSeriesSet | PatchSet) -> set[tuple[int, int]]:
    meta = data.meta
    assert meta is not None
    return set(zip(meta["row"].tolist(), meta["col"].tolist(), strict=True))


class SpyLDA(LinearDiscriminant):
    """LDA that records the pixels of every fit and prediction, and its patch size."""

    calls: ClassVar[list[tuple[str, int, set[tuple[int, int]]]]] = []

    def fit(self, train: Any, *args: Any, **kwargs: Any) -> SpyLDA:
        SpyLDA.calls.append(("fit", self.patch_size, _pixels(train)))
        super().fit(train, *args, **kwargs)
        return self

    def predict_proba(self, ts: Any) -> np.ndarray:
        SpyLDA.calls.append(("predict", self.patch_size, _pixels(ts)))
        return super().predict_proba(ts)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> type[SpyLDA]:
    monkeypatch.setitem(model_base._REGISTERED, "spy-lda", SpyLDA)
    monkeypatch.setattr(SpyLDA, "name", "spy-lda")
    SpyLDA.calls = []
    return SpyLDA


def test_trials_never_see_the_test_region_and_the_guard_holds(spy: type[SpyLDA],
                                                              tmp_path: Path) -> None:
    scene = make_scene(h=36, w=36)
    trials, inner = 5, 3
    report = tune_scene(scene, "spy-lda", tmp_path / "run", split=SPLIT, space=SPACE,
                        trials=trials, inner_cv=inner, seed=0, prune=False)
    sp = make_spatial_split(SPLIT, scene.labels, seed=0)
    test = {(int(r), int(c)) for r, c in zip(*np.nonzero(np.asarray(sp.test)), strict=True)}
    calls = spy.calls
    searched = calls[:trials * inner * 2]
    assert len(searched) == trials * inner * 2
    for (kind, size, fit_px), (kind2, size2, held_px) in zip(searched[::2], searched[1::2],
                                                             strict=True):
        assert (kind, kind2) == ("fit", "predict") and size == size2
        assert not (fit_px | held_px) & test  # the test region is never touched by a trial
        assert not fit_px & held_px
        gap = min(max(abs(a - c), abs(b - d)) for a, b in fit_px for c, d in held_px)
        assert gap > size // 2  # no training neighbourhood contains a held-out pixel
    # then the best configuration: trained on the training region, scored on the test region
    (fit_kind, _, final_fit), (pred_kind, _, final_pred) = calls[trials * inner * 2:]
    assert (fit_kind, pred_kind) == ("fit", "predict")
    assert final_pred == {p for p in test if scene.labels[p] > 0}
    assert not final_fit & test
    # the test figure is evaluate_scene's for the chosen configuration, apart from the
    # optimistic inner figure
    best = report["final"]["config"]
    again = evaluate_scene("lda", scene, SPLIT, seed=0, config=best)
    assert report["test"]["value"] == pytest.approx(again.metrics["overall_accuracy"])
    assert report["test"]["average_accuracy"] == pytest.approx(
        again.metrics["average_accuracy"])
    assert "optimistic" in report["inner_best"]["what"]
    assert report["inner_best"]["n_trials"] == trials
    assert report["inner_best"]["value"] == pytest.approx(
        np.mean(report["inner_best"]["fold_scores"]))


def test_the_run_loads_verifies_and_carries_the_report(tmp_path: Path) -> None:
    scene = make_scene(h=30, w=30)
    out = tmp_path / "run"
    report = tune_scene(scene, "lda", out, split=SPLIT, trials=3, inner_cv=3, seed=1)
    run = open_run(out)  # checksums verified
    assert run.spec.name == "lda"
    assert "tuning.json" in (out / "manifest.json").read_text()
    on_disk = json.loads((out / "tuning.json").read_text())
    assert on_disk["test"] == report["test"] and on_disk["final"] == report["final"]
    model = Classifier.load(out)
    assert model.config["shrinkage"] == report["final"]["config"]["shrinkage"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall_accuracy"] == pytest.approx(report["test"]["overall_accuracy"])


def test_a_finished_tuning_resumes_extends_and_refuses_changed_data(spy: type[SpyLDA],
                                                                      tmp_path: Path) -> None:
    scene = make_scene(h=30, w=30)
    out = tmp_path / "run"
    args: dict[str, Any] = {"split": SPLIT, "space": SPACE, "inner_cv": 2, "seed": 0}
    first = tune_scene(scene, "spy-lda", out, trials=2, **args)
    spy.calls = []
    again = tune_scene(scene, "spy-lda", out, trials=2, **args)
    assert [kind for kind, _, _ in spy.calls] == ["fit", "predict"]  # no trial, final only
    assert again["final"] == first["final"] and again["test"] == first["test"]
    spy.calls = []
    more = tune_scene(scene, "spy-lda", out, trials=3, **args)
    assert more["inner_best"]["n_trials"] == 3
    assert sum(kind == "fit" for kind, _, _ in spy.calls) == 2 + 1  # one trial, the final
    changed = make_scene(h=30, w=30, seed=5)
    with pytest.raises(ModelError, match="the data"):
        tune_scene(changed, "spy-lda", out, trials=3, **args)
    fresh = tune_scene(changed, "spy-lda", out, trials=2, resume=False, **args)
    assert fresh["inner_best"]["n_trials"] == 2


def test_scene_search_space_uses_spectral_features_and_neighbourhoods() -> None:
    space = scene_search_space("lightgbm")
    assert space["features"]["choices"] == SCENE_FEATURES
    assert space["patch_size"]["choices"] == [1, 3, 5]
    fixed = scene_search_space("svm", {"patch_size": 3, "features": ["values"]})
    assert set(fixed) == {"C"}
    with pytest.raises(ModelError, match="no built-in search space"):
        scene_search_space("spectral-cnn")  # a network: give its space with --space
    given = scene_search_space("spectral-cnn", space={"lr": {"type": "float", "low": 1e-4,
                                                             "high": 1e-2, "log": True}})
    assert set(given) == {"lr"}
    with pytest.raises(ModelError, match="no built-in search space"):
        scene_search_space("rf", {"n_estimators": 10, "max_features": "sqrt",
                                  "min_samples_leaf": 1, "patch_size": 1})


def test_too_few_training_groups_for_the_inner_folds(tmp_path: Path) -> None:
    scene = make_scene(h=24, w=24)
    with pytest.raises(EvaluationError, match="inner CV needs at least"):
        tune_scene(scene, "lda", tmp_path / "run", split="blocks:12", trials=1, inner_cv=9)
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_tune_command_on_a_scene_dataset(real_data_dir, tmp_path: Path) -> None:
    """``cropscope tune --dataset SCENE --split ...`` takes the scene route and prints the
    test figure apart from the inner one."""
    from click.testing import CliRunner

    from cropscope.cli.main import cli

    out = tmp_path / "run"
    res = CliRunner().invoke(cli, [
        "--threads", "1", "tune", "--dataset", "enmap-potsdam", "--split", "tiles",
        "--model", "lda", "--trials", "2", "--inner-cv", "3", "--out", str(out), "--json",
        "--set", "patch_size=1", "--set", 'features=["values"]'])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["split"] == "tiles" and report["inner_groups"]["unit"] == "tiles"
    assert report["test"]["n_samples"] == 660
    assert 0.6 < report["test"]["overall_accuracy"] < 1.0
    open_run(out)
