from __future__ import annotations

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.features import add_indices, available_indices, compute_index


def reflectance_set(bands: list[str], seed: int = 0) -> TimeSeriesSet:
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.02, 0.5, size=(6, 5, len(bands))).astype(np.float32)
    values[0, 1] = np.nan
    return TimeSeriesSet(values, bands)


S2 = ["B2", "B3", "B4", "B5", "B8", "B8A", "B11", "B12"]


def test_required_indices_available() -> None:
    assert {"NDVI", "EVI", "NDWI", "NDMI", "SAVI", "GNDVI", "NBR"} <= set(available_indices())


@pytest.mark.parametrize(
    ("name", "formula"),
    [
        ("NDVI", lambda b: (b["B8"] - b["B4"]) / (b["B8"] + b["B4"])),
        ("EVI", lambda b: 2.5 * (b["B8"] - b["B4"]) / (b["B8"] + 6 * b["B4"] - 7.5 * b["B2"] + 1)),
        ("NDWI", lambda b: (b["B3"] - b["B8"]) / (b["B3"] + b["B8"])),
        ("NDMI", lambda b: (b["B8"] - b["B11"]) / (b["B8"] + b["B11"])),
        ("SAVI", lambda b: 1.5 * (b["B8"] - b["B4"]) / (b["B8"] + b["B4"] + 0.5)),
        ("GNDVI", lambda b: (b["B8"] - b["B3"]) / (b["B8"] + b["B3"])),
        ("NBR", lambda b: (b["B8"] - b["B12"]) / (b["B8"] + b["B12"])),
        ("NDRE", lambda b: (b["B8"] - b["B5"]) / (b["B8"] + b["B5"])),
    ],
)
def test_sentinel2_formulas(name: str, formula) -> None:
    ts = reflectance_set(S2)
    bands = {b: ts.values[:, :, i].astype(np.float64) for i, b in enumerate(S2)}
    out = compute_index(name, ts)
    np.testing.assert_allclose(out, formula(bands), rtol=1e-5, equal_nan=True)
    assert np.isnan(out[0, 1]) and out.dtype == np.float32


def test_plain_modis_and_landsat_names() -> None:
    plain = reflectance_set(["Red", "NIR", "blue", "SWIR2"])
    ndvi = compute_index("ndvi", plain)
    red, nir = plain.values[:, :, 0], plain.values[:, :, 1]
    np.testing.assert_allclose(ndvi, (nir - red) / (nir + red), rtol=1e-5, equal_nan=True)
    modis = reflectance_set(["blue", "red", "nir", "mir"])  # MOD13Q1 names; mir = 2.1 um
    nir, mir = modis.values[:, :, 2], modis.values[:, :, 3]
    np.testing.assert_allclose(
        compute_index("NBR", modis), (nir - mir) / (nir + mir), rtol=1e-5, equal_nan=True
    )
    landsat = reflectance_set(["B2", "B3", "B4", "B5", "B6", "B7"])  # Landsat 8: B5 = nir
    red, nir = landsat.values[:, :, 2], landsat.values[:, :, 3]
    np.testing.assert_allclose(
        compute_index("NDVI", landsat, sensor="landsat8"),
        (nir - red) / (nir + red),
        rtol=1e-5,
        equal_nan=True,
    )
    hls = reflectance_set(["SR_B3", "SR_B4"])  # Landsat 5/7 C2: SR_B3 red, SR_B4 nir
    red, nir = hls.values[:, :, 0], hls.values[:, :, 1]
    np.testing.assert_allclose(
        compute_index("NDVI", hls, sensor="landsat7"),
        (nir - red) / (nir + red),
        rtol=1e-5,
        equal_nan=True,
    )


def test_b8a_fallback_and_band_map() -> None:
    ts = reflectance_set(["B04", "B8A"])
    red, nir = ts.values[:, :, 0], ts.values[:, :, 1]
    expected = (nir - red) / (nir + red)
    np.testing.assert_allclose(compute_index("NDVI", ts), expected, rtol=1e-5, equal_nan=True)
    custom = reflectance_set(["r", "n"])
    got = compute_index("NDVI", custom, band_map={"red": "r", "nir": "n"})
    np.testing.assert_allclose(got, expected, rtol=1e-5, equal_nan=True)


def test_missing_band_message_lists_needs_and_bands() -> None:
    ts = reflectance_set(["B4", "B8"])
    with pytest.raises(DataError) as err:
        add_indices(ts, ["EVI"])
    msg = str(err.value)
    assert "blue" in msg and "'B4', 'B8'" in msg and "EVI" in msg
    with pytest.raises(DataError, match="unknown index"):
        compute_index("XYZ", ts)
    with pytest.raises(DataError, match="unknown sensor"):
        compute_index("NDVI", ts, sensor="spot")


def test_add_indices_appends_and_keeps_mask() -> None:
    ts = reflectance_set(S2)
    mask = ts.mask.copy()
    mask[2, 3] = False  # a cloud flag on finite values
    ts = ts.replace(mask=mask)
    out = add_indices(ts, ("NDVI", "NDMI"))
    assert out.bands == [*S2, "NDVI", "NDMI"]
    np.testing.assert_array_equal(out.values[:, :, :8], ts.values)
    np.testing.assert_allclose(out.values[:, :, 8], compute_index("NDVI", ts), equal_nan=True)
    assert not out.mask[2, 3] and not out.mask[0, 1]
    np.testing.assert_array_equal(out.mask, ts.mask)


def test_existing_index_band_keep_replace_error() -> None:
    ts = reflectance_set(["B4", "B8", "NDVI"])
    assert add_indices(ts, ["NDVI"]) is ts
    replaced = add_indices(ts, ["NDVI"], if_exists="replace")
    np.testing.assert_allclose(replaced.values[:, :, 2], compute_index("NDVI", ts), equal_nan=True)
    with pytest.raises(DataError, match="already"):
        add_indices(ts, ["NDVI"], if_exists="error")
