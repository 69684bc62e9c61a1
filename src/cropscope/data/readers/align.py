"""One grid for every input: grid descriptions and on-the-fly reprojection of any cube.

A :class:`Grid` is a CRS, a north-up affine transform and a shape. :class:`AlignedCube`
wraps any :class:`~cropscope.data.readers.cube.CubeLike` source and presents it on another
grid: each window is read from the source (only the part covering the window, plus a
two-pixel margin) and warped with GDAL (``rasterio.warp.reproject``), bilinear by
default and nearest for categorical bands (``SCL``, ``FMASK``, ...). NaN stays nodata.
Raster folders can also be aligned while reading (``CubeSource.scan(..., target=grid)``,
one ``WarpedVRT`` per file).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.data.readers.cube import (
    CATEGORICAL_BANDS,
    CubeLike,
    CubeWrapper,
    make_cube,
    resolve_window,
)
from cropscope.data.readers.grid import Grid
from cropscope.errors import DataError

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["AlignedCube", "Grid"]  # Grid lives in cropscope.data.readers.grid


class AlignedCube(CubeWrapper):
    """Any cube source presented on ``target``'s grid, warped window by window.

    ``resampling`` is a GDAL method name (``"bilinear"``, ``"nearest"``, ``"cubic"``,
    ``"average"``, ...); bands in ``nearest_bands`` (default: the categorical bands, e.g.
    ``SCL``) always use nearest. Pixels the source does not cover are NaN.
    """

    def __init__(
        self,
        source: CubeLike,
        target: Any,
        *,
        resampling: str = "bilinear",
        nearest_bands: Iterable[str] = CATEGORICAL_BANDS,
    ) -> None:
        from rasterio.enums import Resampling

        if source.crs is None:
            raise DataError("cannot align a source without a CRS")
        try:
            Resampling[resampling]
        except KeyError:
            raise DataError(f"unknown resampling method {resampling!r}") from None
        super().__init__(source)
        self.grid = Grid.of(target)
        self.resampling = resampling
        self.nearest_bands = frozenset(b.upper() for b in nearest_bands)

    @property
    def shape(self) -> tuple[int, int]:
        return self.grid.shape



    @property
    def crs(self) -> Any:
        return self.grid.crs

    @property
    def transform(self) -> Any:
        return self.grid.transform





    def source_window(self, window: Any = None) -> tuple[slice, slice] | None:
        """The source rows/cols that cover ``window`` of the target grid, with a two-pixel
        margin for interpolation; None where the source does not reach."""
        from rasterio.warp import transform_bounds
        from rasterio.windows import from_bounds

        rows, cols, transform = resolve_window(window, self.height, self.width, self.transform)
        sub = Grid(self.crs, transform, rows.stop - rows.start, cols.stop - cols.start)
        bounds = sub.bounds
        if self.crs != self.source.crs:
            bounds = transform_bounds(self.crs, self.source.crs, *bounds, densify_pts=21)
        win = from_bounds(*bounds, transform=self.source.transform)
        r0 = max(0, math.floor(win.row_off) - 2)
        c0 = max(0, math.floor(win.col_off) - 2)
        r1 = min(self.source.height, math.ceil(win.row_off + win.height) + 2)
        c1 = min(self.source.width, math.ceil(win.col_off + win.width) + 2)
        if r1 <= r0 or c1 <= c0:
            return None
        return slice(r0, r1), slice(c0, c1)

    def read(self, window: Any = None) -> xr.DataArray:
        """``window`` of the target grid as a ``(time, band, y, x)`` float32 cube."""
        from rasterio.enums import Resampling
        from rasterio.warp import reproject

        rows, cols, transform = resolve_window(window, self.height, self.width, self.transform)
        h, w = rows.stop - rows.start, cols.stop - cols.start
        n_t, n_b = len(self.times), len(self.bands)
        out = np.full((n_t, n_b, h, w), np.nan, dtype=np.float32)
        src_win = self.source_window(window)
        factors = None
        if src_win is not None:
            src = self.source.read(((src_win[0].start, src_win[0].stop),
                                    (src_win[1].start, src_win[1].stop)))  # fmt: skip
            factors = src.attrs.get("scale_factor")
            values = np.ascontiguousarray(src.values, dtype=np.float32)
            src_transform = src.rio.transform()
            for c, band in enumerate(self.bands):
                method = "nearest" if band.upper() in self.nearest_bands else self.resampling
                dst = np.full((n_t, h, w), np.nan, dtype=np.float32)
                reproject(
                    values[:, c], dst, src_transform=src_transform, src_crs=self.source.crs,
                    src_nodata=np.nan, dst_transform=transform, dst_crs=self.crs,
                    dst_nodata=np.nan, resampling=Resampling[method],
                )  # fmt: skip
                out[:, c] = dst
        return make_cube(out, self.times, self.bands, transform, self.crs, factors)
