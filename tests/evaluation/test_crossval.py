from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import DataError, EvaluationError
from cropscope.evaluation import (
    EvaluationResult,
    cross_validate,
    evaluate_predictions,
    evaluate_split,
)
from cropscope.models import Classifier
from tests.conftest import make_toy_set


class CentroidClassifier(Classifier):
    """Nearest class centroid of the flattened series (classes absent from training: p = 0)."""

    name = "test-centroid"

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {"temperature": 0.1}

    def _fit(self, train: TimeSeriesSet, val: TimeSeriesSet | None, progress: bool) -> None:
        x = np.nan_to_num(train.values.reshape(train.n_samples, -1))
        k = len(self.card.classes)
        self.centroids = np.full((k, x.shape[1]), np.nan, dtype=np.float64)
        for c in np.unique(train.labels):
            self.centroids[c] = x[train.labels == c].mean(axis=0)

    def _predict_proba(self, ts: TimeSeriesSet) -> np.ndarray:
        x = np.nan_to_num(ts.values.reshape(ts.n_samples, -1))
        dist = np.sqrt(((x[:, None, :] - self.centroids[None]) ** 2).sum(axis=2))
        logits = np.where(np.isnan(dist), -np.inf, -dist / self.config["temperature"])
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def _save_weights(self, directory: Path) -> None:
        np.save(directory / "centroids.npy", self.centroids)

    def _load_weights(self, directory: Path) -> None:
        self.centroids = np.load(directory / "centroids.npy")


def test_fake_classifier_roundtrip(tmp_path, toy_set: TimeSeriesSet) -> None:
    model = CentroidClassifier().fit(toy_set)
    model.save(tmp_path / "m")
    back = CentroidClassifier()
    back.card = model.card
    back._load_weights(tmp_path / "m")
    assert np.array_equal(back.predict(toy_set), model.predict(toy_set))


def test_cross_validate_stratified(toy_set: TimeSeriesSet) -> None:
    res = cross_validate(CentroidClassifier, toy_set, cv=5, seed=0)
    assert isinstance(res, EvaluationResult)
    assert res.metrics["n_samples"] == 60
    assert res.overall_accuracy >= 0.95
    assert res.classes == toy_set.classes
    assert np.array_equal(res.y_true, toy_set.labels)
    assert np.array_equal(res.ids, toy_set.ids)
    assert len(res.fold_metrics) == 5
    assert sum(f["n_test"] for f in res.fold_metrics) == 60
    assert all(f["n_train"] == 48 and f["n_test"] == 12 for f in res.fold_metrics)
    assert sorted(np.bincount(res.fold).tolist()) == [12] * 5
    # pooled accuracy equals the out-of-fold hit rate; the summary averages the folds
    assert res.metrics["overall_accuracy"] == pytest.approx(np.mean(res.y_true == res.y_pred))
    oa = [f["overall_accuracy"] for f in res.fold_metrics]
    assert res.summary["overall_accuracy"]["mean"] == pytest.approx(np.mean(oa))
    assert res.summary["overall_accuracy"]["std"] == pytest.approx(np.std(oa))
    assert set(res.summary) == {"overall_accuracy", "macro_f1", "weighted_f1", "kappa"}
    assert res.config["cv"] == 5 and res.config["seed"] == 0 and res.config["group"] is None
    assert res.config["model"] == "test-centroid"
    assert res.config["model_config"] == {"temperature": 0.1}
    assert res.duration_s > 0


def test_cross_validate_is_deterministic(toy_set: TimeSeriesSet) -> None:
    ts = make_toy_set(seed=2)
    a = cross_validate(CentroidClassifier, ts, cv=3, seed=7)
    b = cross_validate(CentroidClassifier, ts, cv=3, seed=7)
    assert np.array_equal(a.fold, b.fold) and np.array_equal(a.y_pred, b.y_pred)


def test_cross_validate_by_region(toy_set: TimeSeriesSet) -> None:
    res = cross_validate(CentroidClassifier, toy_set, cv=2, group="region")
    assert res.metrics["n_samples"] == 60
    assert res.overall_accuracy >= 0.95
    assert [f["test_groups"] for f in res.fold_metrics] in (
        [["north"], ["south"]],
        [["south"], ["north"]],
    )
    regions = toy_set.group_values("region")
    for i in range(2):
        assert len(set(regions[res.fold == i])) == 1
    assert res.config["group"] == "region"
    with pytest.raises(EvaluationError, match="only 2 groups"):
        cross_validate(CentroidClassifier, toy_set, cv=5, group="region")


def test_fold_whose_train_lacks_a_class(toy_set: TimeSeriesSet) -> None:
    # class_2 lives only in the south: the fold trained on the north never sees it
    meta = toy_set.meta.copy()
    meta.loc[toy_set.labels == 2, "region"] = "south"
    ts = toy_set.replace(meta=meta)
    res = cross_validate(CentroidClassifier, ts, cv=2, group="region")
    assert res.classes == ts.classes
    assert res.metrics["n_samples"] == 60
    rows = {r["class"]: r for r in res.metrics["per_class"]}
    assert rows["class_2"]["support"] == 20 and rows["class_2"]["recall"] == 0.0
    north = next(f for f in res.fold_metrics if f["test_groups"] == ["north"])
    # class_2 is absent from the north test fold: its macro-F1 averages the other two classes
    assert north["macro_f1_classes"] == ["class_0", "class_1"]
    assert north["overall_accuracy"] >= 0.95


