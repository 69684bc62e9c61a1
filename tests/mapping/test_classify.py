from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from cropscope.data import TimeSeriesSet
from cropscope.mapping import classify_cube, cube_pixels, write_map, write_preview
from cropscope.models import create_model

rasterio = pytest.importorskip("rasterio")


def make_cube(ny: int = 20, nx: int = 30, seed: int = 0) -> tuple[xr.DataArray, np.ndarray]:
    """A cube whose left half peaks early in the season and right half late."""
    rng = np.random.default_rng(seed)
    t = np.arange(8)
    early, late = np.exp(-0.5 * (t - 2) ** 2), np.exp(-0.5 * (t - 5) ** 2)
    truth = np.zeros((ny, nx), dtype=np.uint8)
    truth[:, nx // 2 :] = 1
    curves = np.where(truth[None] == 0, early[:, None, None], late[:, None, None])
    data = curves[:, None] + rng.normal(0, 0.02, (8, 1, ny, nx))
    data[:, :, 0, 0] = np.nan  # one pixel without any observation
    transform = (30.0, 0.0, 500000.0, 0.0, -30.0, 4000000.0)
    cube = xr.DataArray(
        data.astype(np.float32), dims=("time", "band", "y", "x"),
        coords={"time": np.datetime64("2021-03-01") + (t * 20).astype("timedelta64[D]"),
                "band": ["NDVI"], "y": 4000000.0 - 30 * (np.arange(ny) + 0.5),
                "x": 500000.0 + 30 * (np.arange(nx) + 0.5)},
        attrs={"crs": "EPSG:32633", "transform": transform},
    )
    import rioxarray  # noqa: F401

    cube = cube.rio.write_crs("EPSG:32633")
    return cube, truth


def test_cube_pixels_order_matches_raster() -> None:
    cube, _ = make_cube()
    ts = cube_pixels(cube)
    assert ts.values.shape == (20 * 30, 8, 1)
    np.testing.assert_array_equal(ts.values[31, :, 0], cube.values[:, 0, 1, 1])


def test_classify_and_write_georeferenced_map(tmp_path) -> None:
    cube, truth = make_cube()
    pixels = cube_pixels(cube)
    names = np.array(["early", "late"])[truth.reshape(-1)]
    train = TimeSeriesSet.from_labels(pixels.values, pixels.bands, names, dates=pixels.dates)
    train = train.subset(train.mask.any(axis=1))
    model = create_model("rf", n_estimators=10).fit(train)
    crop_map = classify_cube(model, cube, block_rows=7)
    assert crop_map.labels[0, 0] == 255  # nodata pixel
    agree = (crop_map.labels == truth)[1:, 1:].mean()
    assert agree > 0.98
    paths = write_map(crop_map, tmp_path / "map.tif")
    with rasterio.open(paths["labels"]) as src:
        assert src.crs.to_epsg() == 32633
        assert tuple(src.transform)[:6] == cube.attrs["transform"]
        np.testing.assert_array_equal(src.read(1), crop_map.labels)
        assert src.nodata == 255
        assert src.colormap(1)[0][:3] != src.colormap(1)[1][:3]
    png = write_preview(crop_map, tmp_path / "map.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    areas = crop_map.class_areas()
    assert areas["early"]["pixels"] + areas["late"]["pixels"] == 20 * 30 - 1
    # 10 m UTM pixels: 0.09 ha each, within the zone's scale factor (k² in 0.9992..1.0008)
    assert areas["early"]["area_ha"] == pytest.approx(areas["early"]["pixels"] * 0.09,
                                                      rel=1e-3)
