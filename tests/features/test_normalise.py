"""Standard normal variate (SNV) of spectra, as an array function and a feature step."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cropscope.errors import DataError
from cropscope.features import build_features, snv, snv_array
from tests.conftest import make_toy_set


def _reference(spectrum: np.ndarray) -> np.ndarray:
    """SNV of one spectrum by its definition (NaN bands left out, sample std; a spectrum
    without spread becomes zeros)."""
    x = spectrum.astype(np.float64)
    ok = np.isfinite(x)
    if ok.sum() < 2 or np.std(x[ok]) == 0:
        return np.where(ok, 0.0, np.nan)
    return np.where(ok, (x - x[ok].mean()) / x[ok].std(ddof=1), np.nan)


def test_snv_equals_its_definition_with_gaps() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(0.0, 0.6, (40, 3, 9)).astype(np.float32)
    values[rng.random(values.shape) < 0.2] = np.nan
    values[0, 0, :8] = np.nan  # one finite band: no spread to divide by
    values[1, 1] = 0.25  # a flat spectrum
    values[2, 2] = np.nan  # no finite band
    out = snv_array(values)
    assert out.shape == values.shape and out.dtype == np.float32
    expected = np.apply_along_axis(_reference, -1, values)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # no spread: zeros (the observation stays valid); nothing finite: still all NaN
    assert out[0, 0, 8] == 0 and np.isnan(out[0, 0, :8]).all() and (out[1, 1] == 0).all()
    assert np.isnan(out[2, 2]).all()


@settings(max_examples=40, deadline=None)
@given(gain=st.floats(0.05, 20.0), offset=st.floats(-1.0, 1.0), seed=st.integers(0, 1000))
def test_snv_ignores_brightness(gain: float, offset: float, seed: int) -> None:
    """The point of SNV: a spectrum scaled and shifted (illumination, background) keeps
    its normalised shape."""
    spectrum = np.random.default_rng(seed).uniform(0.05, 0.6, (1, 30)).astype(np.float64)
    base = snv_array(spectrum)
    moved = snv_array(spectrum * gain + offset)
    np.testing.assert_allclose(moved, base, atol=2e-5)
    np.testing.assert_allclose(base.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(base.std(ddof=1), 1.0, atol=1e-5)


def test_snv_step_in_a_feature_spec() -> None:
    ts = make_toy_set(n_per_class=4, bands=("B2", "B4", "B8"))
    table, names = build_features(ts, ["snv", "values"])
    plain, plain_names = build_features(snv(ts), ["values"])
    assert names == plain_names
    np.testing.assert_array_equal(table, plain)
    # each step's three bands are now centred
    np.testing.assert_allclose(snv(ts).values.sum(axis=2), 0.0, atol=1e-5)
    with pytest.raises(DataError, match="no parameters"):
        build_features(ts, ["snv:2", "values"])
