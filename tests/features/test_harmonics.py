from __future__ import annotations

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.features import (
    fit_harmonics_array,
    harmonic_coefficients,
    harmonic_design,
    harmonic_feature_names,
    reconstruct_harmonics,
)
from cropscope.features.harmonics import _cholesky_solve_inplace, _gram_map


def lstsq_reference(values, t, order, period=365.25):
    """Per sample and band np.linalg.lstsq on the finite observations."""
    n, nt, c = values.shape
    t = np.broadcast_to(t, (n, nt))
    p = 2 * order + 1
    out = np.full((n, c * p), np.nan)
    for i in range(n):
        x = harmonic_design(t[i] / period, order)
        for b in range(c):
            ok = np.isfinite(values[i, :, b])
            out[i, b * p : (b + 1) * p] = np.linalg.lstsq(x[ok], values[i, ok, b], rcond=None)[0]
    return out


def test_design_columns() -> None:
    t = np.array([0.0, 0.25, 0.5])
    x = harmonic_design(t, 2)
    angle = 2 * np.pi * t
    columns = [np.ones(3), np.cos(angle), np.sin(angle), np.cos(2 * angle), np.sin(2 * angle)]
    expected = np.stack(columns, axis=1)
    np.testing.assert_allclose(x, expected)
    assert harmonic_feature_names(["B4", "B8"], 1) == [
        "B4_c", "B4_cos1", "B4_sin1", "B8_c", "B8_cos1", "B8_sin1",
    ]  # fmt: skip


