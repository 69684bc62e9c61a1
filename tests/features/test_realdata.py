from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.features import (
    add_indices,
    build_features,
    composite_median,
    harmonic_coefficients,
    harmonic_design,
    harmonic_time,
    reconstruct_harmonics,
)


@pytest.mark.realdata
def test_mato_grosso_features(real_data_dir: Path) -> None:
    data = np.load(real_data_dir / "sits_matogrosso" / "samples_mt_4bands.npz")
    dates = np.datetime64("1970-01-01") + data["days_since_1970"].astype("timedelta64[D]")
    ts = TimeSeriesSet.from_labels(data["X"], list(data["bands"]), data["y"], dates=dates)
    assert ts.bands == ["NDVI", "EVI", "NIR", "MIR"]

    # NDVI/EVI exist already (kept); NBR comes from NIR and MODIS MIR (2.1 um)
    with_idx = add_indices(ts, ["NDVI", "NBR"])
    assert with_idx.bands == [*ts.bands, "NBR"]
    nbr = with_idx.band("NBR")
    assert np.isfinite(nbr).all() and (np.abs(nbr) <= 1).all()

    # order-3 harmonics explain most of the (noisy, often double-cropped) NDVI curves and
    # equal a per-series least-squares fit
    coef = harmonic_coefficients(ts.select_bands(["NDVI"]), order=3)
    assert coef.shape == (len(ts), 7) and np.isfinite(coef).all()
    t, period = harmonic_time(ts)
    fitted = reconstruct_harmonics(coef, t, order=3, period_days=period)[:, :, 0]
    ndvi = ts.band("NDVI")
    rmse = float(np.sqrt(np.mean((fitted - ndvi) ** 2)))
    assert rmse < 0.5 * float(ndvi.std()), rmse  # R^2 > 0.75
    for i in range(0, len(ts), 200):
        design = harmonic_design(t[i] / period, 3)
        ref = np.linalg.lstsq(design, ndvi[i].astype(float), rcond=None)[0]
        np.testing.assert_allclose(coef[i], ref, atol=1e-5)
    assert 0.2 < float(np.median(coef[:, 0])) < 0.9  # mean NDVI of a season

    # 16 distinct seasons (Sep-Aug, 2000-2016) on one 16-day grid
    comp = composite_median(ts, step=16, align="season")
    assert comp.dates.ndim == 1 and 22 <= comp.n_times <= 24  # one season, not 16 years
    assert comp.mask[:, :22].mean() > 0.95
    finite = comp.values[comp.mask]
    assert finite.min() > -0.5 and finite.max() < 1.5

    x, names = build_features(ts, ("values", "harmonics", "stats"))
    assert x.shape == (len(ts), len(names)) and np.isfinite(x).all()
