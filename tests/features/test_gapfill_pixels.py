"""Gap filling of the map job's band-major pixel series, against the TimeSeriesSet route."""

from __future__ import annotations

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.features import interpolate_gaps, interpolate_gaps_array
from cropscope.features.gapfill import fill_pixel_gaps


def series(n: int, nt: int, nc: int, seed: int = 0, gap_rate: float = 0.3
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """``values [N, T, C]`` with NaN gaps, a mask with extra flagged (finite) steps, dates."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, nt, nc)).astype(np.float32)
    values[rng.random((n, nt, nc)) < gap_rate / 3] = np.nan  # single bands missing
    mask = np.isfinite(values).all(axis=2) & (rng.random((n, nt)) > gap_rate / 2)
    mask[0, :3] = False  # leading gap
    mask[1, -2:] = False  # trailing gap
    mask[2] = False  # never observed: stays NaN
    mask[3] = True  # complete (only where finite)
    values[3] = np.abs(values[3])
    mask[3] = np.isfinite(values[3]).all(axis=1)
    dates = np.datetime64("2021-01-03") + np.cumsum(rng.integers(1, 20, nt)).astype(
        "timedelta64[D]")
    return values, mask, dates


@pytest.mark.parametrize("n", [5, 3000])
def test_pixel_gaps_equal_interpolate_gaps_bit_for_bit(n: int) -> None:
    values, mask, dates = series(n, 9, 3)
    ts = TimeSeriesSet(values, ["B2", "B4", "B8"], dates=dates, mask=mask)
    want = np.where(ts.mask[:, :, None], ts.values, np.nan)
    want[np.arange(n) != 2] = interpolate_gaps(ts.subset(np.arange(n) != 2)).values
    pixels = np.ascontiguousarray(values.transpose(2, 1, 0))  # [C, T, N]
    fill_pixel_gaps(pixels, ts.mask.T, dates.astype(np.int64).astype(np.float64))
    got = pixels.transpose(2, 1, 0)
    np.testing.assert_array_equal(got, want)  # NaN where equal too
    assert np.isnan(got[2]).all() and np.isfinite(got[0]).all()


def test_pixel_gaps_of_a_pixel_do_not_depend_on_its_neighbours() -> None:
    """Few pixels with gaps (gathered) and many (whole chunks): the same values."""
    values, mask, dates = series(400, 7, 2, seed=3)
    t = dates.astype(np.int64).astype(np.float64)
    dense = np.ascontiguousarray(values.transpose(2, 1, 0))
    fill_pixel_gaps(dense, mask.T, t)
    few = mask.copy()
    few[10:] = np.isfinite(values[10:]).all(axis=2)  # only the first 10 pixels have flags
    sparse = np.ascontiguousarray(values.transpose(2, 1, 0))
    fill_pixel_gaps(sparse, few.T, t)
    np.testing.assert_array_equal(sparse[:, :, :10], dense[:, :, :10])


def test_pixel_gaps_check_their_shapes() -> None:
    with pytest.raises(DataError, match="do not fit"):
        fill_pixel_gaps(np.zeros((2, 5, 4), np.float32), np.ones((4, 5), bool))
    with pytest.raises(DataError, match="t must be"):
        fill_pixel_gaps(np.zeros((2, 5, 4), np.float32), np.ones((5, 4), bool), np.arange(3))


def test_interpolate_gaps_array_leaves_its_input_and_fills_few_or_many_alike() -> None:
    values, _, dates = series(300, 8, 2, seed=5, gap_rate=0.0)
    values = np.nan_to_num(values)
    t = dates.astype(np.int64).astype(np.float64)
    values[7, 2:4, 1] = np.nan  # one sample with a gap: the gathering route
    before = values.copy()
    few = interpolate_gaps_array(values, t)
    np.testing.assert_array_equal(values, before)  # the input is not touched
    many = values.copy()
    many[:, 0, 0] = np.nan  # every sample with a gap: the contiguous route
    many[7] = values[7]
    np.testing.assert_array_equal(interpolate_gaps_array(many, t)[7], few[7])
    np.testing.assert_array_equal(few[np.arange(300) != 7], values[np.arange(300) != 7])
    np.testing.assert_allclose(few[7, :, 1], np.interp(t, t[[0, 1, 4, 5, 6, 7]],
                                                       values[7, [0, 1, 4, 5, 6, 7], 1]),
                               rtol=1e-6)  # fmt: skip
