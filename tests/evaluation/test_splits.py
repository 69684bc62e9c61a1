from __future__ import annotations

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import DataError, EvaluationError
from cropscope.evaluation import make_folds, train_val_split


def _check_partition(folds, n: int) -> None:
    tests = [te for _, te in folds]
    assert np.array_equal(np.sort(np.concatenate(tests)), np.arange(n))  # cover, no repeats
    for tr, te in folds:
        assert np.intersect1d(tr, te).size == 0
        assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(n))


def _with_groups(ts: TimeSeriesSet, **columns) -> TimeSeriesSet:
    meta = ts.meta.copy()
    for name, values in columns.items():
        meta[name] = values
    return ts.replace(meta=meta)


def test_stratified_folds_partition_and_proportions(toy_set: TimeSeriesSet) -> None:
    folds = make_folds(toy_set, cv=5, seed=0)
    assert len(folds) == 5
    _check_partition(folds, toy_set.n_samples)
    for _, te in folds:
        # 20 samples per class over 5 folds: exactly 4 of each class per test fold
        assert np.bincount(toy_set.labels[te], minlength=3).tolist() == [4, 4, 4]


def test_folds_deterministic_per_seed(toy_set: TimeSeriesSet) -> None:
    a, b = make_folds(toy_set, seed=3), make_folds(toy_set, seed=3)
    c = make_folds(toy_set, seed=4)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x[1], y[1]) for x, y in zip(a, c, strict=True))


def test_unlabelled_samples_left_out(toy_set: TimeSeriesSet) -> None:
    labels = toy_set.labels.copy()
    labels[[0, 21, 42]] = -1
    ts = toy_set.replace(labels=labels)
    folds = make_folds(ts, cv=4)
    covered = np.sort(np.concatenate([te for _, te in folds]))
    assert np.array_equal(covered, np.flatnonzero(labels >= 0))
    assert all(not np.isin([0, 21, 42], tr).any() for tr, _ in folds)


def test_too_few_samples_in_a_class(toy_set: TimeSeriesSet) -> None:
    keep = np.concatenate([np.arange(40), np.arange(40, 43)])  # class_2 keeps 3 samples
    ts = toy_set.subset(keep)
    with pytest.raises(EvaluationError, match=r"class 'class_2' has 3 samples, fewer than the 5"):
        make_folds(ts, cv=5)
    assert len(make_folds(ts, cv=3)) == 3
    ts2 = toy_set.subset(np.concatenate([np.arange(20), np.arange(20, 22), np.arange(40, 44)]))
    with pytest.raises(EvaluationError, match=r"'class_1' \(2\), 'class_2' \(4\)"):
        make_folds(ts2, cv=5)
    # without stratification the small class is no obstacle
    _check_partition(make_folds(ts, cv=5, stratify=False), ts.n_samples)


@pytest.mark.parametrize("cv", [1, 0, -2])
def test_cv_below_two(toy_set: TimeSeriesSet, cv: int) -> None:
    with pytest.raises(EvaluationError, match="at least 2 folds"):
        make_folds(toy_set, cv=cv)


def test_leave_one_region_out(toy_set: TimeSeriesSet) -> None:
    folds = make_folds(toy_set, cv=2, group="region")
    _check_partition(folds, toy_set.n_samples)
    regions = toy_set.group_values("region")
    assert sorted(set(regions[te]).pop() for _, te in folds) == ["north", "south"]
    for tr, te in folds:
        assert len(set(regions[te])) == 1
        assert set(regions[tr]).isdisjoint(regions[te])


def test_more_folds_than_groups(toy_set: TimeSeriesSet) -> None:
    with pytest.raises(EvaluationError, match=r"'region' has only 2 groups \(north, south\)"):
        make_folds(toy_set, cv=3, group="region")


def test_missing_group_column(toy_set: TimeSeriesSet) -> None:
    with pytest.raises(DataError, match=r"no column 'year'.*'region'"):
        make_folds(toy_set, cv=2, group="year")


def test_missing_group_values(toy_set: TimeSeriesSet) -> None:
    years = np.where(np.arange(60) == 5, np.nan, 2020 + np.arange(60) % 3)
    with pytest.raises(DataError, match="'year' has 1 missing value"):
        make_folds(_with_groups(toy_set, year=years), cv=2, group="year")


@pytest.mark.parametrize("stratify", [True, False])
def test_group_folds_never_split_a_group(toy_set: TimeSeriesSet, stratify: bool) -> None:
    polygons = np.arange(toy_set.n_samples) // 4  # 15 polygons of 4 same-class samples
    ts = _with_groups(toy_set, polygon_id=polygons)
    folds = make_folds(ts, cv=5, seed=1, group="polygon_id", stratify=stratify)
    assert len(folds) == 5
    _check_partition(folds, ts.n_samples)
    for tr, te in folds:
        assert set(polygons[tr]).isdisjoint(polygons[te])
    again = make_folds(ts, cv=5, seed=1, group="polygon_id", stratify=stratify)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(folds, again, strict=True))
    if stratify:
        for _, te in folds:  # 3 polygons per fold, one of each class
            assert np.bincount(ts.labels[te], minlength=3).tolist() == [4, 4, 4]


def test_group_folds_with_integer_years(toy_set: TimeSeriesSet) -> None:
    years = 2018 + np.arange(60) % 3
    ts = _with_groups(toy_set, year=years)
    folds = make_folds(ts, cv=3, group="year")  # one fold per year
    assert sorted(int(years[te][0]) for _, te in folds) == [2018, 2019, 2020]


def test_train_val_split_stratified(toy_set: TimeSeriesSet) -> None:
    tr, va = train_val_split(toy_set, 0.25, seed=0)
    assert tr.size == 45 and va.size == 15
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(60))
    assert np.bincount(toy_set.labels[va]).tolist() == [5, 5, 5]
    tr2, va2 = train_val_split(toy_set, 0.25, seed=0)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    assert not np.array_equal(va, train_val_split(toy_set, 0.25, seed=1)[1])


def test_train_val_split_falls_back_to_random(toy_set: TimeSeriesSet) -> None:
    ts = toy_set.subset(np.concatenate([np.arange(40), [40]]))  # class_2 has 1 sample
    tr, va = train_val_split(ts, 0.2, seed=0)
    assert tr.size + va.size == 41 and va.size == 8
    assert np.intersect1d(tr, va).size == 0
    unlabelled = TimeSeriesSet(values=toy_set.values[:5], bands=toy_set.bands)
    tr, va = train_val_split(unlabelled, 0.5)
    assert tr.size + va.size == 5 and va.size >= 1 and tr.size >= 1


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_train_val_split_bad_fraction(toy_set: TimeSeriesSet, fraction: float) -> None:
    with pytest.raises(EvaluationError, match="val_fraction"):
        train_val_split(toy_set, fraction)


def test_train_val_split_too_small() -> None:
    one = TimeSeriesSet(values=np.zeros((1, 3, 1)), bands=["B1"])
    with pytest.raises(EvaluationError, match="cannot split 1 sample"):
        train_val_split(one, 0.5)
