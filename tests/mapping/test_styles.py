"""GIS-ready map products: colours follow class names, probabilities carry a GDAL scale,
class names reach GDAL (category names) and QGIS (.qml), files get the umask's mode."""

from __future__ import annotations

import ctypes
import glob
import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cropscope.errors import DataError
from cropscope.mapping.styles import class_colours, colour_table, write_category_names


def test_colours_follow_names_not_order() -> None:
    a = class_colours(["maize", "soy", "mystery crop"])
    b = class_colours(["forest", "mystery crop", "soy", "maize", "water"])
    for name in ("maize", "soy", "mystery crop"):
        assert a[name] == b[name]
    assert a["maize"] == "#f5c518" and b["water"] == "#1f78b4"
    assert class_colours(["maize"], {"maize": "#FF0000"})["maize"] == "#ff0000"
    assert colour_table(["maize"], {"maize": "#ff0000"})[0] == (255, 0, 0, 255)
    with pytest.raises(DataError, match="#rrggbb"):
        class_colours(["maize"], {"maize": "red"})
    with pytest.raises(DataError, match="not classes"):
        class_colours(["maize"], {"wheat": "#ffffff"})


def _gdal_category_names(path: Path) -> list[str]:
    """Band 1's category names as GDAL itself reads them (rasterio's bundled libgdal,
    through its C API: rasterio does not expose category names)."""
    import rasterio as rio

    libs = glob.glob(os.path.join(os.path.dirname(rio.__file__) + ".libs", "libgdal*"))
    if not libs:
        pytest.skip("rasterio's GDAL library not found")
    gdal = ctypes.CDLL(libs[0])
    gdal.GDALAllRegister()
    gdal.GDALOpen.restype = ctypes.c_void_p
    gdal.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    gdal.GDALGetRasterBand.restype = ctypes.c_void_p
    gdal.GDALGetRasterBand.argtypes = [ctypes.c_void_p, ctypes.c_int]
    gdal.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    gdal.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    gdal.GDALClose.argtypes = [ctypes.c_void_p]
    gdal.GDALGetDescription.restype = ctypes.c_char_p
    gdal.GDALGetDescription.argtypes = [ctypes.c_void_p]
    ds = gdal.GDALOpen(str(path).encode(), 0)
    assert ds, f"GDAL cannot open {path}"
    try:
        band = gdal.GDALGetRasterBand(ds, 1)
        # as gdalinfo and QGIS do, read the band's description first: GDAL 3.10's GTiff
        # driver loads the side file lazily and not for the category names alone
        gdal.GDALGetDescription(band)
        names = gdal.GDALGetRasterCategoryNames(band)
        out = []
        i = 0
        while names and names[i] is not None:
            out.append(names[i].decode())
            i += 1
        return out
    finally:
        gdal.GDALClose(ds)


def test_category_names_are_read_by_gdal(tmp_path: Path) -> None:
    path = tmp_path / "m.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1,
                       dtype="uint8") as dst:
        dst.write(np.zeros((1, 4, 4), np.uint8))
    write_category_names(path, ["maize", "soy & beans"])
    assert _gdal_category_names(path) == ["maize", "soy & beans"]
    write_category_names(path, ["a", "b", "c"])  # rewritten, not appended
    assert _gdal_category_names(path) == ["a", "b", "c"]


def test_delivered_map_is_gis_ready(tmp_path: Path) -> None:
    import rioxarray

    from cropscope.data.readers.cube import write_geotiff
    from cropscope.mapping import deliver_map
    from cropscope.models import create_model
    from tests.conftest import make_toy_set

    ts = make_toy_set(n_per_class=10, n_times=3, bands=("B4", "B8"))
    model = create_model("logreg").fit(ts)
    rng = np.random.default_rng(0)
    scene = tmp_path / "scene"
    scene.mkdir()
    from rasterio.transform import from_origin

    for i in range(3):
        write_geotiff(rng.normal(0.3, 0.2, (2, 20, 24)).astype(np.float32),
                      scene / f"S_2020-0{i + 1}-05.tif", crs="EPSG:32633",
                      transform=from_origin(500_000, 5_300_000, 10, 10),
                      band_names=["B4", "B8"])
    old = os.umask(0o022)
    try:
        product = deliver_map(model, scene, tmp_path / "out" / "map.tif", progress=False,
                              colours={"class_1": "#123456"})
    finally:
        os.umask(old)
    labels = product.paths["labels"]
    assert stat.S_IMODE(labels.stat().st_mode) == 0o644
    with rasterio.open(labels) as src:
        assert src.colormap(1)[1][:3] == (0x12, 0x34, 0x56)
    assert _gdal_category_names(labels) == ts.classes
    qml = ET.parse(labels.with_suffix(".qml")).getroot()
    entries = qml.findall(".//paletteEntry")
    assert [e.get("label") for e in entries] == ts.classes
    assert entries[1].get("color") == "#123456"
    proba = rioxarray.open_rasterio(product.paths["probabilities"], mask_and_scale=True)
    vals = np.asarray(proba.values)
    assert np.nanmax(vals) <= 1.0 and np.nanmin(vals) >= 0.0
    np.testing.assert_allclose(np.nansum(vals, axis=0), 1.0, atol=0.02)
