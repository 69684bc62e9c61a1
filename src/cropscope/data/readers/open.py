"""One entry point for every input cube: :func:`open_cube_source`.

``input`` may be:

- a folder, glob pattern, raster file or list of raster files (GeoTIFF/COG/JPEG2000/...):
  :class:`~cropscope.data.readers.cube.CubeSource`;
- a NetCDF file (``.nc``, ``.nc4``, ``.netcdf``, ``.h5``) or a Zarr store (``.zarr``, or
  a folder with ``zarr.json``/``.zgroup``):
  :class:`~cropscope.data.readers.xarray_cube.XarrayCubeSource`;
- a STAC ``catalog.json``/``collection.json``/item ``.json``, or a folder holding a
  ``catalog.json``/``collection.json``:
  :class:`~cropscope.data.readers.stac.StacCubeSource` (``bands=`` required);
- a STAC API *search file* (a ``.json`` object with a ``stac_api`` URL, the bands and the
  search, see :class:`~cropscope.data.readers.stac_api.StacSearch`): the items the search
  finds, read over HTTP.

``mask_band`` applies a per-date validity mask (default invalid classes: Sentinel-2 SCL,
:data:`~cropscope.data.readers.masks.SCL_INVALID`) and drops the mask band; ``target``
aligns the source to another grid (raster folders: a ``WarpedVRT`` per file; others:
:class:`~cropscope.data.readers.align.AlignedCube`; STAC: odc-stac's own reprojection).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cropscope.data.readers.cube import CubeLike, CubeSource
from cropscope.data.readers.masks import SCL_INVALID, Invalid, MaskedCube
from cropscope.errors import DataError

__all__ = ["input_kind", "open_cube_source"]

_NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5", ".hdf5")
_STAC_NAMES = ("catalog.json", "collection.json")


def input_kind(input: str | Path | Sequence[str | Path]) -> str:
    """``"rasters"``, ``"xarray"``, ``"stac"`` or ``"stac-api"``: what
    :func:`open_cube_source` opens ``input`` as (a :class:`~cropscope.errors.DataError` when
    none fits)."""
    if not isinstance(input, str | Path):
        if isinstance(input, Sequence) and input:
            return "rasters"
        raise DataError(f"cannot open {input!r} as a cube: give a path, a glob or a file list")
    text = str(input)
    if any(ch in text for ch in "*?["):
        return "rasters"
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix == ".zarr" or (path.is_dir() and any(
            (path / n).is_file() for n in ("zarr.json", ".zgroup", ".zattrs"))):  # fmt: skip
        if not path.exists():
            raise DataError(f"Zarr store not found: {path}")
        return "xarray"
    if suffix in _NETCDF_SUFFIXES and path.is_file():
        return "xarray"
    if suffix == ".json":
        if not path.is_file():
            raise DataError(f"STAC file not found: {path}")
        from cropscope.data.readers.stac_api import is_search_file

        return "stac-api" if is_search_file(path) else "stac"
    if path.is_dir():
        if any((path / n).is_file() for n in _STAC_NAMES):
            return "stac"
        return "rasters"
    if path.is_file():
        from cropscope.data.readers.cube import _RASTER_SUFFIXES

        if suffix in _RASTER_SUFFIXES or suffix in (".jpx", ".j2k", ".png", ".img"):
            return "rasters"
        raise DataError(
            f"cannot open {path.name} as a cube: expected a raster (GeoTIFF/COG/JPEG2000), "
            "a NetCDF (.nc) or Zarr (.zarr) cube, or a STAC catalog.json/collection.json"
        )
    raise DataError(f"input not found: {path}")


def open_cube_source(
    input: str | Path | Sequence[str | Path],
    *,
    mask_band: str | None = None,
    invalid: Invalid = SCL_INVALID,
    target: Any = None,
    resampling: str = "bilinear",
    **options: Any,
) -> CubeLike:
    """Open ``input`` (see the module docstring) as a window-readable cube source.

    ``options`` go to the source's constructor: ``CubeSource.scan`` (``dates``, ``band``,
    ``band_names``, ``scale``, ``nodata``), ``XarrayCubeSource.open`` (``variables``,
    ``bands``, ``time_dim``, ``nodata``, ``scale``, ``engine``, ``rename``) or
    ``StacCubeSource.open`` (``bands``, ``collection``, ``crs``, ``resolution``, ``bbox``,
    ``time_range``, ``scale``, ``groupby``). ``mask_band``/``invalid``: the per-date mask
    (see :class:`~cropscope.data.readers.masks.MaskedCube`). ``target``: a grid to align
    to (anything :meth:`Grid.of <cropscope.data.readers.grid.Grid.of>` takes, or
    ``"first"`` for raster files); ``resampling``: for data bands (categorical bands use
    nearest).
    """
    from cropscope.data.readers.align import AlignedCube

    for key in ("scale", "nodata"):
        value = options.get(key)
        if value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DataError(f"{key} must be a number, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise DataError(f"{key} must be a finite number, got {value!r}")
        if key == "scale" and number == 0:
            raise DataError("scale must not be 0 (every value would become 0)")
    kind = input_kind(input)
    source: CubeLike
    if kind == "stac-api":
        import dataclasses

        from cropscope.data.readers.stac_api import StacSearch, open_search

        assert isinstance(input, str | Path)  # input_kind: a search file is one path
        search = StacSearch.from_json(input)
        given = {k: v for k, v in {**options, "mask_band": mask_band}.items()
                 if v is not None}
        unknown = sorted(set(given) - set(StacSearch.__dataclass_fields__))
        if unknown:
            raise DataError(f"bad option for a STAC API search: {unknown}")
        if "bands" in given:
            given["bands"] = [str(b) for b in given["bands"]]
        try:
            search = dataclasses.replace(search, **given)
        except TypeError as exc:
            raise DataError(f"bad option for a STAC API search: {exc}") from None
        return open_search(search, target=target, invalid=invalid)
    if kind == "stac":
        from cropscope.data.readers.stac import StacCubeSource

        if "bands" not in options:
            raise DataError("a STAC input needs bands= (the asset keys to read)")
        assert isinstance(input, str | Path)  # input_kind: a catalog is one path
        return StacCubeSource.open(
            input, mask_band=mask_band, invalid=invalid, resampling=resampling,
            target=target, **options,
        )  # fmt: skip
    try:
        if kind == "xarray":
            from cropscope.data.readers.xarray_cube import XarrayCubeSource

            assert isinstance(input, str | Path)  # input_kind: a NetCDF/Zarr cube is one path
            source = XarrayCubeSource.open(input, **options)
        else:
            source = CubeSource.scan(input, target=target, resampling=resampling, **options)
            target = None  # aligned while reading
    except TypeError as exc:  # an option the source does not take
        import re

        named = re.search(r"keyword argument '(\w+)'", str(exc))
        what = (f"--{named.group(1).replace('_', '-')} does not apply to a {kind} input"
                if named else f"bad option for a {kind} input ({exc})")
        raise DataError(what) from None
    if mask_band is not None:
        source = MaskedCube(source, mask_band, invalid)
    if target is not None:
        source = AlignedCube(source, target, resampling=resampling)
    return source
