from __future__ import annotations

import warnings

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.features import (
    composite_median,
    composite_median_array,
    parse_step,
    regular_grid,
)
from tests.conftest import make_toy_set

DAY = np.timedelta64(1, "D")


def naive_composite(values, dates, valid, grid, step_days=None, end=None):
    """Per-sample loop: np.median of valid observations in [g, next g)."""
    n, _, c = values.shape
    dates = np.broadcast_to(dates, values.shape[:2])
    if step_days:
        after_last = grid[-1] + step_days * DAY
    else:  # monthly
        after_last = (grid[-1].astype("datetime64[M]") + 1).astype("datetime64[D]")
    bounds = [*grid, after_last]
    out = np.full((n, len(grid), c), np.nan)
    for i in range(n):
        for w in range(len(grid)):
            sel = (dates[i] >= bounds[w]) & (dates[i] < bounds[w + 1]) & valid[i]
            if end is not None:
                sel &= dates[i] <= end
            if sel.any():
                out[i, w] = np.median(values[i, sel], axis=0)
    return out


def random_set(n=30, t=40, per_sample=False, seed=0, nan_fraction=0.3):
    rng = np.random.default_rng(seed)
    shape = (n, t) if per_sample else (t,)
    days = np.sort(rng.integers(0, 200, size=shape), axis=-1)  # duplicates on purpose
    dates = np.datetime64("2021-03-01") + days.astype("timedelta64[D]")
    values = rng.normal(size=(n, t, 2)).astype(np.float32)
    values[rng.random((n, t)) < nan_fraction] = np.nan
    return TimeSeriesSet(values, ["B4", "B8"], dates=dates)


def test_regular_grid_days_and_months() -> None:
    grid = regular_grid("2021-01-01", "2021-01-31", 10)
    np.testing.assert_array_equal(
        grid, np.array(["2021-01-01", "2021-01-11", "2021-01-21", "2021-01-31"], "M8[D]")
    )
    np.testing.assert_array_equal(grid, regular_grid("2021-01-01", "2021-01-31", "10D"))
    months = regular_grid("2021-01-15", "2021-04-02", "monthly")
    np.testing.assert_array_equal(
        months, np.array(["2021-01-01", "2021-02-01", "2021-03-01", "2021-04-01"], "M8[D]")
    )
    assert parse_step("month") == parse_step("monthly") == "monthly"
    assert parse_step("16D") == 16 and parse_step(5) == 5


@pytest.mark.parametrize("bad", [0, -5, "10X", "weekly", 2.5, True])
def test_bad_step_raises(bad) -> None:
    with pytest.raises(DataError):
        parse_step(bad)


def test_grid_end_before_start_raises() -> None:
    with pytest.raises(DataError, match="before"):
        regular_grid("2021-02-01", "2021-01-01", 10)


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("step", [5, 10, 16])
def test_composite_matches_naive_median(per_sample: bool, step: int) -> None:
    ts = random_set(per_sample=per_sample, seed=step)
    out = composite_median(ts, step=step)
    first, last = np.nanmin(ts.dates), np.nanmax(ts.dates)
    grid = regular_grid(first, last, step)
    np.testing.assert_array_equal(out.dates, grid)
    ref = naive_composite(ts.values, ts.dates, ts.mask, grid, step)
    np.testing.assert_allclose(out.values, ref, rtol=1e-6, atol=1e-7, equal_nan=True)
    np.testing.assert_array_equal(out.mask, np.isfinite(ref).all(axis=2))
    assert not out.mask.all()  # some windows are empty
    np.testing.assert_array_equal(out.ids, ts.ids)


def test_composite_monthly_and_start_end() -> None:
    ts = random_set(per_sample=True, seed=3)
    out = composite_median(ts, step="monthly", start="2021-04-10", end="2021-07-20")
    grid = regular_grid("2021-04-10", "2021-07-20", "monthly")
    np.testing.assert_array_equal(out.dates, grid)
    dates = ts.per_sample_dates
    valid = ts.mask & (dates >= np.datetime64("2021-04-10"))
    ref = naive_composite(ts.values, dates, valid, grid, None, end=np.datetime64("2021-07-20"))
    np.testing.assert_allclose(out.values, ref, rtol=1e-6, atol=1e-7, equal_nan=True)


def test_masked_but_finite_steps_are_ignored() -> None:
    ts = make_toy_set(n_per_class=2, n_times=12)
    mask = ts.mask.copy()
    mask[:, ::2] = False  # e.g. flagged as cloud although values are finite
    flagged = ts.replace(mask=mask)
    out = composite_median(flagged, step=60)
    grid = out.dates
    ref = naive_composite(ts.values, ts.dates, mask, grid, 60)
    np.testing.assert_allclose(out.values, ref, rtol=1e-6, equal_nan=True)


