"""Raster grids: a CRS, a north-up affine transform and a shape (:class:`Grid`).

The grid every reader, wrapper and map job agrees on; :mod:`cropscope.data.readers.align`
reprojects cubes onto one, :meth:`CubeSource.scan(..., target=grid)
<cropscope.data.readers.cube.CubeSource.scan>` aligns raster folders while reading.
rasterio and affine are imported when a grid is built.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cropscope.errors import DataError

__all__ = ["Grid", "as_crs"]


def _xy(resolution: float | tuple[float, float]) -> tuple[float, float]:
    """``(x, y)`` pixel sizes from one size or a pair."""
    if isinstance(resolution, tuple | list | np.ndarray):
        rx, ry = resolution
        return float(rx), float(ry)
    return float(resolution), float(resolution)


def as_crs(crs: Any) -> Any:
    """A rasterio CRS from any CRS description (``None`` stays ``None``)."""
    from rasterio.crs import CRS

    if crs is None or isinstance(crs, CRS):
        return crs
    if hasattr(crs, "to_wkt"):  # pyproj / odc-geo CRS
        return CRS.from_wkt(crs.to_wkt())
    return CRS.from_user_input(crs)


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid: CRS, affine transform, ``height`` x ``width`` pixels."""

    crs: Any
    transform: Any
    height: int
    width: int

    def __post_init__(self) -> None:
        from affine import Affine

        object.__setattr__(self, "crs", as_crs(self.crs))
        object.__setattr__(self, "transform", Affine(*tuple(self.transform)[:6]))
        if self.height <= 0 or self.width <= 0:
            raise DataError(f"a grid needs a positive shape, got {self.height}x{self.width}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)``."""
        from rasterio.transform import array_bounds

        west, south, east, north = array_bounds(self.height, self.width, self.transform)
        return (west, south, east, north)

    @property
    def resolution(self) -> tuple[float, float]:
        return (abs(self.transform.a), abs(self.transform.e))

    @classmethod
    def of(cls, like: Any) -> Grid:
        """The grid of a :class:`Grid`, a source or cube (``crs``/``transform``/``shape``
        or rioxarray), an open rasterio dataset, a raster path or a profile mapping."""
        if isinstance(like, Grid):
            return like
        if isinstance(like, str | Path):
            import rasterio

            with rasterio.open(like) as src:
                return cls(src.crs, src.transform, src.height, src.width)
        if isinstance(like, Mapping):
            return cls(like["crs"], like["transform"], int(like["height"]), int(like["width"]))
        if hasattr(like, "rio") and hasattr(like, "sizes"):
            return cls(like.rio.crs, like.rio.transform(), like.sizes["y"], like.sizes["x"])
        if hasattr(like, "crs") and hasattr(like, "transform"):
            if hasattr(like, "height") and hasattr(like, "width"):
                return cls(like.crs, like.transform, int(like.height), int(like.width))
            h, w = like.shape
            return cls(like.crs, like.transform, int(h), int(w))
        raise DataError(f"cannot take a grid from {type(like).__name__}")

    @classmethod
    def from_bounds(
        cls,
        bounds: Iterable[float],
        crs: Any,
        resolution: float | tuple[float, float],
    ) -> Grid:
        """The grid of ``resolution`` covering ``(left, bottom, right, top)`` in ``crs``
        (snapped outward to whole multiples of the resolution)."""
        from affine import Affine

        left, bottom, right, top = (float(v) for v in bounds)
        rx, ry = _xy(resolution)
        x0, y1 = math.floor(left / rx) * rx, math.ceil(top / ry) * ry
        width = max(1, math.ceil((right - x0) / rx - 1e-9))
        height = max(1, math.ceil((y1 - bottom) / ry - 1e-9))
        return cls(crs, Affine(rx, 0.0, x0, 0.0, -ry, y1), height, width)

    def with_resolution(self, resolution: float | tuple[float, float]) -> Grid:
        """The same area (same origin, covered wholly) at another resolution."""
        from affine import Affine

        rx, ry = _xy(resolution)
        left, bottom, right, top = self.bounds
        width = max(1, math.ceil((right - left) / rx - 1e-9))
        height = max(1, math.ceil((top - bottom) / ry - 1e-9))
        return Grid(self.crs, Affine(rx, 0.0, left, 0.0, -ry, top), height, width)

    def to_crs(self, crs: Any, resolution: float | tuple[float, float] | None = None) -> Grid:
        """This grid's area in another CRS (GDAL's suggested resolution unless given)."""
        from rasterio.warp import calculate_default_transform

        crs = as_crs(crs)
        kwargs = {"resolution": resolution} if resolution is not None else {}
        transform, width, height = calculate_default_transform(
            self.crs, crs, self.width, self.height, *self.bounds, **kwargs
        )
        return Grid(crs, transform, int(height), int(width))