def test_unlabelled_samples_are_excluded(toy_set: TimeSeriesSet) -> None:
    labels = toy_set.labels.copy()
    labels[:5] = -1
    res = cross_validate(CentroidClassifier, toy_set.replace(labels=labels), cv=3)
    assert res.metrics["n_samples"] == 55
    assert np.array_equal(res.ids, toy_set.ids[5:])


def test_template_instance_and_factory(toy_set: TimeSeriesSet) -> None:
    a = cross_validate(CentroidClassifier(temperature=0.5), toy_set, cv=3)
    b = cross_validate(lambda: CentroidClassifier(temperature=0.5), toy_set, cv=3)
    assert a.config["model_config"] == {"temperature": 0.5}
    assert np.array_equal(a.y_pred, b.y_pred)


def test_progress_goes_to_stderr(toy_set: TimeSeriesSet, capsys) -> None:
    cross_validate(CentroidClassifier, toy_set, cv=3, progress=True)
    captured = capsys.readouterr()
    assert "fold 3/3" in captured.err and captured.out == ""
    cross_validate(CentroidClassifier, toy_set, cv=3)
    assert capsys.readouterr().err == ""


def test_cross_validate_errors(toy_set: TimeSeriesSet) -> None:
    small = toy_set.subset(np.r_[0:40, 40:43])
    with pytest.raises(EvaluationError, match="class 'class_2' has 3 samples"):
        cross_validate(CentroidClassifier, small, cv=5)
    unlabelled = TimeSeriesSet(values=toy_set.values, bands=toy_set.bands)
    with pytest.raises(EvaluationError, match="no labels"):
        cross_validate(CentroidClassifier, unlabelled)
    # a fold that cannot be trained names the fold
    meta = toy_set.meta.copy()
    meta["region"] = np.where(toy_set.labels == 0, "north", "south")
    with pytest.raises(DataError, match=r"fold \d/2: training data need at least two classes"):
        cross_validate(CentroidClassifier, toy_set.replace(meta=meta), cv=2, group="region")


#: top-level keys of EvaluationResult.to_dict(), also checked in the written report
RESULT_KEYS = (
    "overall_accuracy",
    "macro_f1",
    "weighted_f1",
    "kappa",
    "n_samples",
    "folds",
    "summary",
    "per_class",
    "confusion_matrix",
    "classes",
    "config",
)


def test_to_dict_is_json_ready(toy_set: TimeSeriesSet) -> None:
    res = cross_validate(CentroidClassifier, toy_set, cv=3, group=None)
    d = json.loads(json.dumps(res.to_dict()))
    for key in RESULT_KEYS:
        assert key in d
    assert d["n_samples"] == 60 and len(d["folds"]) == 3
    assert d["folds"][0]["fold"] == 1 and "confusion_matrix" in d["folds"][0]


def _reordered(ts: TimeSeriesSet, classes: list[str]) -> TimeSeriesSet:
    return TimeSeriesSet.from_labels(
        ts.values, ts.bands, list(ts.label_names), classes=classes, dates=ts.dates, meta=ts.meta
    )


def test_evaluate_split_matches_classes_by_name() -> None:
    train = make_toy_set(seed=0)
    test = _reordered(make_toy_set(seed=1), ["class_2", "class_0", "class_1"])
    res = evaluate_split(CentroidClassifier, train, test)
    assert res.classes == ["class_0", "class_1", "class_2"]
    assert res.overall_accuracy >= 0.95
    names = np.asarray(res.classes)[res.y_true]
    assert np.array_equal(names, test.label_names.astype(str))
    assert res.config["mode"] == "split" and res.config["n_test"] == 60
    assert res.fold_metrics == [] and res.summary == {}


def test_evaluate_split_unseen_class_counts_as_error() -> None:
    train = make_toy_set(n_classes=3, seed=0)
    test = make_toy_set(n_classes=4, seed=1)  # class_3 never seen in training
    with pytest.warns(UserWarning, match=r"'class_3' \(20 samples\)"):
        res = evaluate_split(CentroidClassifier, train, test)
    assert res.classes == ["class_0", "class_1", "class_2", "class_3"]
    assert res.metrics["n_samples"] == 80
    rows = {r["class"]: r for r in res.metrics["per_class"]}
    assert rows["class_3"]["support"] == 20 and rows["class_3"]["recall"] == 0.0
    assert res.metrics["confusion_matrix"][3][3] == 0
    assert res.overall_accuracy <= 60 / 80
    assert res.config["unseen_classes"] == ["class_3"]


def test_evaluate_split_with_fitted_model(toy_set: TimeSeriesSet) -> None:
    model = CentroidClassifier().fit(toy_set)
    res = evaluate_split(model, None, make_toy_set(seed=3))
    assert res.overall_accuracy >= 0.95 and res.config["n_train"] is None
    with pytest.raises(EvaluationError, match="needs a training set"):
        evaluate_split(CentroidClassifier, None, toy_set)


def test_evaluate_predictions_codes_and_names() -> None:
    classes = ["a", "b", "c"]
    by_code = evaluate_predictions([0, 1, 2, 2, -1], [0, 2, 2, 2, 0], classes)
    by_name = evaluate_predictions(["a", "b", "c", "c", ""], ["a", "c", "c", "c", "a"], classes)
    assert by_code.metrics == by_name.metrics
    assert by_code.metrics["n_samples"] == 4
    assert by_code.overall_accuracy == pytest.approx(0.75)
    assert by_code.to_dict()["config"] == {"mode": "predictions"}
    with pytest.raises(EvaluationError, match="not among the classes"):
        evaluate_predictions(["a", "z"], ["a", "a"], classes)