def test_composite_keeps_labels_and_meta() -> None:
    ts = make_toy_set(n_per_class=3)
    out = composite_median(ts, step=30)
    np.testing.assert_array_equal(out.labels, ts.labels)
    assert out.classes == ts.classes and out.bands == ts.bands
    assert out.meta["region"].tolist() == ts.meta["region"].tolist()


def test_align_season_puts_years_on_one_grid() -> None:
    rng = np.random.default_rng(1)
    t = 20
    offsets = np.sort(rng.choice(330, t, replace=False))
    values = rng.normal(size=(1, t, 1)).astype(np.float32)
    values = np.repeat(values, 3, axis=0)
    starts = np.array(["2005-09-14", "2013-09-14", "2009-09-14"], "M8[D]")
    dates = starts[:, None] + offsets.astype("timedelta64[D]")
    ts = TimeSeriesSet(values, ["NDVI"], dates=dates)
    out = composite_median(ts, step=16, align="season")
    assert out.dates[0] == dates[0, 0]  # reference: year of the earliest season
    assert out.dates.ndim == 1
    # same day-of-year pattern in each year -> identical composites
    np.testing.assert_allclose(out.values[1], out.values[0], equal_nan=True)
    np.testing.assert_allclose(out.values[2], out.values[0], equal_nan=True)
    alone = composite_median(ts.subset([0]), step=16)
    np.testing.assert_allclose(out.values[:1, : alone.n_times], alone.values, equal_nan=True)
    # without alignment the seasons are years apart: a long, mostly empty grid
    assert composite_median(ts, step=16).n_times > 150


def test_align_start_uses_each_first_date() -> None:
    rng = np.random.default_rng(2)
    offsets = np.sort(rng.choice(100, 15, replace=False))
    values = np.repeat(rng.normal(size=(1, 15, 2)).astype(np.float32), 2, axis=0)
    starts = np.array(["2020-03-03", "2021-07-19"], "M8[D]")
    ts = TimeSeriesSet(values, ["a", "b"], dates=starts[:, None] + offsets.astype("m8[D]"))
    out = composite_median(ts, step=10, align="start", start="2000-01-01")
    assert out.dates[0] == np.datetime64("2000-01-01")
    np.testing.assert_allclose(out.values[0], out.values[1], equal_nan=True)


def test_composite_errors() -> None:
    ts = make_toy_set(n_per_class=1)
    with pytest.raises(DataError, match="dates"):
        composite_median(ts.replace(dates=None))
    with pytest.raises(DataError, match="align"):
        composite_median(ts, align="sideways")  # type: ignore[arg-type]


@pytest.mark.parametrize("window", [1, 3, 7, 30])
def test_composite_median_array_per_band_nans(window: int) -> None:
    """Covers every window size (1, 2, 3, sorting network, np.sort) and per-band NaN."""
    rng = np.random.default_rng(window)
    n, t, c = 25, 60, 3
    values = rng.normal(size=(n, t, c)).astype(np.float32)
    values[rng.random((n, t, c)) < 0.3] = np.nan
    for day_index in (
        np.sort(rng.integers(0, 90, t)),
        np.sort(rng.integers(0, 90, (n, t)), axis=1),
    ):
        n_windows = 90 // window
        out = composite_median_array(values, day_index, window, n_windows, start_day=5)
        ref = np.full((n, n_windows, c), np.nan)
        days = np.broadcast_to(day_index, (n, t))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for i in range(n):
                for w in range(n_windows):
                    sel = (days[i] - 5) // window == w
                    sel &= days[i] >= 5
                    if sel.any():
                        ref[i, w] = np.nanmedian(values[i, sel], axis=0)
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7, equal_nan=True)


def test_composite_median_array_small_chunks_agree() -> None:
    rng = np.random.default_rng(5)
    values = rng.normal(size=(40, 30, 2)).astype(np.float32)
    values[rng.random((40, 30)) < 0.5] = np.nan
    days = np.sort(rng.integers(0, 60, (40, 30)), axis=1)
    whole = composite_median_array(values, days, 10, 6)
    parts = composite_median_array(values, days, 10, 6, chunk=7)
    np.testing.assert_array_equal(whole, parts)


def test_composite_median_array_rejects_float_days() -> None:
    with pytest.raises(DataError, match="integer"):
        composite_median_array(np.zeros((1, 3, 1)), np.array([0.0, 1.0, 2.0]), 1, 3)


