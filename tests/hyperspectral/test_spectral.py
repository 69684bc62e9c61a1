"""Spectral tools: bad bands, band responses, resampling, Sentinel-2, continuum, stats."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from cropscope.errors import DataError
from cropscope.hyperspectral import (
    BandStatistics,
    bad_band_mask,
    band_statistics,
    continuum_removal,
    drop_bad_bands,
    gaussian_response,
    open_hyperspectral,
    open_labels,
    resample,
    resample_like,
    resampling_matrix,
    simulate_sentinel2,
    spectral_derivative,
)
from cropscope.hyperspectral.readers._scene import build_scene
from cropscope.hyperspectral.sentinel2 import SENTINEL2_BANDS


def make_scene(spectra: np.ndarray, wavelength: np.ndarray, fwhm: float | np.ndarray = 10.0,
               bad: np.ndarray | None = None) -> xr.DataArray:
    """``spectra [y, x, band]`` -> a scene with the reader convention."""
    data = np.moveaxis(np.asarray(spectra, dtype=np.float32), -1, 0)
    return build_scene(data, wavelength=wavelength,
                       fwhm=np.broadcast_to(np.asarray(fwhm, float), wavelength.shape).copy(),
                       bad_band=bad, sensor="test", units="reflectance")


def vegetation(wl: np.ndarray) -> np.ndarray:
    """A stylised green-vegetation spectrum: low red, steep red edge, high NIR."""
    red_edge = 0.05 + 0.45 / (1 + np.exp(-(wl - 715) / 12))
    green_bump = 0.04 * np.exp(-0.5 * ((wl - 555) / 25) ** 2)
    swir = np.where(wl > 1300, 0.5 - 0.00025 * (wl - 1300), 0.5)
    return np.where(wl < 715, red_edge + green_bump, np.minimum(red_edge, swir))


WL = np.arange(400.0, 2501.0, 5.0)


# ------------------------------------------------------------------------ bad bands
def test_bad_band_mask_windows_edge_and_flags() -> None:
    wl = np.array([500.0, 1340.0, 1400.0, 1461.0, 1800.0, 2000.0, 2451.0, np.nan])
    flags = np.array([False, False, False, False, False, True, False, False])
    scene = make_scene(np.zeros((1, 1, wl.size)), wl, bad=flags)
    mask = bad_band_mask(scene)
    assert mask.tolist() == [False, True, True, False, True, True, True, False]
    assert bad_band_mask(scene, windows=(), max_wavelength=None, use_flags=False).sum() == 0
    dropped = drop_bad_bands(scene)
    assert dropped.sizes["band"] == 3
    assert dropped.attrs["dropped_bands"] == [2, 3, 5, 6, 7]
    np.testing.assert_array_equal(dropped["band"].values, [1, 4, 8])
    with pytest.raises(DataError, match="every band is bad"):
        drop_bad_bands(scene.isel(band=slice(0, 7)), windows=((0, 3000),))
    with pytest.raises(DataError, match="reversed"):
        bad_band_mask(scene, windows=((1460, 1340),))


# ------------------------------------------------------------------ band responses
def test_gaussian_response_has_unit_area_and_the_right_width() -> None:
    grid = np.arange(300.0, 1000.0, 0.1)
    resp = gaussian_response([500.0, 700.0], [10.0, 40.0], grid)
    np.testing.assert_allclose(np.trapezoid(resp, grid, axis=1), 1.0, atol=1e-6)
    for row, centre, fwhm in ((0, 500.0, 10.0), (1, 700.0, 40.0)):
        peak = resp[row, np.argmin(np.abs(grid - centre))]
        half = resp[row, np.argmin(np.abs(grid - (centre + fwhm / 2)))]
        assert half / peak == pytest.approx(0.5, abs=0.01)
    with pytest.raises(DataError, match="FWHM"):
        gaussian_response([500.0], [0.0], grid)


def test_resampling_weights_integrate_to_one_and_preserve_linear_spectra() -> None:
    target = np.array([450.0, 800.0, 1234.5, 2200.0])
    widths = np.array([30.0, 100.0, 12.0, 180.0])
    weights, coverage = resampling_matrix(WL, target, widths, np.full(WL.size, 6.0))
    assert weights.shape == (4, WL.size)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(coverage, 1.0, atol=1e-3)
    assert (weights >= 0).all()
    # a linear spectrum resamples to its value at the (symmetric) band centre
    spectrum = 0.1 + 1e-4 * WL
    np.testing.assert_allclose(weights @ spectrum, 0.1 + 1e-4 * target, rtol=1e-3)
    # a target outside the source range is not covered
    _, cov = resampling_matrix(WL, [3000.0, 2500.0, 2510.0], [20.0, 20.0, 20.0],
                               np.full(WL.size, 6.0))
    assert cov[0] < 1e-6
    assert 0.5 < cov[1] < 0.9  # half the response, plus the reach of the last band
    assert cov[2] < 0.5
    with pytest.raises(DataError, match="source wavelengths must all be known"):
        resampling_matrix(np.array([500.0, np.nan]), [500.0], [10.0])


def test_resample_skips_bad_bands_and_nan_pixels() -> None:
    spectra = np.tile(vegetation(WL), (2, 3, 1))
    bad = np.zeros(WL.size, bool)
    bad[WL == 850.0] = True
    spectra[..., bad] = 1e6  # garbage in flagged bands must not leak
    spectra[0, 0, (WL > 600) & (WL < 700)] = np.nan  # a pixel with missing red bands
    scene = make_scene(spectra, WL, 6.0, bad)
    out = resample(scene, [850.0, 650.0, 2600.0], [20.0, 30.0, 20.0],
                   band_names=["nir", "red", "far"])
    assert out.dims == ("band", "y", "x") and out["band"].values.tolist() == ["nir", "red", "far"]
    clean = resample(make_scene(np.tile(vegetation(WL), (2, 3, 1)), WL, 6.0), [850.0], [20.0])
    np.testing.assert_allclose(out.sel(band="nir").values, clean.values[0], rtol=1e-4)
    assert np.isnan(out.sel(band="red").values[0, 0])
    assert np.isfinite(out.sel(band="red").values[1, 2])
    assert np.isnan(out.sel(band="far").values).all()
    assert out["bad_band"].values.tolist() == [False, False, True]
    assert out.attrs["coverage"][2] < 0.5


def test_resample_like_another_sensor() -> None:
    scene = make_scene(np.tile(vegetation(WL), (1, 2, 1)), WL, 6.0)
    other_wl = np.array([550.0, 670.0, 860.0])
    other = make_scene(np.zeros((1, 1, 3)), other_wl, np.array([20.0, 20.0, 20.0]))
    out = resample_like(scene, other)
    np.testing.assert_allclose(out["wavelength"].values, other_wl)
    assert out.values[2, 0, 0] > 0.45 and out.values[1, 0, 0] < 0.1


# ------------------------------------------------------------------------ Sentinel-2
def test_simulated_sentinel2_of_a_vegetation_spectrum() -> None:
    scene = make_scene(vegetation(WL)[None, None, :], WL, 6.0)
    s2 = simulate_sentinel2(scene)
    assert s2["band"].values.tolist() == ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A",
                                          "B11", "B12"]
    values = dict(zip(s2["band"].values.tolist(), s2.values[:, 0, 0].tolist(), strict=True))
    # the Gaussian approximation stays within 0.006 of a flat (box) band of the nominal width
    fine = np.arange(400.0, 2500.0, 0.1)
    for band, value in values.items():
        centre, width = SENTINEL2_BANDS["S2A"][band]
        box = vegetation(fine[np.abs(fine - centre) <= width / 2]).mean()
        assert value == pytest.approx(box, abs=0.006), band
    assert values["B4"] < 0.07 and values["B8A"] == pytest.approx(0.5, abs=0.01)
    assert values["B3"] > values["B2"] and values["B3"] > values["B4"]  # green peak
    assert values["B4"] < values["B5"] < values["B6"] < values["B7"]  # red edge
    assert values["B11"] > values["B12"]
    np.testing.assert_allclose(s2["wavelength"].values[:3], [492.4, 559.8, 664.6])
    s2b = simulate_sentinel2(scene, ["B02", "B12"], platform="s2b")
    np.testing.assert_allclose(s2b["fwhm"].values, [66.0, 185.0])
    with pytest.raises(DataError, match="unknown Sentinel-2 bands"):
        simulate_sentinel2(scene, ["B13"])
    with pytest.raises(DataError, match="platform"):
        simulate_sentinel2(scene, platform="S2Z")
    assert set(SENTINEL2_BANDS["S2A"]) == set(SENTINEL2_BANDS["S2B"])


@pytest.mark.realdata
def test_sentinel2_from_real_enmap_tiles(real_data_dir) -> None:
    """Reflectance within [-0.05, 1.05] (the data hold small negatives down to -0.0496
    and a few values above 1), and vegetation (classes 3 low vegetation, 4 tree) has
    NIR > red."""
    folder = real_data_dir / "hyperspectral" / "enmap_potsdam_tiles"
    red, nir, ndvi_tree = [], [], []
    for tile in sorted((folder / "images").glob("*.tif"))[:6]:
        s2 = simulate_sentinel2(open_hyperspectral(tile))
        assert np.isfinite(s2.values).all() and not s2["bad_band"].values.any()
        assert -0.05 <= s2.values.min() and s2.values.max() <= 1.05
        labels = open_labels(folder / "labels" / tile.name).values
        veg = (labels == 3) | (labels == 4)
        b4, b8 = s2.sel(band="B4").values, s2.sel(band="B8").values
        red.append(b4[veg])
        nir.append(b8[veg])
        tree = labels == 4
        ndvi_tree.append((b8[tree] - b4[tree]) / (b8[tree] + b4[tree]))
    red_all, nir_all = np.concatenate(red), np.concatenate(nir)
    assert red_all.size > 100
    assert np.mean(nir_all > red_all) > 0.97
    assert np.median(np.concatenate(ndvi_tree)) > 0.6


# ------------------------------------------------------------------- continuum removal
def _reference_hull(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Plain monotone-chain upper hull, one spectrum, for checking the vectorised one."""
    hull: list[int] = []
    for i in range(len(x)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (x[b] - x[a]) * (y[i] - y[a]) - (y[b] - y[a]) * (x[i] - x[a])
            if cross >= 0:
                hull.pop()
            else:
                break
        hull.append(i)
    return np.interp(x, x[hull], y[hull])


def test_continuum_removal_matches_a_reference_hull() -> None:
    rng = np.random.default_rng(0)
    wl = np.sort(rng.uniform(400, 2500, 60))
    spectra = rng.uniform(0.05, 0.6, size=(7, 5, 60))
    scene = make_scene(spectra, wl)
    removed, hull = continuum_removal(scene, return_hull=True)
    assert removed.dims == scene.dims and removed.dtype == np.float32
    for i in range(7):
        for j in range(5):
            ref = _reference_hull(wl, spectra[i, j])
            np.testing.assert_allclose(hull.values[:, i, j], ref, rtol=1e-5)
            np.testing.assert_allclose(removed.values[:, i, j], spectra[i, j] / ref, rtol=1e-5)
    assert np.nanmax(removed.values) <= 1.0 + 1e-6


def test_continuum_removal_of_an_absorption_feature_and_nan() -> None:
    wl = np.arange(2000.0, 2400.0, 5.0)
    continuum = 0.3 + 0.0002 * (wl - 2000)
    spectrum = continuum * (1 - 0.4 * np.exp(-0.5 * ((wl - 2200) / 20) ** 2))
    spectra = np.stack([spectrum, spectrum])[None]
    spectra[0, 1, 10] = np.nan
    removed = continuum_removal(make_scene(spectra, wl)).values
    assert removed[0, 0, 0] == pytest.approx(1.0) and removed[-1, 0, 0] == pytest.approx(1.0)
    assert wl[np.argmin(removed[:, 0, 0])] == 2200.0
    assert removed[:, 0, 0].min() == pytest.approx(0.6, abs=0.01)
    assert np.isnan(removed[10, 0, 1]) and np.isfinite(np.delete(removed[:, 0, 1], 10)).all()


def test_derivatives_of_a_quadratic_spectrum() -> None:
    wl = np.array([400.0, 410.0, 425.0, 440.0, 450.0, 470.0, 480.0])
    spectrum = 1e-5 * (wl - 400) ** 2 + 0.1
    scene = make_scene(spectrum[None, None, :], wl)
    first = spectral_derivative(scene).values[:, 0, 0]
    np.testing.assert_allclose(first[1:-1], 2e-5 * (wl[1:-1] - 400), rtol=1e-5)
    second = spectral_derivative(scene, order=2).values[2:-2, 0, 0]
    np.testing.assert_allclose(second, 2e-5, rtol=1e-3)
    # band order is kept when wavelengths are not sorted (EnMAP VNIR/SWIR overlap)
    shuffled = scene.isel(band=[0, 1, 2, 4, 3, 5, 6])
    np.testing.assert_allclose(spectral_derivative(shuffled).values[:, 0, 0],
                               first[[0, 1, 2, 4, 3, 5, 6]], rtol=1e-6)
    with pytest.raises(DataError, match="order"):
        spectral_derivative(scene, order=3)


# ------------------------------------------------------------------ band statistics
def test_band_statistics_ignore_nan_and_bad_bands(tmp_path) -> None:
    rng = np.random.default_rng(5)
    wl = np.array([500.0, 600.0, 1400.0, 800.0])
    a = rng.normal(0.3, 0.05, size=(4, 6, 4))
    b = rng.normal(0.35, 0.07, size=(3, 6, 4))
    a[0, 0, 1] = np.nan
    bad = np.array([False, False, True, False])
    stats = band_statistics([make_scene(a, wl, bad=bad), make_scene(b, wl, bad=bad)])
    pooled = np.concatenate([a.reshape(-1, 4), b.reshape(-1, 4)]).astype(np.float32)
    np.testing.assert_allclose(np.asarray(stats.mean)[[0, 1, 3]],
                               np.nanmean(pooled, axis=0)[[0, 1, 3]], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(stats.std)[[0, 1, 3]],
                               np.nanstd(pooled, axis=0)[[0, 1, 3]], rtol=1e-4)
    assert np.isnan(stats.mean[2]) and stats.bad_band == (False, False, True, False)
    assert stats.n_pixels == 24 + 18

    text = stats.to_json(tmp_path / "stats.json")
    assert '"mean": [' in text and "NaN" not in text and "null" in text
    again = BandStatistics.from_json(tmp_path / "stats.json")
    assert again.bad_band == stats.bad_band
    np.testing.assert_allclose(again.mean, stats.mean, equal_nan=True)
    assert BandStatistics.from_json(text).n_pixels == stats.n_pixels

    normed = stats.normalise(make_scene(b, wl, bad=bad))
    assert np.isnan(normed.values[2]).all()
    assert abs(float(np.nanmean(normed.values[0]))) < 3  # finite, centred-ish
    same = stats.normalise(make_scene(np.concatenate([a.reshape(-1, 4), b.reshape(-1, 4)])
                                      [None], wl, bad=bad))
    np.testing.assert_allclose(np.nanmean(same.values[[0, 1, 3]], axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.nanstd(same.values[[0, 1, 3]], axis=(1, 2)), 1.0, atol=1e-4)

    with pytest.raises(DataError, match="differ"):
        stats.normalise(make_scene(b, wl + 5, bad=bad))
    with pytest.raises(DataError, match="same bands"):
        band_statistics([make_scene(a, wl), make_scene(b[..., :3], wl[:3])])
    with pytest.raises(DataError, match="malformed"):
        BandStatistics.from_dict({"mean": [1.0]})
