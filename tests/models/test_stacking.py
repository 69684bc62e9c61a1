"""Stacked ensemble: out-of-fold meta features, save/load, and no worse than its members."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import ModelError
from cropscope.models import Classifier, create_model
from cropscope.models import base as model_base
from cropscope.models.calibration import tempered
from tests.conftest import make_toy_set

FAST = [{"model": "rf", "config": {"n_estimators": 15}},
        {"model": "logreg", "config": {}}]


class Memorise(Classifier):
    """One-hot on the label of a series it was trained on, uniform on any other series."""

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {"seed": 0}

    def _fit(self, train: TimeSeriesSet, val: TimeSeriesSet | None, progress: bool) -> None:
        assert train.labels is not None
        self.seen_ = {v.tobytes(): int(y) for v, y in zip(train.values, train.labels,
                                                             strict=True)}

    def _predict_proba(self, ts: TimeSeriesSet) -> np.ndarray:
        k = len(self.classes)
        out = np.full((ts.n_samples, k), 1.0 / k)
        for i, v in enumerate(ts.values):
            label = self.seen_.get(v.tobytes())
            if label is not None:
                out[i] = 0.0
                out[i, label] = 1.0
        return out

    def _save_weights(self, directory: Path) -> None:  # pragma: no cover - not saved here
        raise NotImplementedError

    def _load_weights(self, directory: Path) -> None:  # pragma: no cover
        raise NotImplementedError


@pytest.fixture
def memorise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(model_base._REGISTERED, "memorise", Memorise)
    monkeypatch.setattr(Memorise, "name", "memorise")


def test_out_of_fold_probabilities_never_come_from_a_model_that_saw_the_sample(
    memorise: None,
) -> None:
    train = make_toy_set(n_per_class=12, seed=1)
    model = create_model("stacking", members=["memorise", "memorise"], cv=4).fit(train)
    assert model.oof_ is not None and model.oof_fold_ is not None
    # a memorising member is one-hot on what it trained on: every out-of-fold row is uniform
    np.testing.assert_allclose(model.oof_, 1.0 / 3)
    assert sorted(np.unique(model.oof_fold_).tolist()) == [0, 1, 2, 3]
    # the final members trained on everything, so they do recognise the training samples
    features = model.meta_features(train)
    assert train.labels is not None
    np.testing.assert_array_equal(features[:, :3].argmax(axis=1), train.labels)
    assert features.max() == 1.0


def test_inner_folds_keep_groups_together() -> None:
    train = make_toy_set(n_per_class=12, seed=1)  # regions alternate north/south
    model = create_model("stacking", members=FAST, cv=2, group="region").fit(train)
    assert model.oof_fold_ is not None
    regions = train.group_values("region")
    for region in ("north", "south"):
        assert np.unique(model.oof_fold_[regions == region]).size == 1


def test_save_load_round_trip_gives_identical_probabilities(tmp_path: Path) -> None:
    train, test = make_toy_set(n_per_class=15, seed=1), make_toy_set(n_per_class=6, seed=2)
    model = create_model("stacking", members=FAST, cv=3).fit(train)
    proba = model.predict_proba(test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    model.save(tmp_path / "stack")
    loaded = Classifier.load(tmp_path / "stack")
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.predict_proba(test), proba)


def test_damaged_meta_file_is_a_model_error(tmp_path: Path) -> None:
    model = create_model("stacking", members=FAST, cv=3).fit(make_toy_set(n_per_class=9))
    model.save(tmp_path / "stack")
    with open(tmp_path / "stack" / "meta.npz", "wb") as fh:
        np.savez(fh, coef=np.zeros((3, 4)), intercept=np.zeros(3), classes=np.arange(3))
    with pytest.raises(ModelError, match="does not fit"):
        Classifier.load(tmp_path / "stack")


def _noisy(n_per_class: int, seed: int) -> TimeSeriesSet:
    """Overlapping classes: a seasonal peak (seen best by the forest's features) and a level
    shift, with noise, so no member is perfect."""
    rng = np.random.default_rng(seed)
    t = np.arange(12)
    values, labels = [], []
    for k in range(3):
        peak = 3 + 2.5 * k
        for _ in range(n_per_class):
            curve = np.exp(-0.5 * ((t - peak + rng.normal(0, 1.5)) / 2.0) ** 2)
            series = np.stack([curve + 0.15 * k, 0.5 * curve], axis=1)
            values.append(series + rng.normal(0, 0.25, series.shape))
            labels.append(f"c{k}")
    return TimeSeriesSet.from_labels(np.asarray(values, dtype=np.float32), ["a", "b"], labels)


def test_stacking_is_no_worse_than_its_worst_member() -> None:
    train, test = _noisy(60, seed=0), _noisy(60, seed=1)
    assert test.labels is not None
    members = [{"model": "rf", "config": {"n_estimators": 60, "n_jobs": 1}},
               {"model": "logreg", "config": {"C": 0.1}}]
    accuracy = {}
    for i, spec in enumerate(members):
        m = create_model(spec["model"], **{**spec["config"], "seed": i}).fit(train)
        accuracy[spec["model"]] = float((m.predict(test) == test.labels).mean())
    stack = create_model("stacking", members=members, cv=5).fit(train)
    stacked = float((stack.predict(test) == test.labels).mean())
    assert max(accuracy.values()) < 1.0  # a problem where combining can matter
    assert stacked >= min(accuracy.values()), (stacked, accuracy)


def test_temperature_meta_is_the_mean_of_tempered_members(tmp_path: Path) -> None:
    train, test = make_toy_set(n_per_class=15, seed=1), make_toy_set(n_per_class=6, seed=2)
    model = create_model("stacking", members=FAST, cv=3, meta="temperature").fit(train)
    t = model.temperature_
    assert t.shape == (2,) and (t > 0).all()
    assert model.card is not None
    assert model.card.extra["temperatures"] == [round(float(x), 4) for x in t]
    k = len(model.classes)
    features = model.meta_features(test)
    expected = (tempered(features[:, :k], t[0]) + tempered(features[:, k:], t[1])) / 2
    proba = model.predict_proba(test)
    np.testing.assert_allclose(proba, expected, rtol=1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    model.save(tmp_path / "stack")
    loaded = Classifier.load(tmp_path / "stack")
    np.testing.assert_array_equal(loaded.predict_proba(test), proba)
    np.testing.assert_array_equal(loaded.temperature_, t)


@pytest.mark.parametrize("temperature", [np.array([1.0, -2.0]), np.array([1.0]),
                                         np.array([1.0, np.nan]), np.array([1, 2])])
def test_damaged_temperature_file_is_a_model_error(tmp_path: Path,
                                                   temperature: np.ndarray) -> None:
    model = create_model("stacking", members=FAST, cv=3, meta="temperature")
    model.fit(make_toy_set(n_per_class=9))
    model.save(tmp_path / "stack")
    with open(tmp_path / "stack" / "meta.npz", "wb") as fh:
        np.savez(fh, temperature=temperature)
    with pytest.raises(ModelError, match="does not fit"):
        Classifier.load(tmp_path / "stack")


@pytest.mark.parametrize(("config", "message"), [
    ({"members": []}, "non-empty"),
    ({"members": [{"model": "stacking"}]}, "cannot include another stacking"),
    ({"members": [{"model": "nope"}]}, "unknown model"),
    ({"members": [{"model": "rf", "config": {"n_estimators": 0}}]}, "n_estimators"),
    ({"meta": "forest"}, "meta"),
    ({"meta_C": 0}, "meta_C"),
    ({"cv": 1}, "cv"),
    ({"group": 3}, "group"),
])
def test_bad_configs(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        create_model("stacking", **config)
