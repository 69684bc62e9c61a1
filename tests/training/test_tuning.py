"""Tuning: nested CV is not the tuned-on score, studies resume after a kill, changed inputs
are refused, and the best configuration is a run that loads and predicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import ModelError
from cropscope.models import base as model_base
from cropscope.models import get_model_class
from cropscope.models.linear import LogisticRegression
from cropscope.runs import open_run
from cropscope.training import load_run
from cropscope.training.tuning import SEARCH_SPACES, search_space, tune_model

optuna = pytest.importorskip("optuna")

SPACE = {"C": {"type": "float", "low": 1e-3, "high": 10.0, "log": True}}


def noisy_set(n_per_class: int = 40, seed: int = 0) -> TimeSeriesSet:
    """Three overlapping classes (no model is perfect on them), regions for groups."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    t = np.arange(8)
    values, labels = [], []
    for k in range(3):
        for _ in range(n_per_class):
            curve = np.exp(-0.5 * ((t - 2 - 1.5 * k + rng.normal(0, 1.2)) / 1.5) ** 2)
            values.append(np.stack([curve, 0.3 * k + 0 * curve], axis=1)
                          + rng.normal(0, 0.35, (t.size, 2)))
            labels.append(f"c{k}")
    regions = [f"r{i % 6}" for i in range(len(labels))]
    return TimeSeriesSet.from_labels(np.asarray(values, dtype=np.float32), ["a", "b"], labels,
                                     meta=pd.DataFrame({"region": regions}))


class SpyLogreg(LogisticRegression):
    """Logistic regression that records the ids of every fit and prediction."""

    calls: ClassVar[list[tuple[str, frozenset[Any]]]] = []

    def fit(self, train: TimeSeriesSet, *args: Any, **kwargs: Any) -> SpyLogreg:
        assert train.ids is not None
        SpyLogreg.calls.append(("fit", frozenset(train.ids.tolist())))
        super().fit(train, *args, **kwargs)
        return self

    def predict_proba(self, ts: TimeSeriesSet) -> np.ndarray:
        assert ts.ids is not None
        SpyLogreg.calls.append(("predict", frozenset(ts.ids.tolist())))
        return super().predict_proba(ts)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> type[SpyLogreg]:
    monkeypatch.setitem(model_base._REGISTERED, "spy-logreg", SpyLogreg)
    monkeypatch.setattr(SpyLogreg, "name", "spy-logreg")
    SpyLogreg.calls = []
    return SpyLogreg


def test_nested_figure_is_scored_on_folds_no_trial_saw(spy: type[SpyLogreg],
                                                       tmp_path: Path) -> None:
    ts = noisy_set()
    trials, cv, inner = 4, 3, 2
    result = tune_model(ts, "spy-logreg", tmp_path / "run", space=SPACE, trials=trials,
                        cv=cv, inner_cv=inner, seed=0, prune=False)
    report = result.report
    # the honest figure and the tuned-on figure are reported apart, and they differ
    assert 0.4 < result.nested_score < 1.0 and 0.4 < result.inner_best < 1.0
    assert result.nested_score != result.inner_best
    assert report["nested"]["mean"] == pytest.approx(
        np.mean([f["score"] for f in report["nested"]["folds"]]))
    assert "optimistic" in report["inner_best"]["what"]

    lab = result.labelled
    assert lab is not None and lab.ids is not None
    calls = spy.calls
    per_study = trials * inner * 2  # a fit and a prediction per inner fold and trial
    for i, (tr, te) in enumerate(result.folds):
        train_ids, test_ids = set(lab.ids[tr].tolist()), set(lab.ids[te].tolist())
        chunk = calls[i * (per_study + 2):(i + 1) * (per_study + 2)]
        tuning, (refit, score) = chunk[:per_study], chunk[per_study:]
        for _, ids in tuning:  # every trial fitted and scored inside the outer training part
            assert ids <= train_ids and not ids & test_ids
        assert refit == ("fit", frozenset(train_ids))
        assert score == ("predict", frozenset(test_ids))  # the outer fold, seen only here
    # then the final study on everything, and the final model on everything
    final = calls[cv * (per_study + 2):]
    assert len(final) == per_study + 1 and final[-1] == ("fit", frozenset(lab.ids.tolist()))
    # the pooled outer predictions cover every sample once
    assert result.evaluation.fold is not None and (result.evaluation.fold >= 0).all()


def test_best_configuration_is_a_run_that_loads_and_predicts(tmp_path: Path) -> None:
    ts = noisy_set(n_per_class=20)
    result = tune_model(ts, "logreg", tmp_path / "run", trials=3, cv=2, inner_cv=2,
                        config={"max_iter": 200})
    run = open_run(tmp_path / "run")  # complete, verified against its manifest
    assert "tuning.json" in run.files and ".study.db" not in run.files
    assert (tmp_path / "run" / ".study.db").is_file()
    assert run.spec.metrics is not None
    assert run.spec.metrics["config"]["mode"] == "nested cross-validation"
    model = load_run(tmp_path / "run")
    assert model.config["C"] == result.report["final"]["best_params"]["C"]
    assert model.config["max_iter"] == 200  # fixed by config, not searched
    np.testing.assert_array_equal(model.predict(ts), result.model.predict(ts))
    saved = json.loads((tmp_path / "run" / "tuning.json").read_text())
    assert saved["nested"]["mean"] == result.nested_score
    assert set(saved["space"]) == {"C", "class_weight"}
    assert not (tmp_path / ".run.checkpoint").exists()  # lock and checkpoints cleaned up


