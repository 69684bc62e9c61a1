from __future__ import annotations

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.features import (
    build_features,
    compute_index,
    harmonic_coefficients,
    interpolate_gaps,
)
from tests.conftest import make_toy_set


@pytest.fixture
def gappy() -> TimeSeriesSet:
    return make_toy_set(n_per_class=4, n_times=10, nan_fraction=0.2, seed=3)


def test_values_block_is_filled_and_band_major(gappy: TimeSeriesSet) -> None:
    x, names = build_features(gappy)
    filled = interpolate_gaps(gappy).values
    assert x.shape == (gappy.n_samples, 20) and x.dtype == np.float32
    assert names[:3] == ["B4_t00", "B4_t01", "B4_t02"] and names[10] == "B8_t00"
    np.testing.assert_allclose(x[:, 13], filled[:, 3, 1])
    assert np.isfinite(x).all()


def test_indices_block_only_where_bands_allow(gappy: TimeSeriesSet) -> None:
    x, names = build_features(gappy, ["indices"])
    kinds = sorted({n.split("_t")[0] for n in names})
    assert kinds == ["EVI2", "NDVI", "SAVI"]  # B4 + B8 only: no blue, green or swir
    filled = interpolate_gaps(gappy)
    col = names.index("NDVI_t04")
    np.testing.assert_allclose(x[:, col], compute_index("NDVI", filled)[:, 4], rtol=1e-6)
    other = gappy.replace(bands=["foo", "bar"])
    x2, names2 = build_features(other, ("values", "indices"))
    assert x2.shape[1] == 20 and all(n.startswith(("foo", "bar")) for n in names2)


def test_harmonics_block(gappy: TimeSeriesSet) -> None:
    x, names = build_features(gappy, "harmonics", harmonic_order=1)
    np.testing.assert_array_equal(x, harmonic_coefficients(gappy, order=1))
    assert names == ["B4_c", "B4_cos1", "B4_sin1", "B8_c", "B8_cos1", "B8_sin1"]


def test_stats_block_matches_naive(gappy: TimeSeriesSet) -> None:
    x, names = build_features(gappy, ["stats"])
    assert names[:6] == ["B4_mean", "B4_std", "B4_min", "B4_max", "B4_argmax_frac", "B4_amplitude"]
    t = gappy.dates.astype(np.int64).astype(float)
    for i in range(gappy.n_samples):
        ok = gappy.mask[i]
        for b in range(gappy.n_bands):
            v = gappy.values[i, ok, b].astype(float)
            tt = t[ok]
            frac = (tt[np.argmax(v)] - tt[0]) / (tt[-1] - tt[0])
            expected = [v.mean(), v.std(), v.min(), v.max(), frac, v.max() - v.min()]
            np.testing.assert_allclose(x[i, b * 6 : b * 6 + 6], expected, rtol=1e-5, atol=1e-6)


def test_diff_block_and_order(gappy: TimeSeriesSet) -> None:
    x, names = build_features(gappy, ["diff", "values", "diff"])
    filled = interpolate_gaps(gappy).values
    assert len(names) == 18 + 20 and names[0] == "B4_d01" and names[18] == "B4_t00"
    np.testing.assert_allclose(x[:, 9 + 2], filled[:, 3, 1] - filled[:, 2, 1], atol=1e-6)
    x_again, names_again = build_features(gappy, ["diff", "values"])
    np.testing.assert_array_equal(x, x_again)
    assert names == names_again


def test_all_blocks_together(gappy: TimeSeriesSet) -> None:
    x, names = build_features(gappy, ("values", "indices", "harmonics", "stats", "diff"))
    assert x.shape == (gappy.n_samples, len(names)) and len(set(names)) == len(names)
    assert np.isfinite(x).all()


def test_errors(gappy: TimeSeriesSet) -> None:
    with pytest.raises(DataError, match="options"):
        build_features(gappy, ["values", "wavelets"])
    values = gappy.values.copy()
    values[2] = np.nan
    with pytest.raises(DataError, match="no valid observation"):
        build_features(gappy.replace(values=values), ["stats"])