def loop_composite(values, day_index, window, n_windows, start_day=0, mask=None):
    """Reference: per sample, window and band, np.median of the valid values (float32)."""
    n, t, c = values.shape
    days = np.broadcast_to(day_index, (n, t))
    keep = np.ones((n, t), bool) if mask is None else mask
    out = np.full((n, n_windows, c), np.nan, dtype=np.float32)
    for i in range(n):
        w = (days[i] - start_day) // window
        for j in range(n_windows):
            for b in range(c):
                x = values[i, (w == j) & (days[i] >= start_day) & keep[i], b]
                x = x[~np.isnan(x)]
                if x.size:
                    out[i, j, b] = np.median(x)
    return out


@pytest.mark.parametrize("n_bands", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("use_mask", [False, True])
def test_shared_dates_fast_path_matches_loop(n_bands: int, use_mask: bool) -> None:
    """Shared dates: windows holding 0, 1, 2, 3 and up to 12 steps (every median formula),
    unsorted dates, NaN per band and per step, all-NaN series, chunks that split the samples;
    1-5 bands exercise every item size the kernel moves steps with (4, 8, 12, 16, 20 bytes)."""
    rng = np.random.default_rng(10 * n_bands + use_mask)
    n, t = 23, 40
    counts = [1, 2, 3, 0, 4, 1, 5, 2, 12, 3, 3]  # steps per 5-day window, in window order
    days = np.concatenate([w * 5 + rng.integers(0, 5, k) for w, k in enumerate(counts)])
    days = np.concatenate([days, rng.integers(60, 90, t - len(days))])  # outside the grid too
    perm = rng.permutation(t)
    days = days[perm]
    values = rng.normal(size=(n, t, n_bands)).astype(np.float32)
    values[rng.random((n, t, n_bands)) < 0.25] = np.nan
    values[rng.random((n, t)) < 0.2] = np.nan
    values[3] = np.nan  # an all-NaN series
    mask = rng.random((n, t)) > 0.3 if use_mask else None
    ref = loop_composite(values, days, 5, len(counts), mask=mask)
    for chunk in (None, 1, 4):
        out = composite_median_array(values, days, 5, len(counts), mask=mask, chunk=chunk)
        assert out.dtype == np.float32 and out.shape == ref.shape
        np.testing.assert_array_equal(out, ref)
    assert np.isnan(ref[3]).all() and np.isnan(ref[:, 3]).all()  # empty series and window


def test_shared_dates_single_observation_windows() -> None:
    """One step per window: the composite is the input, NaN stays NaN."""
    rng = np.random.default_rng(4)
    values = rng.normal(size=(9, 6, 2)).astype(np.float32)
    values[rng.random((9, 6, 2)) < 0.3] = np.nan
    days = np.arange(6) * 10 + 3
    out = composite_median_array(values, days, 10, 6)
    np.testing.assert_array_equal(out, values)


def test_shared_dates_degenerate_shapes() -> None:
    days = np.arange(5)
    empty = composite_median_array(np.zeros((0, 5, 2), np.float32), days, 2, 3)
    assert empty.shape == (0, 3, 2)
    no_windows = composite_median_array(np.ones((4, 5, 2), np.float32), days, 2, 0)
    assert no_windows.shape == (4, 0, 2)
    outside = composite_median_array(np.ones((4, 5, 2), np.float32), days, 2, 3, start_day=50)
    assert outside.shape == (4, 3, 2) and np.isnan(outside).all()


def test_shared_dates_non_contiguous_input() -> None:
    rng = np.random.default_rng(8)
    base = rng.normal(size=(12, 30, 6)).astype(np.float32)
    base[rng.random(base.shape) < 0.2] = np.nan
    view = base[::2, :, 1:5]  # strided samples and bands
    days = np.sort(rng.integers(0, 60, 30))
    out = composite_median_array(view, days, 10, 6)
    np.testing.assert_array_equal(out, loop_composite(np.ascontiguousarray(view), days, 10, 6))


@pytest.mark.parametrize("seed", [0, 1])
def test_per_sample_dates_match_loop(seed: int) -> None:
    """Per-sample dates (the other kernel): duplicates, NaN, all-NaN series, a mask."""
    rng = np.random.default_rng(seed)
    n, t, c = 17, 25, 3
    values = rng.normal(size=(n, t, c)).astype(np.float32)
    values[rng.random((n, t, c)) < 0.3] = np.nan
    values[5] = np.nan
    days = rng.integers(0, 50, (n, t))
    mask = rng.random((n, t)) > 0.2
    ref = loop_composite(values, days, 7, 8, start_day=2, mask=mask)
    for chunk in (None, 3):
        out = composite_median_array(values, days, 7, 8, start_day=2, mask=mask, chunk=chunk)
        np.testing.assert_array_equal(out, ref)