def test_changed_data_refuses_to_resume(tmp_path: Path) -> None:
    ts = noisy_set(n_per_class=15)
    args: dict[str, Any] = {"space": SPACE, "trials": 2, "cv": 2, "inner_cv": 2}
    tune_model(ts, "logreg", tmp_path / "run", **args)
    changed = ts.replace(values=ts.values + np.float32(0.01))
    with pytest.raises(ModelError, match=r"the data changed.*--no-resume"):
        tune_model(changed, "logreg", tmp_path / "run", **args)
    with pytest.raises(ModelError, match="search space"):
        tune_model(ts, "logreg", tmp_path / "run", **{**args, "space": {"C": {
            "type": "float", "low": 0.1, "high": 1.0}}})
    fresh = tune_model(changed, "logreg", tmp_path / "run", resume=False, **args)
    assert fresh.report["final"]["n_trials"] == 2


def test_rerunning_a_finished_tuning_runs_no_trial(spy: type[SpyLogreg],
                                                   tmp_path: Path) -> None:
    ts = noisy_set(n_per_class=15)
    args: dict[str, Any] = {"space": SPACE, "trials": 2, "cv": 2, "inner_cv": 2}
    first = tune_model(ts, "spy-logreg", tmp_path / "run", **args)
    spy.calls = []
    again = tune_model(ts, "spy-logreg", tmp_path / "run", **args)
    # no trial and no outer refit again: only the final model is trained once more
    assert [kind for kind, _ in spy.calls] == ["fit"]
    assert again.report["nested"] == first.report["nested"]
    spy.calls = []
    more = tune_model(ts, "spy-logreg", tmp_path / "run", **{**args, "trials": 3})
    assert more.report["final"]["n_trials"] == 3  # a larger count extends the studies
    fits = sum(kind == "fit" for kind, _ in spy.calls)
    assert 3 * 2 + 1 <= fits <= 3 * 2 + 2 + 1  # one trial per study (+ changed outer refits)


_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    from cropscope.models import register_model
    from cropscope.models.linear import LogisticRegression
    from cropscope.training.tuning import tune_model
    from tests.training.test_tuning import SPACE, noisy_set

    @register_model("counting-logreg")
    class Counting(LogisticRegression):
        def fit(self, train, *args, **kwargs):
            path = os.environ["FIT_COUNT"]
            n = int(open(path).read()) + 1 if os.path.exists(path) else 1
            open(path, "w").write(str(n))
            if n == int(os.environ.get("KILL_AT", "0")):
                os.kill(os.getpid(), signal.SIGKILL)  # a hard kill in the middle of a trial
            return super().fit(train, *args, **kwargs)

    result = tune_model(noisy_set(n_per_class=15), "counting-logreg", sys.argv[1],
                        space=SPACE, trials=3, cv=2, inner_cv=2, prune=False)
    print(json.dumps(result.report))
