"""Whittaker and Savitzky–Golay smoothing with gaps, against reference formulas: a sparse
solve of (W + λ DᵀD) z = W y per series, scipy's savgol_filter, and per-window polyfit."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.signal import savgol_filter
from scipy.sparse.linalg import spsolve

from cropscope.errors import DataError
from cropscope.features import build_features
from cropscope.features.smoothing import (
    savitzky_golay,
    savitzky_golay_array,
    whittaker,
    whittaker_array,
)
from tests.conftest import make_toy_set


def whittaker_reference(y: np.ndarray, x: np.ndarray, lam: float, order: int,
                        w: np.ndarray | None = None) -> np.ndarray:
    """Eilers (2003): divided differences D_k = diag(k / (x_{i+k} - x_i)) Δ D_{k-1}."""
    t = len(y)
    d = sp.eye(t, format="csr")
    for k in range(1, order + 1):
        rows = t - k
        delta = sp.diags([-np.ones(rows), np.ones(rows)], [0, 1], shape=(rows, rows + 1))
        d = sp.diags(k / (x[k:] - x[:rows])) @ delta @ d
    weights = np.isfinite(y).astype(float) if w is None else np.where(np.isfinite(y), w, 0)
    a = sp.diags(weights) + lam * (d.T @ d)
    return spsolve(a.tocsc(), weights * np.nan_to_num(y))


def gappy(n: int = 40, t: int = 25, seed: int = 0, gaps: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.sin(np.linspace(0, 3, t))[None] + rng.normal(0, 0.2, (n, t))
    y[rng.random((n, t)) < gaps] = np.nan
    return y


@pytest.mark.parametrize("order", [1, 2, 3])
def test_whittaker_equals_sparse_solve_with_uneven_times(order: int) -> None:
    y = gappy()
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.uniform(0.3, 2.5, y.shape), axis=1)
    z = whittaker_array(y, 4.0, order, x=x)
    ref = np.array([whittaker_reference(y[i], x[i], 4.0, order) for i in range(len(y))])
    np.testing.assert_allclose(z, ref, atol=2e-6 * np.abs(ref).max())


def test_whittaker_shared_axis_bands_and_weights() -> None:
    y = gappy(n=10, t=18, seed=2)
    values = np.stack([y, 2 * y], axis=2)  # [N, T, C]
    z = whittaker_array(values, 2.5)
    x = np.arange(18, dtype=float)
    for c, scale in ((0, 1.0), (1, 2.0)):
        ref = np.array([whittaker_reference(scale * y[i], x, 2.5, 2) for i in range(10)])
        np.testing.assert_allclose(z[:, :, c], ref, atol=1e-5)
    w = np.random.default_rng(3).uniform(0.1, 2.0, y.shape)
    zw = whittaker_array(y, 2.5, weights=w)
    ref = np.array([whittaker_reference(y[i], x, 2.5, 2, w[i]) for i in range(10)])
    np.testing.assert_allclose(zw, ref, atol=1e-5)


def test_whittaker_limits() -> None:
    y = gappy(n=5, t=12, gaps=0.0)
    # tiny lambda: the data; huge lambda with order 2: the least-squares line
    np.testing.assert_allclose(whittaker_array(y, 1e-8), y, atol=1e-5)
    line = whittaker_array(y, 1e9)
    x = np.arange(12)
    for i in range(5):
        np.testing.assert_allclose(line[i], np.polyval(np.polyfit(x, y[i], 1), x), atol=1e-3)
    # too few observations: the mean of what there is; none: NaN
    few = np.full((2, 12), np.nan)
    few[0, 4] = 0.7
    out = whittaker_array(few, 1.0)
    assert np.allclose(out[0], 0.7) and np.isnan(out[1]).all()
    for bad in ({"lmbda": 0.0}, {"lmbda": np.nan}, {"order": 4}):
        with pytest.raises(DataError):
            whittaker_array(y, **bad)
    with pytest.raises(DataError, match="increase"):
        whittaker_array(y, 1.0, x=np.zeros(12))


def test_savgol_without_gaps_is_scipy() -> None:
    y = gappy(gaps=0.0)
    np.testing.assert_allclose(savitzky_golay_array(y, 7, 2),
                               savgol_filter(y, 7, 2, axis=1, mode="interp"), atol=1e-6)
    # the general (gap-aware) path gives the same on even per-sample times
    x = np.tile(np.arange(y.shape[1], dtype=float), (len(y), 1))
    np.testing.assert_allclose(savitzky_golay_array(y, 7, 3, x=x),
                               savgol_filter(y, 7, 3, axis=1, mode="interp"), atol=1e-5)


def test_savgol_with_gaps_equals_windowed_polyfit() -> None:
    y = gappy(n=25, t=20, gaps=0.35, seed=4)
    x = np.cumsum(np.random.default_rng(5).uniform(0.5, 1.5, y.shape), axis=1)
    window, poly = 7, 2
    out = savitzky_golay_array(y, window, poly, x=x)
    half = window // 2
    for i in range(len(y)):
        for j in range(y.shape[1]):
            s = min(max(j - half, 0), y.shape[1] - window)
            sl = slice(s, s + window)
            ok = np.isfinite(y[i, sl])
            if not ok.any():
                assert np.isnan(out[i, j])
                continue
            deg = min(poly, int(ok.sum()) - 1)
            coef = np.polyfit(x[i, sl][ok] - x[i, j], y[i, sl][ok], deg)
            assert out[i, j] == pytest.approx(coef[-1], abs=1e-5)
    for bad in ((4, 2), (5, 5), (31, 2)):
        with pytest.raises(DataError):
            savitzky_golay_array(y, *bad)


def test_set_wrappers_fill_gaps_and_use_dates() -> None:
    ts = make_toy_set(n_per_class=6, n_times=14, nan_fraction=0.25, seed=7)
    sm = whittaker(ts, 2.0)
    assert sm.mask.all() and sm.bands == ts.bands and np.isfinite(sm.values).all()
    # dates 30 days apart: the step-time axis is the step index, so this is the plain smoother
    obs = np.where(ts.mask[:, :, None], ts.values, np.nan)
    np.testing.assert_allclose(sm.values, whittaker_array(obs, 2.0), atol=1e-6)
    sg = savitzky_golay(ts, 5, 2)
    assert np.isfinite(sg.values).all()
    np.testing.assert_allclose(sg.values, savitzky_golay_array(obs, 5, 2, x=np.arange(14.0)),
                               atol=1e-6)


def test_smoothing_as_feature_steps() -> None:
    ts = make_toy_set(n_per_class=5, n_times=10, nan_fraction=0.2, seed=8)
    x, names = build_features(ts, ["whittaker:3", "values"])
    ref, _ = build_features(whittaker(ts, 3.0), ["values"])
    np.testing.assert_allclose(x, ref, atol=1e-6)
    x2, _ = build_features(ts, ["sgolay:5:1", "stats"])
    ref2, _ = build_features(savitzky_golay(ts, 5, 1), ["stats"])
    np.testing.assert_allclose(x2, ref2, atol=1e-6)
    # steps apply to the blocks after them only
    x3, names3 = build_features(ts, ["stats", "whittaker:3", "values"])
    raw_stats, _ = build_features(ts, ["stats"])
    np.testing.assert_allclose(x3[:, : raw_stats.shape[1]], raw_stats)
    assert names3[raw_stats.shape[1]:] == names
    for bad in (["whittaker:a", "values"], ["whittaker:1:2:3", "values"], ["whittaker:3"]):
        with pytest.raises(DataError):
            build_features(ts, bad)
