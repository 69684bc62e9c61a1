"""``cropscope cube build``: a regular cube on disk from a STAC API search or any cube input.

The steps a practitioner runs before sampling or mapping, in one call (:func:`build_cube`):

1. the items: a STAC API search (:class:`~cropscope.data.readers.stac_api.StacSearch`:
   collections, area, dates, cloud cover, property filters) or any input
   :func:`~cropscope.data.readers.open.open_cube_source` opens (raster folders, NetCDF/Zarr,
   local STAC catalogs, search files);
2. the cube: bands, grid (CRS, resolution, or another cube's grid) and the per-date
   quality mask (e.g. Sentinel-2 ``SCL`` classes, or QA bits through ``invalid``), read
   window by window by odc-stac / rasterio;
3. optionally a regular time grid: median composites every ``composite`` days (or
   ``"monthly"``), :class:`~cropscope.features.cube.CompositedCube`;
4. the output: a Zarr store or a folder of COGs (:func:`~cropscope.data.cube_writer.write_cube`),
   complete or absent; optionally the search saved as a search file, so maps and sample
   extraction can take the same search as their input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cropscope.errors import DataError

__all__ = ["CubeBuild", "build_cube"]


@dataclass(frozen=True)
class CubeBuild:
    """What :func:`build_cube` wrote."""

    out: Path
    format: str
    shape: tuple[int, int]
    bands: list[str]
    dates: list[str]
    crs: str | None
    n_items: int | None
    search_file: Path | None

    def summary(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {"out": str(self.out), "format": self.format, "shape": list(self.shape),
                "bands": self.bands, "dates": self.dates, "crs": self.crs,
                "n_items": self.n_items,
                "search_file": str(self.search_file) if self.search_file else None}


def build_cube(
    out: str | Path,
    *,
    input: str | Path | None = None,
    search: Any = None,
    bands: list[str] | None = None,
    mask_band: str | None = None,
    composite: int | str | None = None,
    start: Any = None,
    end: Any = None,
    tile: int = 1024,
    overwrite: bool = False,
    save_search: str | Path | None = None,
    progress: bool = True,
) -> CubeBuild:
    """Build the cube (see the module doc) from ``input`` or ``search`` (a
    :class:`~cropscope.data.readers.stac_api.StacSearch`), one of the two."""
    from cropscope.data.cube_writer import cube_format, write_cube
    from cropscope.data.readers.open import open_cube_source
    from cropscope.data.readers.stac_api import StacSearch, open_search

    if (input is None) == (search is None):
        raise DataError("give a cube input or a STAC API search (one of the two)")
    if save_search is not None and search is None:
        raise DataError("--save-search needs a STAC API search")
    n_items = None
    if search is not None:
        if not isinstance(search, StacSearch):
            raise DataError("search must be a StacSearch")
        stac = open_search(search)
        n_items = stac.n_items
        source: Any = stac
    else:
        assert input is not None  # one of the two, checked above
        options: dict[str, Any] = {}
        if bands is not None:
            options["bands"] = bands
        source = open_cube_source(input, mask_band=mask_band, **options)
    if composite is not None:
        from cropscope.features.cube import CompositedCube

        source = CompositedCube(source, composite, start=start, end=end)
    elif start is not None or end is not None:
        raise DataError("--start/--end set the composite grid: give --composite too")
    path = write_cube(source, out, tile=tile, overwrite=overwrite, progress=progress)
    written = search.write(save_search) if save_search is not None else None
    return CubeBuild(
        out=path, format=cube_format(path), shape=tuple(source.shape),
        bands=list(source.bands), dates=[str(t)[:10] for t in source.times],
        crs=source.crs.to_string() if source.crs is not None else None,
        n_items=n_items, search_file=written,
    )  # fmt: skip
