"""Interval quantiles (QUANT features): counts, definition, gaps, and the feature spec."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cropscope.errors import DataError
from cropscope.features.gapfill import interpolate_gaps
from cropscope.features.intervals import interval_quantiles
from cropscope.features.tabular import build_features
from tests.conftest import make_toy_set


def _count(n_times: int, max_depth: int = 6) -> int:
    """Features of one view of length ``n_times``, from the definition."""
    total = 0
    for d in range(min(max_depth, int(np.log2(n_times))) + 1):
        edges = np.linspace(0, n_times, 2**d + 1).astype(int)
        total += sum(1 + (b - a - 1) // 4 for a, b in itertools.pairwise(edges))
    return total


def test_feature_count_for_the_ucr_crop_length() -> None:
    x = np.random.default_rng(0).normal(size=(5, 46, 2)).astype(np.float32)
    f, names = interval_quantiles(x, ["a", "b"])
    per_band = _count(46) + _count(45) + _count(44) + _count(24)
    assert per_band == 343
    assert f.shape == (5, 2 * per_band) and len(names) == f.shape[1] == len(set(names))
    assert names[0] == "a_x0.0_q0" and names[per_band] == "b_x0.0_q0"
    assert f.dtype == np.float32 and np.isfinite(f).all()


def test_values_follow_the_definition() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 16, 1))
    f, names = interval_quantiles(x, ["v"], max_depth=1)
    col = dict(zip(names, f.T, strict=True))
    s = x[:, :, 0]
    # depth 0: 16 values -> 4 quantiles at 0, 1/3, 2/3, 1; the 2nd and 4th minus the mean
    np.testing.assert_allclose(col["v_x0.0_q0"], s.min(axis=1), rtol=1e-6)
    np.testing.assert_allclose(col["v_x0.0_q1"], np.quantile(s, 1 / 3, axis=1) - s.mean(axis=1),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(col["v_x0.0_q3"], s.max(axis=1) - s.mean(axis=1), rtol=1e-5)
    # depth 1, second half: 8 values -> 2 quantiles (min, max minus the mean)
    half = s[:, 8:]
    np.testing.assert_allclose(col["v_x1.1_q0"], half.min(axis=1), rtol=1e-6)
    np.testing.assert_allclose(col["v_x1.1_q1"], half.max(axis=1) - half.mean(axis=1), rtol=1e-5)
    # differences and the spectrum
    d2 = np.diff(s, n=2, axis=1)
    np.testing.assert_allclose(col["v_d20.0_q0"], d2.min(axis=1), rtol=1e-5)
    spec = np.abs(np.fft.rfft(s, axis=1))
    np.testing.assert_allclose(col["v_fft0.0_q0"], spec.min(axis=1), rtol=1e-5)


def test_a_band_without_values_gives_nan_features_and_short_series_work() -> None:
    x = np.random.default_rng(2).normal(size=(4, 3, 2))
    x[1, :, 1] = np.nan
    f, names = interval_quantiles(x, ["a", "b"])
    b_cols = np.array([n.startswith("b_") for n in names])
    assert np.isnan(f[1, b_cols]).all() and np.isfinite(f[1, ~b_cols]).all()
    assert np.isfinite(np.delete(f, 1, axis=0)).all()
    one, _ = interval_quantiles(x[:, :1, :1], ["a"])
    assert one.shape == (4, 2)  # the value itself and its (one-term) spectrum


def test_bad_input_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"\[N, T, C\]"):
        interval_quantiles(np.zeros((3, 5)), ["a"])
    with pytest.raises(DataError, match="bands"):
        interval_quantiles(np.zeros((3, 5, 2)), ["a"])
    with pytest.raises(DataError, match="max_depth"):
        interval_quantiles(np.zeros((3, 5, 1)), ["a"], max_depth=-1)


def test_feature_spec_block_is_the_quantiles_of_the_gap_filled_series() -> None:
    ts = make_toy_set(n_per_class=5, n_times=20, seed=3, nan_fraction=0.2)
    table, names = build_features(ts, ["values", "quantiles"])
    filled = interpolate_gaps(ts)
    expected, expected_names = interval_quantiles(filled.values, ts.bands)
    n_values = ts.n_times * ts.n_bands
    np.testing.assert_array_equal(table[:, n_values:], expected)
    assert names[n_values:] == expected_names
