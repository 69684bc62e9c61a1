from __future__ import annotations

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.features import interpolate_gaps, interpolate_gaps_array
from tests.conftest import make_toy_set


def naive_fill(values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """np.interp per sample and band (constant extrapolation at the ends)."""
    n, nt, c = values.shape
    t = np.broadcast_to(t, (n, nt))
    out = np.full(values.shape, np.nan)
    for i in range(n):
        for b in range(c):
            ok = np.isfinite(values[i, :, b])
            if ok.any():
                out[i, :, b] = np.interp(t[i], t[i, ok], values[i, ok, b])
    return out


@pytest.mark.parametrize("per_sample", [False, True])
def test_interpolation_matches_np_interp(per_sample: bool) -> None:
    rng = np.random.default_rng(0)
    n, nt, c = 20, 25, 3
    values = rng.normal(size=(n, nt, c)).astype(np.float32)
    values[rng.random((n, nt, c)) < 0.4] = np.nan
    values[0, :5] = np.nan  # leading gap
    values[1, -4:] = np.nan  # trailing gap
    values[2, :, 1] = np.nan  # one band without data stays NaN
    shape = (n, nt) if per_sample else (nt,)
    t = np.cumsum(rng.integers(1, 15, size=shape), axis=-1).astype(float)
    out = interpolate_gaps_array(values, t)
    ref = naive_fill(values, t)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.isnan(out[2, :, 1]).all() and np.isfinite(out[2, :, 0]).all()
    assert out.dtype == np.float32


def test_default_time_is_step_index_and_2d_input() -> None:
    values = np.array([[np.nan, 1.0, np.nan, np.nan, 4.0, np.nan]], dtype=np.float32)
    out = interpolate_gaps_array(values)
    np.testing.assert_allclose(out, [[1.0, 1.0, 2.0, 3.0, 4.0, 4.0]])
    complete = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    np.testing.assert_array_equal(interpolate_gaps_array(complete), complete)


def test_interpolate_gaps_uses_dates_and_mask() -> None:
    dates = np.array(["2021-01-01", "2021-01-02", "2021-01-11"], "M8[D]")
    values = np.array([[[0.0], [5.0], [10.0]]], dtype=np.float32)
    mask = np.array([[True, False, True]])  # middle step flagged though finite
    ts = TimeSeriesSet(values, ["NDVI"], dates=dates, mask=mask)
    out = interpolate_gaps(ts)
    np.testing.assert_allclose(out.values[0, :, 0], [0.0, 1.0, 10.0])  # 1 day of 10
    assert out.mask.all()
    by_index = interpolate_gaps(ts.replace(dates=None))
    np.testing.assert_allclose(by_index.values[0, :, 0], [0.0, 5.0, 10.0])


def test_interpolate_gaps_on_toy_set() -> None:
    ts = make_toy_set(nan_fraction=0.3, seed=4)
    out = interpolate_gaps(ts)
    t = ts.dates.astype(np.int64).astype(float)
    ref = naive_fill(np.where(ts.mask[:, :, None], ts.values, np.nan), t)
    np.testing.assert_allclose(out.values, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out.labels, ts.labels)


def test_missing_dates_raise() -> None:
    dates = np.array(["2021-01-01", "NaT", "2021-01-11"], "M8[D]")
    ts = TimeSeriesSet(np.array([[[0.0], [np.nan], [1.0]]], np.float32), ["x"], dates=dates)
    with pytest.raises(DataError, match="NaT"):
        interpolate_gaps(ts)


def test_all_nan_series_raises_with_ids() -> None:
    values = np.ones((3, 4, 1), dtype=np.float32)
    values[1] = np.nan
    ts = TimeSeriesSet(values, ["B4"], ids=np.array(["a", "b", "c"]))
    with pytest.raises(DataError, match="sample ids b"):
        interpolate_gaps(ts)