@pytest.mark.parametrize("order", [0, 1, 2, 3, 5])
def test_gram_from_product_formulas(order: int) -> None:
    rng = np.random.default_rng(order)
    t, w = rng.random(40), rng.random(40)
    x = harmonic_design(t, order)
    gram = (x.T * w) @ x
    sums = harmonic_design(t, 2 * order).T @ w
    np.testing.assert_allclose(_gram_map(order) @ sums, gram.ravel(), atol=1e-12)


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("order", [1, 3])
def test_fit_matches_lstsq_with_gaps(per_sample: bool, order: int) -> None:
    rng = np.random.default_rng(order)
    n, nt, c = 30, 36, 2
    values = rng.normal(size=(n, nt, c)).astype(np.float32)
    values[rng.random((n, nt)) < 0.25] = np.nan  # cloudy steps (all bands)
    shape = (n, nt) if per_sample else (nt,)
    t = np.sort(rng.uniform(0, 365, size=shape), axis=-1)
    coef = fit_harmonics_array(values, t, order=order)
    assert coef.shape == (n, c * (2 * order + 1)) and coef.dtype == np.float32
    np.testing.assert_allclose(coef, lstsq_reference(values, t, order), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("per_sample", [False, True])
def test_fit_with_band_specific_gaps_and_mask(per_sample: bool) -> None:
    rng = np.random.default_rng(7)
    n, nt = 12, 30
    values = rng.normal(size=(n, nt, 3)).astype(np.float32)
    values[rng.random((n, nt, 3)) < 0.2] = np.nan  # different gaps per band
    mask = rng.random((n, nt)) > 0.1
    t = np.sort(rng.uniform(0, 365, (n, nt) if per_sample else nt), axis=-1)
    coef = fit_harmonics_array(values, t, mask=mask, order=2)
    masked = np.where(mask[:, :, None], values, np.nan)
    np.testing.assert_allclose(coef, lstsq_reference(masked, t, 2), rtol=1e-4, atol=1e-5)


def test_integer_days_over_several_years() -> None:
    """Integral day numbers (the usual case) take a lookup-table path for cos/sin."""
    rng = np.random.default_rng(3)
    n, nt = 40, 25
    days = np.sort(rng.choice(3 * 365, size=(n, nt), replace=True), axis=1) + 15000
    values = rng.normal(size=(n, nt, 2)).astype(np.float32)
    values[rng.random((n, nt)) < 0.2] = np.nan
    coef = fit_harmonics_array(values, days, order=2)
    np.testing.assert_allclose(coef, lstsq_reference(values, days, 2), rtol=1e-4, atol=1e-5)


def test_exact_recovery_and_reconstruction() -> None:
    t = np.arange(0, 365, 8).astype(float)
    true = np.array([[0.3, 0.1, -0.2, 0.05, 0.02]])  # c, cos1, sin1, cos2, sin2
    y = (harmonic_design(t / 365.25, 2) @ true[0])[None, :, None].astype(np.float32)
    y[0, 3:9] = np.nan
    coef = fit_harmonics_array(y, t, order=2)
    np.testing.assert_allclose(coef, true, atol=1e-5)
    back = reconstruct_harmonics(coef, t, order=2)
    np.testing.assert_allclose(back[0, :, 0], harmonic_design(t / 365.25, 2) @ true[0], atol=1e-5)


def test_rank_deficient_fits_are_nan() -> None:
    t = np.arange(10) * 30.0
    values = np.ones((3, 10, 1), dtype=np.float32)
    values[0, 4:] = np.nan  # 4 observations < 5 coefficients
    values[1, :, 0] = np.where(np.arange(10) < 5, 1.0, np.nan)  # 5 obs, fine
    values[2] = 2.0
    t2 = np.tile(t, (3, 1))
    t2[2] = np.repeat([0.0, 100.0], 5)  # 10 obs on 2 distinct dates
    coef = fit_harmonics_array(values, t2, order=2)
    assert np.isnan(coef[0]).all()
    np.testing.assert_allclose(coef[1], [1, 0, 0, 0, 0], atol=1e-4)
    assert np.isnan(coef[2]).all()


def test_harmonic_coefficients_day_of_year_phase() -> None:
    """Same day-of-year curve in different years -> same coefficients; phase from 1 Jan."""
    doy = np.arange(5, 360, 10)
    true = np.array([0.4, 0.0, 0.3])  # peak of sin at DOY ~91
    rows = []
    for year in (2015, 2019):
        rows.append(np.datetime64(f"{year}-01-01") + (doy - 1).astype("m8[D]"))
    dates = np.stack(rows)
    t = (doy - 1).astype(float)
    y = harmonic_design(t / 365.25, 1) @ true
    values = np.repeat(y[None, :, None], 2, axis=0).astype(np.float32)
    ts = TimeSeriesSet(values, ["NDVI"], dates=dates)
    coef = harmonic_coefficients(ts, order=1)
    np.testing.assert_allclose(coef, np.tile(true, (2, 1)), atol=1e-3)


def test_undated_steps_are_ignored() -> None:
    days = np.arange(0, 360, 10)
    y = harmonic_design(days / 365.25, 1) @ np.array([1.0, 0.5, 0.2])
    dates = np.tile(np.datetime64("2020-01-01") + days.astype("m8[D]"), (2, 1))
    dates[1, 3] = np.datetime64("NaT")
    values = np.tile(y, (2, 1))[:, :, None].astype(np.float32)
    values[1, 3] = 99.0  # an undated outlier must not enter the fit
    coef = harmonic_coefficients(TimeSeriesSet(values, ["x"], dates=dates), order=1)
    np.testing.assert_allclose(coef, [[1.0, 0.5, 0.2]] * 2, atol=1e-5)


def test_harmonic_coefficients_without_dates_uses_series_length() -> None:
    nt = 24
    y = 1.0 + np.cos(2 * np.pi * np.arange(nt) / nt)
    ts = TimeSeriesSet(y[None, :, None].astype(np.float32), ["x"])
    np.testing.assert_allclose(harmonic_coefficients(ts, order=1), [[1.0, 1.0, 0.0]], atol=1e-5)


def test_bad_arguments() -> None:
    with pytest.raises(DataError):
        fit_harmonics_array(np.zeros((2, 5, 1)), np.arange(4), order=1)
    with pytest.raises(DataError):
        fit_harmonics_array(np.zeros((2, 5, 1)), np.arange(5), order=-1)
    with pytest.raises(DataError):
        harmonic_design(np.arange(3), 1, period=0)


def test_batched_cholesky_matches_numpy_solve() -> None:
    """Batch-last in-place solve vs np.linalg.solve; singular systems are flagged."""
    rng = np.random.default_rng(0)
    p, r, batch = 5, 3, 40
    a = rng.normal(size=(batch, 8, p))
    gram = a.transpose(0, 2, 1) @ a  # SPD
    gram[7] = np.outer(a[7, 0], a[7, 0])  # rank 1: must not pass
    rhs = rng.normal(size=(batch, p, r))
    ok = _cholesky_solve_inplace(
        np.ascontiguousarray(gram.transpose(1, 2, 0)), x := rhs.transpose(1, 2, 0).copy()
    )
    assert not ok[7] and ok[np.arange(batch) != 7].all()
    good = np.arange(batch) != 7
    expected = np.linalg.solve(gram[good], rhs[good])
    np.testing.assert_allclose(x.transpose(2, 0, 1)[good], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n_bands", [1, 3, 5])
@pytest.mark.parametrize("chunk", [None, 7])
def test_fit_shared_times_edge_cases(n_bands: int, chunk: int | None) -> None:
    """Shared times across sub-chunk and chunk boundaries (600 > 512 samples per pass), all-NaN
    series, a series with exactly 2*order+1 observations, and shared-step and per-band gaps."""
    rng = np.random.default_rng(n_bands)
    n, nt, order = 600, 30, 2
    p = 2 * order + 1
    t = np.sort(rng.uniform(0, 365, nt))
    values = rng.normal(size=(n, nt, n_bands)).astype(np.float32)
    values[rng.random((n, nt)) < 0.3] = np.nan
    values[4] = np.nan  # no observation
    spread = np.linspace(0, nt - 1, p).astype(int)  # over the year: well conditioned
    values[5] = np.nan  # exactly p observations
    values[5, spread] = rng.normal(size=(p, n_bands))
    values[6] = np.nan  # p - 1 observations
    values[6, spread[1:]] = rng.normal(size=(p - 1, n_bands))
    ref = lstsq_reference(values, t, order)
    few = np.isfinite(values[:, :, 0]).sum(axis=1) < p
    assert few[[4, 6]].all() and not few[5]
    ref[few] = np.nan
    coef = fit_harmonics_array(values, t, order=order, chunk=chunk)
    np.testing.assert_allclose(coef, ref, rtol=1e-4, atol=1e-5)
    assert np.isnan(coef[[4, 6]]).all() and np.isfinite(coef[5]).all()
    values[rng.random(values.shape) < 0.1] = np.nan  # now gaps differ between bands
    coef = fit_harmonics_array(values, t, order=order, chunk=chunk)
    ref = lstsq_reference(values, t, order)
    ref[np.isnan(coef)] = np.nan  # too few observations in some bands
    np.testing.assert_allclose(coef, ref, rtol=1e-4, atol=1e-5)
    assert np.isnan(coef[4]).all()


def test_fit_result_does_not_depend_on_chunking() -> None:
    rng = np.random.default_rng(11)
    values = rng.normal(size=(700, 20, 2)).astype(np.float32)
    values[rng.random((700, 20)) < 0.25] = np.nan
    t = np.sort(rng.uniform(0, 365, 20))
    whole = fit_harmonics_array(values, t, order=2)
    for chunk in (1, 13, 512):
        np.testing.assert_array_equal(fit_harmonics_array(values, t, order=2, chunk=chunk), whole)
    threaded = fit_harmonics_array(values, t, order=2, chunk=100, n_jobs=2)
    np.testing.assert_array_equal(threaded, whole)
