"""Class-imbalance resampling: counts, SMOTE geometry, and only training parts resampled."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import ModelError
from cropscope.evaluation import cross_validate, make_folds
from cropscope.models import Classifier, create_model
from cropscope.models import base as model_base
from cropscope.models.resampling import resample_arrays, resample_set
from tests.conftest import make_toy_set


def imbalanced(counts: tuple[int, ...] = (30, 9, 4), seed: int = 0) -> TimeSeriesSet:
    """A toy set with ``counts`` samples per class (first ``n`` of each class)."""
    ts = make_toy_set(n_per_class=max(counts), seed=seed, n_classes=len(counts))
    assert ts.labels is not None
    keep = np.concatenate([np.flatnonzero(ts.labels == k)[:n] for k, n in enumerate(counts)])
    return ts.subset(np.sort(keep))


def table(counts: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    x = rng.normal(size=(y.size, 3)) + y[:, None] * 2.0
    return x, y


@pytest.mark.parametrize(("method", "expected"), [("over", 30), ("under", 4), ("smote", 30)])
def test_counts_after_resampling(method: str, expected: int) -> None:
    x, y = table((30, 9, 4))
    xr, yr = resample_arrays(x, y, method, seed=1)
    assert np.bincount(yr).tolist() == [expected] * 3
    assert xr.shape == (3 * expected, 3)
    ts = resample_set(imbalanced(), method, seed=1)
    assert list(ts.class_counts().values()) == [expected] * 3
    if method != "smote":  # random resampling only draws existing rows
        assert all((xr == row).all(axis=1).any() for row in xr)
        rows = {r.tobytes() for r in x}
        assert all(r.tobytes() in rows for r in xr)


def test_under_sampling_draws_without_replacement_and_over_keeps_every_sample() -> None:
    x, y = table((30, 9, 4))
    xu, _ = resample_arrays(x, y, "under", seed=3)
    assert len({r.tobytes() for r in xu}) == len(xu)
    xo, _ = resample_arrays(x, y, "over", seed=3)
    kept = {r.tobytes() for r in xo}
    assert all(r.tobytes() in kept for r in x)


def _on_segment(s: np.ndarray, a: np.ndarray, b: np.ndarray, tol: float = 1e-6) -> bool:
    d = b - a
    u = float((s - a) @ d / (d @ d))
    return -tol <= u <= 1 + tol and float(np.abs(s - a - u * d).max()) < tol


def _check_smote_rows(x: np.ndarray, y: np.ndarray, sx: np.ndarray, sy: np.ndarray,
                      k: int) -> None:
    from sklearn.neighbors import NearestNeighbors

    for s, c in zip(sx, sy, strict=True):
        own = x[y == c]
        nn = NearestNeighbors(n_neighbors=min(k, len(own) - 1) + 1).fit(own)
        neigh = nn.kneighbors(own, return_distance=False)[:, 1:]  # without the sample itself
        found = any(_on_segment(s, own[i], own[j]) for i in range(len(own)) for j in neigh[i])
        assert found, f"synthetic sample of class {c} is not between two neighbours of it"


def test_smote_samples_lie_between_same_class_neighbours() -> None:
    x, y = table((30, 9, 4), seed=2)
    xr, yr = resample_arrays(x, y, "smote", seed=0, k_neighbors=3)
    np.testing.assert_array_equal(xr[: len(x)], x)  # the originals come first, unchanged
    sx, sy = xr[len(x):], yr[len(x):]
    assert np.bincount(sy).tolist() == [0, 21, 26]
    _check_smote_rows(x, y, sx, sy, k=3)
    # a synthetic sample is new, not a copy
    assert not any((x == s).all(axis=1).any() for s in sx)


def test_smote_on_series_interpolates_whole_series() -> None:
    ts = imbalanced((20, 6, 5))
    out = resample_set(ts, "smote", seed=4, k_neighbors=2)
    n = ts.n_samples
    assert out.values.shape == (60, ts.n_times, ts.n_bands)
    np.testing.assert_array_equal(out.values[:n], ts.values)
    assert out.labels is not None and ts.labels is not None and ts.ids is not None
    flat = ts.values.reshape(n, -1).astype(np.float64)
    _check_smote_rows(flat, ts.labels, out.values[n:].reshape(60 - n, -1).astype(np.float64),
                      out.labels[n:], k=2)
    assert out.ids is not None and len(set(out.ids.tolist())) == 60  # new, unique ids
    assert not set(out.ids[n:].tolist()) & set(ts.ids.tolist())
    assert out.meta is not None and list(out.meta.columns) == ["region"]


def test_smote_with_a_single_sample_class_copies_it() -> None:
    x, y = table((10, 4, 1))
    xr, yr = resample_arrays(x, y, "smote", seed=0)
    assert np.bincount(yr).tolist() == [10, 10, 10]
    single = x[y == 2][0]
    assert (xr[yr == 2] == single).all()


def test_smote_refuses_gaps_in_a_table() -> None:
    x, y = table((10, 4))
    x[0, 0] = np.nan
    from cropscope.errors import DataError

    with pytest.raises(DataError, match="finite"):
        resample_arrays(x, y, "smote")


# ---------------------------------------------------------------------------- the wrapper
class Spy(Classifier):
    """Predicts the majority class of what it was fit on; records what it saw."""

    calls: ClassVar[list[tuple[str, list[Any]]]] = []

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {"seed": 0, "val_fraction": 0.0}

    def _fit(self, train: TimeSeriesSet, val: TimeSeriesSet | None, progress: bool) -> None:
        assert train.labels is not None and train.ids is not None
        Spy.calls.append(("fit", train.ids.tolist()))
        Spy.calls.append(("counts", list(train.class_counts().values())))
        if val is not None:
            assert val.ids is not None
            Spy.calls.append(("val", val.ids.tolist()))
        self.majority_ = int(np.bincount(train.labels).argmax())

    def _predict_proba(self, ts: TimeSeriesSet) -> np.ndarray:
        assert ts.ids is not None
        Spy.calls.append(("predict", ts.ids.tolist()))
        out = np.zeros((ts.n_samples, len(self.classes)))
        out[:, self.majority_] = 1
        return out

    def _save_weights(self, directory: Path) -> None:
        (directory / "majority.txt").write_text(str(self.majority_))

    def _load_weights(self, directory: Path) -> None:
        self.majority_ = int((directory / "majority.txt").read_text())


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> type[Spy]:
    monkeypatch.setitem(model_base._REGISTERED, "spy", Spy)
    monkeypatch.setattr(Spy, "name", "spy")
    Spy.calls = []
    return Spy


@pytest.mark.parametrize("method", ["over", "under", "smote"])
def test_cross_validation_resamples_only_the_training_folds(spy: type[Spy], method: str
                                                           ) -> None:
    ts = imbalanced((30, 12, 9))
    assert ts.ids is not None
    result = cross_validate(lambda: create_model("resampled", base="spy", resample=method),
                            ts, cv=3, seed=0)
    folds = make_folds(ts, cv=3, seed=0)
    fits = [ids for kind, ids in spy.calls if kind == "fit"]
    counts = [c for kind, c in spy.calls if kind == "counts"]
    predicts = [ids for kind, ids in spy.calls if kind == "predict"]
    assert len(fits) == len(predicts) == 3
    originals = set(ts.ids.tolist())
    for (tr, te), fit_ids, fit_counts, pred_ids in zip(folds, fits, counts, predicts,
                                                       strict=True):
        assert len(set(fit_counts)) == 1  # balanced training part
        # the test fold is predicted as it is: its own samples, once each, nothing added
        assert sorted(pred_ids) == sorted(ts.ids[te].tolist())
        # the training part holds no test sample (nor a copy of one)
        assert not set(fit_ids) & set(ts.ids[te].tolist())
        if method != "smote":
            assert set(fit_ids) <= set(ts.ids[tr].tolist())
        else:
            assert set(fit_ids) & originals == set(ts.ids[tr].tolist())
    assert result.y_true.size == ts.n_samples


def test_validation_share_is_split_off_before_resampling(spy: type[Spy]) -> None:
    ts = imbalanced((30, 12, 9))
    create_model("resampled", base="spy", resample="over",
                 base_config={"val_fraction": 0.25}).fit(ts)
    fit_ids = next(ids for kind, ids in spy.calls if kind == "fit")
    val_ids = next(ids for kind, ids in spy.calls if kind == "val")
    assert not set(fit_ids) & set(val_ids)  # no copy of a validation sample is trained on
    assert len(val_ids) == len(set(val_ids))  # the validation part is not resampled


def test_resampled_model_saves_and_loads(tmp_path: Path) -> None:
    train, test = imbalanced((30, 9, 6)), make_toy_set(n_per_class=5, seed=3)
    model = create_model("resampled", base="logreg", resample="smote").fit(train)
    assert model.card is not None
    assert model.card.extra["class_counts_after"] == {"class_0": 30, "class_1": 30,
                                                      "class_2": 30}
    model.save(tmp_path / "m")
    loaded = Classifier.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_proba(test), model.predict_proba(test))
    # the map job's band-major route goes through the base model's and gives the same
    values = np.ascontiguousarray(test.values.transpose(2, 1, 0))
    np.testing.assert_allclose(loaded.predict_proba_pixels(values, dates=test.dates),
                               model.predict_proba(test), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("config", "message"), [
    ({"resample": "adasyn"}, "resample must be one of"),
    ({"base": "resampled"}, "cannot wrap"),
    ({"k_neighbors": 0}, "k_neighbors"),
    ({"base": "nope"}, "unknown model"),
    ({"base_config": {"n_estimators": 0}}, "n_estimators"),
])
def test_bad_options(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        create_model("resampled", **config)
