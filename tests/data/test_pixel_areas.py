"""Pixel areas in any CRS, checked against geodesic polygon areas (pyproj.Geod) of the
pixel footprints, densified along their edges, on each CRS's own ellipsoid or sphere."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS, Geod, Transformer

from cropscope.data.pixel_areas import pixel_areas, point_pixel_areas, raster_class_areas

MODIS_SINUSOIDAL = "+proj=sinu +lon_0=0 +x_0=0 +y_0=0 +R=6371007.181 +units=m +no_defs"


def _geodesic_ha(crs: str, transform: Affine, row: int, col: int, steps: int = 16) -> float:
    """The footprint of pixel (row, col) as a polygon of points along its edges in the
    source CRS, to lon/lat, area by Geod on the CRS's ellipsoid."""
    src = CRS.from_user_input(crs)
    ell = src.ellipsoid
    geod = Geod(a=ell.semi_major_metre, b=ell.semi_minor_metre)
    t = np.linspace(0.0, 1.0, steps, endpoint=False)
    ring_c = np.concatenate([t, np.ones_like(t), 1 - t, np.zeros_like(t)]) + col
    ring_r = np.concatenate([np.zeros_like(t), t, np.ones_like(t), 1 - t]) + row
    x = transform.c + transform.a * ring_c + transform.b * ring_r
    y = transform.f + transform.d * ring_c + transform.e * ring_r
    lon, lat = Transformer.from_crs(src, src.geodetic_crs, always_xy=True).transform(x, y)
    area, _ = geod.polygon_area_perimeter(lon, lat)
    return abs(area) / 1e4


CASES = [
    # EPSG:4326 at 0.001° near 60°N (pixel area depends on latitude)
    ("EPSG:4326", Affine(0.001, 0, 10.0, 0, -0.001, 60.05)),
    # a UTM zone, 10 m pixels far from the central meridian (scale factor ≠ 1)
    ("EPSG:32631", Affine(10, 0, 720_000, 0, -10, 5_612_000)),
    # the MODIS sinusoidal grid, 231.66 m pixels (the sits Sinop cube's grid), far from lon 0
    (MODIS_SINUSOIDAL, Affine(231.656358, 0, -6_200_000, 0, -231.656358, -1_300_000)),
]


@pytest.mark.parametrize(("crs", "transform"), CASES, ids=["epsg4326", "utm31n", "modis"])
def test_pixel_areas_match_geodesic_areas(crs: str, transform: Affine) -> None:
    areas = pixel_areas(crs, transform, (40, 30), row_off=5, col_off=7)
    assert areas.hectares.shape == (40, 30)
    for r, c in [(0, 0), (17, 11), (39, 29)]:
        ref = _geodesic_ha(crs, transform, r + 5, c + 7)
        assert areas.hectares[r, c] == pytest.approx(ref, rel=1e-6)
    # the same pixels as points give the same areas
    rows, cols = np.array([5, 22, 44]), np.array([7, 18, 36])
    np.testing.assert_allclose(point_pixel_areas(crs, transform, rows, cols),
                               areas.hectares[rows - 5, cols - 7], rtol=1e-9)


def test_geographic_map_reports_hectares_not_squared_degrees(tmp_path) -> None:
    """The issue's example: a 100 x 100 EPSG:4326 map at 0.001° covers about 6,000 ha
    (here at the equator ~12,300 ha; at 60°N half of it)."""
    path = tmp_path / "map.tif"
    codes = np.zeros((100, 100), dtype=np.uint8)
    codes[:, 50:] = 1
    codes[0, 0] = 255
    with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=1,
                       dtype="uint8", crs="EPSG:4326", nodata=255,
                       transform=Affine(0.001, 0, 10.0, 0, -0.001, 60.05)) as dst:
        dst.write(codes, 1)
    pixels, hectares, method = raster_class_areas(path, block=32)
    assert pixels[0] == 4999 and pixels[1] == 5000 and pixels[255] == 0
    whole = Affine(0.1, 0, 10.0, 0, -0.1, 60.05)  # the map's footprint as one pixel
    expected = _geodesic_ha("EPSG:4326", whole, 0, 0, steps=400) - _geodesic_ha(
        "EPSG:4326", Affine(0.001, 0, 10.0, 0, -0.001, 60.05), 0, 0)  # less the nodata pixel
    assert hectares[0] + hectares[1] == pytest.approx(expected, rel=1e-6)
    assert 5_000 < hectares[0] + hectares[1] < 7_000 and "ellipsoidal" in method


def test_no_crs_is_planar() -> None:
    areas = pixel_areas(None, Affine(20, 0, 0, 0, -20, 0), (2, 3))
    assert np.all(areas.hectares == 0.04) and "planar" in areas.method
