"""A cube written to disk window by window: a Zarr store or one Cloud-Optimised GeoTIFF per date.

:func:`write_cube` reads any :class:`~cropscope.data.readers.cube.CubeLike` source (a STAC
search, a masked and composited cube, ...) in ``tile`` x ``tile`` windows, so memory stays at
one window's ``time x band x tile x tile`` float32 values whatever the cube's size, and
writes:

- ``OUT.zarr``: one variable per band with dims ``(time, y, x)`` (float32, NaN = no data,
  chunks ``(1, tile, tile)``), pixel-centre ``y``/``x`` coordinates and a ``spatial_ref``
  variable holding the CRS (``crs_wkt``) that every band names as its ``grid_mapping``;
- any other ``OUT``: a folder of COGs, ``cube_YYYY-MM-DD.tif`` per date, one band per cube
  band (band descriptions = band names, float32, NaN nodata, DEFLATE, internal overviews).

Both read back through :func:`~cropscope.data.readers.open.open_cube_source` with the same
grid, dates, band names and values. Outputs are complete or absent: everything is written
into a hidden folder beside ``OUT`` and renamed onto it at the end (an existing ``OUT`` is
refused unless ``overwrite``, and then replaced only once the new cube is complete).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cropscope.data.readers.cube import CubeLike
from cropscope.errors import DataError

__all__ = ["cube_format", "write_cube"]

_COG_PREFIX = "cube_"


def cube_format(out: str | Path) -> str:
    """``"zarr"`` for a ``.zarr`` path, ``"cogs"`` (a folder of COGs) otherwise."""
    return "zarr" if str(out).rstrip("/").lower().endswith(".zarr") else "cogs"


def _windows(height: int, width: int, tile: int) -> Iterator[tuple[slice, slice]]:
    for r in range(0, height, tile):
        for c in range(0, width, tile):
            yield slice(r, min(r + tile, height)), slice(c, min(c + tile, width))


def _day(t: Any) -> str:
    return str(np.datetime64(t, "D"))


def write_cube(source: CubeLike, out: str | Path, *, tile: int = 1024,
               overwrite: bool = False, progress: bool = True) -> Path:
    """Write ``source`` to ``out`` (see the module doc); returns ``out``."""
    from tqdm.auto import tqdm

    out = Path(out).expanduser()
    if tile < 16:
        raise DataError(f"tile must be at least 16 pixels, got {tile}")
    if out.exists() and not overwrite:
        raise DataError(f"{out} exists; choose another --out or pass --overwrite")
    if not source.times:
        raise DataError("the cube has no dates to write")
    if len(set(_day(t) for t in source.times)) != len(source.times) \
            and cube_format(out) == "cogs":
        raise DataError("two dates of the cube fall on one day; a folder of COGs holds one "
                        "file per day: write a .zarr store instead")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    height, width = source.shape
    n_windows = len(range(0, height, tile)) * len(range(0, width, tile))
    try:
        writer = (_ZarrWriter if cube_format(out) == "zarr" else _CogWriter)(
            source, stage, tile)
        with tqdm(total=n_windows, desc="writing cube", unit="window", file=sys.stderr,
                  disable=not progress, leave=False) as bar:
            for rows, cols in _windows(height, width, tile):
                cube = source.read((rows, cols))
                writer.put(rows, cols, np.asarray(cube.values, dtype=np.float32))
                bar.update(1)
        writer.close()
        _deliver(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out


def _deliver(stage: Path, out: Path) -> None:
    """Rename the finished ``stage`` onto ``out``; an old ``out`` goes only after that."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


class _CogWriter:
    """One tiled GeoTIFF per date, filled window by window, then copied to a COG."""

    def __init__(self, source: CubeLike, stage: Path, tile: int) -> None:
        import rasterio

        self.stage = stage
        stage.mkdir(parents=True)
        self.bands = list(source.bands)
        self.names = [f"{_COG_PREFIX}{_day(t)}.tif" for t in source.times]
        profile = {
            "driver": "GTiff", "height": source.shape[0], "width": source.shape[1],
            "count": len(self.bands), "dtype": "float32", "crs": source.crs,
            "transform": source.transform, "nodata": float("nan"), "tiled": True,
            "blockxsize": 256, "blockysize": 256, "compress": "deflate", "BIGTIFF": "IF_SAFER",
        }  # fmt: skip
        self.files = []
        for name in self.names:
            dst = rasterio.open(stage / f".{name}.tmp.tif", "w", **profile)
            dst.descriptions = tuple(self.bands)
            self.files.append(dst)

    def put(self, rows: slice, cols: slice, values: np.ndarray) -> None:
        from rasterio.windows import Window

        window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
        for k, dst in enumerate(self.files):
            dst.write(values[k], window=window)

    def close(self) -> None:
        import rasterio.shutil

        for dst in self.files:
            dst.close()
        for name in self.names:
            tmp = self.stage / f".{name}.tmp.tif"
            rasterio.shutil.copy(tmp, self.stage / name, driver="COG", compress="DEFLATE",
                                 predictor=3, blocksize=512, overviews="AUTO")
            tmp.unlink()


class _ZarrWriter:
    """A Zarr store laid out by xarray, its ``(1, tile, tile)`` chunks written per window."""

    def __init__(self, source: CubeLike, stage: Path, tile: int) -> None:
        import dask.array as da
        import xarray as xr

        self.stage = stage
        self.bands = list(source.bands)
        height, width = source.shape
        t = source.transform
        y = t.f + t.e * (np.arange(height) + 0.5)
        x = t.c + t.a * (np.arange(width) + 0.5)
        times = np.array(source.times).astype("datetime64[ns]")
        shape = (len(times), height, width)
        chunks = (1, min(tile, height), min(tile, width))
        crs_wkt = source.crs.to_wkt() if source.crs is not None else ""
        ref = xr.DataArray(np.int32(0), attrs={"crs_wkt": crs_wkt, "spatial_ref": crs_wkt,
                                               "GeoTransform": " ".join(
                                                   str(v) for v in (t.c, t.a, t.b, t.f, t.d,
                                                                    t.e))})  # fmt: skip
        template = xr.Dataset(
            {b: (("time", "y", "x"), da.full(shape, np.nan, dtype=np.float32, chunks=chunks),
                 {"grid_mapping": "spatial_ref"}) for b in self.bands},
            coords={"time": times, "y": y, "x": x, "spatial_ref": ref},
        )  # fmt: skip
        template.to_zarr(stage, compute=False, mode="w",
                         encoding={b: {"chunks": chunks} for b in self.bands})
        self.n_times = len(times)

    def put(self, rows: slice, cols: slice, values: np.ndarray) -> None:
        import xarray as xr

        part = xr.Dataset({b: (("time", "y", "x"), values[:, k])
                           for k, b in enumerate(self.bands)})
        part.to_zarr(self.stage, mode="r+",
                     region={"time": slice(0, self.n_times), "y": rows, "x": cols})

    def close(self) -> None:
        return None
