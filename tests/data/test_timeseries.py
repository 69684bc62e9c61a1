from __future__ import annotations

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import DataError
from tests.conftest import make_toy_set


def test_mask_follows_nans() -> None:
    ts = make_toy_set(nan_fraction=0.3, seed=1)
    assert ts.mask.shape == (ts.n_samples, ts.n_times)
    assert np.array_equal(ts.mask, np.isfinite(ts.values).all(axis=2))
    assert not ts.mask.all()


def test_parquet_roundtrip(tmp_path, toy_set: TimeSeriesSet) -> None:
    path = toy_set.to_parquet(tmp_path / "set.parquet")
    back = TimeSeriesSet.read_parquet(path)
    np.testing.assert_array_equal(back.values, toy_set.values)
    np.testing.assert_array_equal(back.labels, toy_set.labels)
    np.testing.assert_array_equal(back.dates, toy_set.dates)
    assert back.classes == toy_set.classes and back.bands == toy_set.bands
    assert back.meta["region"].tolist() == toy_set.meta["region"].tolist()


def test_xarray_roundtrip(toy_set: TimeSeriesSet) -> None:
    back = TimeSeriesSet.from_xarray(toy_set.to_xarray())
    np.testing.assert_array_equal(back.values, toy_set.values)
    np.testing.assert_array_equal(back.labels, toy_set.labels)
    np.testing.assert_array_equal(back.dates, toy_set.dates)
    assert back.meta["region"].tolist() == toy_set.meta["region"].tolist()


def test_long_table_has_one_row_per_step(toy_set: TimeSeriesSet) -> None:
    df = toy_set.to_long()
    assert len(df) == toy_set.n_samples * toy_set.n_times
    assert {"sample_id", "date", "label", "B4", "B8", "region"} <= set(df.columns)


def test_select_bands_case_insensitive_and_error(toy_set: TimeSeriesSet) -> None:
    sub = toy_set.select_bands(["b8"])
    np.testing.assert_array_equal(sub.values[..., 0], toy_set.values[..., 1])
    with pytest.raises(DataError, match="not found"):
        toy_set.select_bands(["B11"])


def test_subset_keeps_everything_aligned(toy_set: TimeSeriesSet) -> None:
    idx = np.array([5, 0, 17])
    sub = toy_set.subset(idx)
    np.testing.assert_array_equal(sub.values, toy_set.values[idx])
    np.testing.assert_array_equal(sub.labels, toy_set.labels[idx])
    assert sub.meta["region"].tolist() == toy_set.meta["region"].iloc[idx].tolist()


def test_validation_errors() -> None:
    with pytest.raises(DataError, match=r"\[N, T, C\]"):
        TimeSeriesSet(values=np.zeros((3, 4)), bands=["a"])
    with pytest.raises(DataError, match="band names"):
        TimeSeriesSet(values=np.zeros((3, 4, 2)), bands=["a"])
    with pytest.raises(DataError, match="all NaN"):
        TimeSeriesSet(values=np.full((2, 3, 1), np.nan), bands=["a"]).check_no_empty_series()


def test_day_of_year_is_derived() -> None:
    ts = TimeSeriesSet(
        values=np.zeros((1, 2, 1)), bands=["a"],
        dates=np.array(["2021-01-01", "2021-12-31"], dtype="datetime64[D]"),
    )
    assert ts.day_of_year.tolist() == [1, 365]


def test_select_bands_keeps_a_supplied_cloud_mask(toy_set: TimeSeriesSet) -> None:
    clouds = np.ones(toy_set.mask.shape, dtype=bool)
    clouds[:, 3] = False  # flagged as cloudy although the values are finite
    flagged = toy_set.replace(mask=clouds)
    assert not flagged.select_bands(["B8"]).mask[:, 3].any()
    assert flagged.subset([0, 1]).mask[:, 3].sum() == 0
