"""The ground area of raster pixels, right in any CRS.

``|a * e|`` of the geotransform is a pixel's area only in an equal-area projection whose
units are metres. In a geographic CRS (degrees) it is meaningless — a 100 x 100 EPSG:4326
map at 0.001° would cover "1e-02 m²" — and in a conformal projection such as UTM it is off
by the squared scale factor (up to ~0.2 % at a zone's edge, more far from it).

:func:`pixel_areas` computes each pixel's area on the CRS's own ellipsoid (or sphere): the
pixel corners are transformed (pyproj) into a Lambert cylindrical equal-area projection on the
CRS's geodetic datum, centred on the window, where the shoelace area of each corner quad is
its ellipsoidal area. Meridians and parallels are straight lines there, so pixels of a
geographic grid come out exact; in a projected grid the edges curve slightly, an error of
order (pixel size / Earth radius)² — below 1e-9 relative for 10–500 m pixels. Windows are
processed independently, so areas stream by block like the map job (memory ~ one window).

Shapes: a window of ``h x w`` pixels → ``float64 [h, w]`` hectares. A raster without a CRS
is taken as planar with metre units (``|a * e|``, stated in the result's ``method``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cropscope.errors import DataError

__all__ = ["PixelAreas", "pixel_areas", "point_pixel_areas", "raster_class_areas"]

_M2_PER_HA = 1e4


@dataclass(frozen=True)
class PixelAreas:
    """Pixel areas of one window: ``hectares [h, w]`` and how they were computed."""

    hectares: np.ndarray
    method: str


def _equal_area_transformer(crs: Any, lon0: float) -> Any:
    from pyproj import CRS, Transformer
    from pyproj.crs import ProjectedCRS
    from pyproj.crs.coordinate_operation import LambertCylindricalEqualAreaConversion

    src = CRS.from_user_input(crs)
    geodetic = src.geodetic_crs
    if geodetic is None:
        raise DataError(f"the CRS {src.name!r} has no geodetic datum; pixel areas unknown")
    cea = ProjectedCRS(LambertCylindricalEqualAreaConversion(0.0, float(lon0)),
                       geodetic_crs=geodetic)
    return Transformer.from_crs(src, cea, always_xy=True)


def _to_lonlat(crs: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from pyproj import CRS, Transformer

    src = CRS.from_user_input(crs)
    geodetic = src.geodetic_crs
    assert geodetic is not None
    tr = Transformer.from_crs(src, geodetic, always_xy=True)
    return tr.transform(x, y)


def _to_equal_area(crs: Any, x: np.ndarray, y: np.ndarray, cx: float, cy: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``x``/``y`` (in ``crs``) in the equal-area projection on the CRS's datum centred on
    the point ``(cx, cy)``, so no pixel near it straddles the projection's seam."""
    lon0 = float(_to_lonlat(crs, np.array([cx]), np.array([cy]))[0][0])
    ex, ey = _equal_area_transformer(crs, lon0).transform(x, y)
    ex, ey = np.asarray(ex), np.asarray(ey)
    if not (np.isfinite(ex).all() and np.isfinite(ey).all()):
        raise DataError("some pixel corners lie outside the CRS's valid area; pixel areas "
                        "cannot be computed there")
    return ex, ey


