from __future__ import annotations

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.features import (
    median_feature_names,
    median_features_1d,
    median_features_2d,
    median_windows,
)


def naive_cropglobe(values, dates, valid, window=5, start_doy=121, end_doy=334):
    """Per sample: median per DOY window in [start, end], then np.interp over windows."""
    n, _, c = values.shape
    dates = np.broadcast_to(dates, values.shape[:2])
    doy = (dates - dates.astype("datetime64[Y]")).astype(int) + 1
    windows = np.arange((start_doy - 1) // window, (end_doy - 1) // window + 1)
    out = np.full((n, c, len(windows)), np.nan)
    for i in range(n):
        for k, w in enumerate(windows):
            sel = ((doy[i] - 1) // window == w) & valid[i]
            if sel.any():
                out[i, :, k] = np.median(values[i, sel], axis=0)
        for b in range(c):
            ok = np.isfinite(out[i, b])
            out[i, b] = np.interp(np.arange(len(windows)), np.flatnonzero(ok), out[i, b, ok])
    return out[:, None]


def season_set(n=8, per_sample=True, seed=0):
    rng = np.random.default_rng(seed)
    t = 60
    years = rng.integers(2017, 2022, size=n)
    offsets = np.sort(rng.integers(0, 365, size=(n, t)), axis=1)
    dates = np.array([f"{y}-01-01" for y in years], "M8[D]")[:, None] + offsets.astype("m8[D]")
    if not per_sample:
        dates = dates[0]
    values = rng.uniform(0, 0.6, size=(n, t, 3)).astype(np.float32)
    values[rng.random((n, t)) < 0.3] = np.nan
    return TimeSeriesSet(values, ["B4", "B8", "B11"], dates=dates)


def test_default_windows_follow_the_paper() -> None:
    windows = median_windows()
    assert len(windows) == 43 and windows[0] == 24 and windows[-1] == 66
    assert len(median_feature_names(["B2", "B3"])) == 86


@pytest.mark.parametrize("per_sample", [False, True])
def test_median_features_match_naive(per_sample: bool) -> None:
    ts = season_set(per_sample=per_sample)
    got = median_features_2d(ts)
    assert got.shape == (8, 1, 3, 43) and got.dtype == np.float32
    ref = naive_cropglobe(ts.values, ts.dates, ts.mask)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    flat = median_features_1d(ts)
    np.testing.assert_array_equal(flat, got.reshape(8, -1))
    assert flat.shape == (8, 129)


def test_other_window_and_no_fill() -> None:
    ts = season_set(seed=2)
    got = median_features_2d(ts, window_days=10, start_doy=1, end_doy=365, fill=False)
    assert got.shape[-1] == 37
    ref = naive_cropglobe(ts.values, ts.dates, ts.mask, 10, 1, 365)
    filled = median_features_2d(ts, window_days=10, start_doy=1, end_doy=365)
    np.testing.assert_allclose(filled, ref, rtol=1e-5, atol=1e-6)
    empty = np.isnan(got)
    np.testing.assert_allclose(got[~empty], ref[~empty], rtol=1e-5)


def test_wrapping_season_over_new_year() -> None:
    dates = np.array(["2020-12-20", "2020-12-28", "2021-01-03", "2021-01-09"], "M8[D]")
    values = np.array([[[1.0], [2.0], [3.0], [4.0]]], dtype=np.float32)
    ts = TimeSeriesSet(values, ["NDVI"], dates=dates)
    windows = median_windows(10, 350, 10)  # DOY 350 .. 10 of the next year
    np.testing.assert_array_equal(windows, [34, 35, 36, 0])
    got = median_features_2d(ts, window_days=10, start_doy=350, end_doy=10)
    # DOY 355 -> w35, DOY 363 -> w36, DOY 3 and 9 -> w0; w34 empty -> nearest (1.0)
    np.testing.assert_allclose(got[0, 0, 0], [1.0, 1.0, 2.0, 3.5])


def test_errors() -> None:
    ts = season_set(n=3)
    with pytest.raises(DataError, match="dates"):
        median_features_2d(ts.replace(dates=None))
    values = ts.values.copy()
    values[1] = np.nan
    with pytest.raises(DataError, match="sample ids 1"):
        median_features_2d(ts.replace(values=values))
    with pytest.raises(DataError):
        median_windows(5, 0, 100)