""")


def _run_script(tmp_path: Path, out: Path, count: Path, kill_at: int | None
                ) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "tune_script.py"
    script.write_text(_SCRIPT.format(root=str(Path(__file__).resolve().parents[2])))
    env = {**os.environ, "FIT_COUNT": str(count), "OMP_NUM_THREADS": "1",
           "CROPSCOPE_THREADS": "1"}
    env.pop("KILL_AT", None)
    if kill_at is not None:
        env["KILL_AT"] = str(kill_at)
    return subprocess.run([sys.executable, str(script), str(out)], capture_output=True,
                          text=True, timeout=300, env=env)


def _trials(db: Path) -> dict[str, list[Any]]:
    storage = f"sqlite:///{db}"
    out = {}
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        out[name] = study.get_trials(deepcopy=True)
    return out


def test_a_killed_study_resumes_without_rerunning_finished_trials(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    out, count = tmp_path / "run", tmp_path / "fits.txt"
    # outer-1: 3 trials x 2 inner fits + 1 outer refit = fits 1-7; outer-2: trial 0 is fits
    # 8-9, trial 1 starts with fit 10: killed there
    killed = _run_script(tmp_path, out, count, kill_at=10)
    assert killed.returncode == -9, killed.stderr
    assert not (out / "manifest.json").exists()  # no run was written
    before = _trials(out / ".study.db")
    done = {name: [t for t in trials if t.state == TrialState.COMPLETE]
            for name, trials in before.items()}
    assert [len(done["outer-1"]), len(done["outer-2"])] == [3, 1]
    assert [t.state for t in before["outer-2"]][-1] == TrialState.RUNNING  # cut short

    count.unlink()
    resumed = _run_script(tmp_path, out, count, kill_at=None)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    after = _trials(out / ".study.db")
    for name in ("outer-1", "outer-2", "final"):
        complete = [t for t in after[name] if t.state == TrialState.COMPLETE]
        assert len(complete) == 3, name  # N trials in every study
    for name, trials in done.items():  # the finished trials were kept, not run again
        kept = {t.number: t for t in after[name]}
        for t in trials:
            assert kept[t.number].state == TrialState.COMPLETE
            assert kept[t.number].params == t.params
            assert kept[t.number].datetime_complete == t.datetime_complete
    stale = after["outer-2"][1]
    assert stale.state == TrialState.FAIL  # the killed trial, redone as a new one
    # fits of the second run: the 2 missing outer-2 trials and the 3 final ones (2 inner
    # fits each), outer-2's refit (outer-1's was stored) and the final model
    assert int(count.read_text()) == (2 + 3) * 2 + 1 + 1
    assert report["nested"]["folds"][0]["n_trials"] == 3
    assert open_run(out).spec.name == "counting-logreg"


def test_search_spaces_name_real_options() -> None:
    for model, space in SEARCH_SPACES.items():
        defaults = get_model_class(model).default_config()
        assert set(space) <= set(defaults), model
        assert search_space(model) == search_space(model, space=space)
    wrapped = search_space("resampled", {"base": "lightgbm"})
    assert wrapped["resample"]["choices"] == ["none", "over", "under", "smote"]
    assert "base_config.learning_rate" in wrapped
    fixed = search_space("resampled", {"base": "lightgbm", "resample": "smote",
                                       "base_config": {"learning_rate": 0.1}})
    assert "resample" not in fixed and "base_config.learning_rate" not in fixed


@pytest.mark.parametrize(("space", "message"), [
    ({"nope": {"type": "float", "low": 0, "high": 1}}, "not an option"),
    ({"C": {"type": "float", "low": 1, "high": 0}}, "below"),
    ({"C": {"type": "float", "low": 0, "high": 1, "log": True}}, "log scale"),
    ({"C": {"type": "gaussian"}}, "type"),
    ({"C": {"type": "categorical", "choices": []}}, "non-empty"),
    ({"C": {"type": "float", "low": 0, "high": 1, "code": "x"}}, "unknown field"),
    ({"seed": {"type": "int", "low": 0, "high": 9}}, "not tuned"),
    ({"max_iter": {"type": "int", "low": 1.5, "high": 9}}, "int numbers"),
])
def test_bad_search_spaces(space: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        search_space("logreg", space=space)


@pytest.mark.parametrize(("model", "config", "space", "message"), [
    ("logreg", {}, {"max_iter": {"type": "float", "low": 10.0, "high": 90.0}}, "integer"),
    ("logreg", {}, {"C": {"type": "categorical", "choices": [1.0, "big"]}}, "'big'"),
    ("resampled", {"base": "logreg"},
     {"base_config.nope": {"type": "float", "low": 0.1, "high": 1.0}}, "nope"),
])
def test_values_the_model_refuses_fail_before_any_trial(
        model: str, config: dict[str, Any], space: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError, match=rf"is refused.*{message}"):
        search_space(model, config, space)


def test_a_damaged_study_file_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".study.db").write_bytes(b"not a database" * 100)
    args: dict[str, Any] = {"space": SPACE, "trials": 2, "cv": 2, "inner_cv": 2}
    with pytest.raises(ModelError, match=r"not a usable Optuna study file.*--no-resume"):
        tune_model(noisy_set(n_per_class=10), "logreg", tmp_path / "run", **args)
    fresh = tune_model(noisy_set(n_per_class=10), "logreg", tmp_path / "run", resume=False,
                       **args)
    assert fresh.report["final"]["n_trials"] == 2


def test_missing_optuna_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(ModelError, match=r"pip install 'cropscope\[tune\]'"):
        tune_model(noisy_set(n_per_class=10), "logreg", tmp_path / "run", space=SPACE,
                   trials=1, cv=2, inner_cv=2)
    assert not (tmp_path / "run").exists()


def test_model_without_a_space_or_fully_fixed_is_refused() -> None:
    with pytest.raises(ModelError, match="no built-in search space"):
        search_space("cropnet")
    with pytest.raises(ModelError, match="nothing to tune"):
        search_space("logreg", {"C": 1.0, "class_weight": None})


def test_grouped_nested_cv_keeps_groups_apart(tmp_path: Path) -> None:
    ts = noisy_set(n_per_class=12)
    result = tune_model(ts, "logreg", tmp_path / "run", space=SPACE, trials=2, cv=3,
                        inner_cv=2, group="region")
    lab = result.labelled
    assert lab is not None
    regions = lab.group_values("region")
    for tr, te in result.folds:
        assert not set(regions[tr]) & set(regions[te])
    assert result.report["group"] == "region"