def pixel_areas(crs: Any, transform: Any, shape: tuple[int, int], *,
                row_off: int = 0, col_off: int = 0) -> PixelAreas:
    """Areas (hectares) of the ``shape`` window at ``(row_off, col_off)`` of a raster with
    ``crs`` (anything pyproj reads, or None) and affine ``transform`` (rasterio's)."""
    h, w = int(shape[0]), int(shape[1])
    if h < 0 or w < 0:
        raise DataError(f"invalid window shape {shape}")
    t = transform
    if crs is None:
        return PixelAreas(np.full((h, w), abs(t.a * t.e - t.b * t.d) / _M2_PER_HA),
                          "planar (no CRS: transform units taken as metres)")
    rows = np.arange(row_off, row_off + h + 1, dtype=np.float64)
    cols = np.arange(col_off, col_off + w + 1, dtype=np.float64)
    cc, rr = np.meshgrid(cols, rows)
    x = t.c + t.a * cc + t.b * rr
    y = t.f + t.d * cc + t.e * rr
    ex, ey = _to_equal_area(crs, x, y, x[h // 2, w // 2], y[h // 2, w // 2])
    # shoelace of each quad (corners 1=(r,c), 2=(r,c+1), 3=(r+1,c+1), 4=(r+1,c)) by diagonals
    d13x, d13y = ex[1:, 1:] - ex[:-1, :-1], ey[1:, 1:] - ey[:-1, :-1]
    d24x, d24y = ex[1:, :-1] - ex[:-1, 1:], ey[1:, :-1] - ey[:-1, 1:]
    area = 0.5 * np.abs(d13x * d24y - d13y * d24x) / _M2_PER_HA
    return PixelAreas(area, "ellipsoidal (Lambert cylindrical equal-area on the CRS datum)")


def _quad_areas(crs: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Hectares of quads whose corners ``x``/``y`` ``[..., 4]`` (in ``crs``, in ring order)
    are given, on the CRS's datum."""
    ex, ey = _to_equal_area(crs, x, y, float(np.median(x)), float(np.median(y)))
    d13x, d13y = ex[..., 2] - ex[..., 0], ey[..., 2] - ey[..., 0]
    d24x, d24y = ex[..., 3] - ex[..., 1], ey[..., 3] - ey[..., 1]
    return 0.5 * np.abs(d13x * d24y - d13y * d24x) / _M2_PER_HA


def point_pixel_areas(crs: Any, transform: Any, rows: np.ndarray, cols: np.ndarray
                      ) -> np.ndarray:
    """Hectares ``[n]`` of the pixels ``(rows[i], cols[i])`` (e.g. under sample points)."""
    t = transform
    r = np.asarray(rows, dtype=np.float64)[:, None] + np.array([0.0, 0.0, 1.0, 1.0])
    c = np.asarray(cols, dtype=np.float64)[:, None] + np.array([0.0, 1.0, 1.0, 0.0])
    if crs is None:
        return np.full(len(r), abs(t.a * t.e - t.b * t.d) / _M2_PER_HA)
    if len(r) == 0:
        return np.zeros(0)
    return _quad_areas(crs, t.c + t.a * c + t.b * r, t.f + t.d * c + t.e * r)


def _windows(height: int, width: int, block: int) -> Iterator[tuple[int, int, int, int]]:
    for r in range(0, height, block):
        for c in range(0, width, block):
            yield r, c, min(block, height - r), min(block, width - c)


def raster_class_areas(path: Any, *, band: int = 1, nodata: int | None = None,
                       block: int = 512) -> tuple[np.ndarray, np.ndarray, str]:
    """Pixels and hectares per integer code of a class raster, read window by window.

    Returns ``(pixels [256 or max+1], hectares [same], method)`` indexed by code; the
    raster's nodata value (or ``nodata``) is not counted.
    """
    import rasterio

    with rasterio.open(path) as src:
        if not np.issubdtype(np.dtype(src.dtypes[band - 1]), np.integer):
            raise DataError(f"{path}: a class map must hold integer codes, not "
                            f"{src.dtypes[band - 1]}")
        skip = src.nodata if nodata is None else nodata
        size = 256
        pixels = np.zeros(size, dtype=np.int64)
        hectares = np.zeros(size, dtype=np.float64)
        method = ""
        for r, c, h, w in _windows(src.height, src.width, block):
            from rasterio.windows import Window

            codes = src.read(band, window=Window(c, r, w, h)).astype(np.int64)
            keep = codes >= 0 if skip is None else (codes != int(skip)) & (codes >= 0)
            if not keep.any():
                continue
            top = int(codes[keep].max()) + 1
            if top > size:
                pixels = np.pad(pixels, (0, top - size))
                hectares = np.pad(hectares, (0, top - size))
                size = top
            areas = pixel_areas(src.crs, src.transform, (h, w), row_off=r, col_off=c)
            method = areas.method
            pixels += np.bincount(codes[keep], minlength=size)
            hectares += np.bincount(codes[keep], weights=areas.hectares[keep], minlength=size)
        return pixels, hectares, method
