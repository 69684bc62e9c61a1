"""One entry point for hyperspectral scenes and their label rasters.

``open_hyperspectral(path)`` detects the format from the path (extension, sibling files)
and, failing that, from the file's first bytes:

==================  ====================================================================
format              what
==================  ====================================================================
``envi``            ``.hdr`` + binary (BSQ/BIL/BIP), e.g. AVIRIS(-NG), EMIT ENVI exports
``geotiff``         multi-band GeoTIFF with band tags (EnMAP-Box L2A tiles, ENVI→GTiff)
``enmap-product``   DLR EnMAP product folder: ``*-SPECTRAL_IMAGE.TIF`` + ``*-METADATA.XML``
``emit-netcdf``     EMIT L2A reflectance / L1B radiance NetCDF4 (swath, or GLT ortho)
``matlab``          ``.mat`` v5 or v7.3; ``FILE.mat:VARIABLE`` selects the array
==================  ====================================================================

Every reader returns the same ``(band, y, x)`` float32 DataArray; see
:mod:`cropscope.hyperspectral`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.errors import DataError

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["FORMATS", "detect_format", "open_hyperspectral", "open_labels"]

FORMATS = ("envi", "geotiff", "enmap-product", "emit-netcdf", "matlab")
_ALIASES = {
    "tif": "geotiff", "tiff": "geotiff", "gtiff": "geotiff", "enmap": "enmap-product",
    "enmap-l2a": "enmap-product", "emit": "emit-netcdf", "netcdf": "emit-netcdf",
    "nc": "emit-netcdf", "mat": "matlab", "hdr": "envi",
}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _normalise_format(fmt: str) -> str:
    key = fmt.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in FORMATS:
        raise DataError(f"unknown hyperspectral format {fmt!r}; choose from {', '.join(FORMATS)}")
    return key


def _has_enmap_xml(folder: Path) -> bool:
    return any(p.is_file() and "METADATA" in p.name.upper() and p.suffix.lower() == ".xml"
               for p in folder.iterdir())


def detect_format(path: str | Path) -> str:
    """The reader for ``path`` (one of :data:`FORMATS`)."""
    from cropscope.hyperspectral.readers.envi import envi_paths
    from cropscope.hyperspectral.readers.matlab import split_mat_path

    text = str(path)
    mat_file, _ = split_mat_path(text)
    if mat_file.suffix.lower() == ".mat":
        if not mat_file.is_file():
            raise DataError(f"file not found: {mat_file}")
        return "matlab"
    p = Path(text).expanduser()
    if p.is_dir():
        if _has_enmap_xml(p):
            return "enmap-product"
        raise DataError(f"{p} is a folder without an EnMAP *-METADATA.XML; give a file")
    if not p.is_file():
        raise DataError(f"file not found: {p}")
    suffix = p.suffix.lower()
    name = p.name.upper()
    if suffix == ".hdr":
        return "envi"
    if suffix == ".xml":
        if "METADATA" in name:
            return "enmap-product"
        raise DataError(f"{p.name}: only EnMAP *-METADATA.XML files are read as XML")
    if "SPECTRAL_IMAGE" in name and _has_enmap_xml(p.parent):
        return "enmap-product"
    with p.open("rb") as fh:
        head = fh.read(512)
    if head.startswith(_HDF5_MAGIC) or suffix in (".nc", ".nc4", ".h5", ".he5", ".hdf5"):
        from cropscope.hyperspectral.readers.emit import is_emit_netcdf

        if is_emit_netcdf(p):
            return "emit-netcdf"
        raise DataError(f"{p.name}: only EMIT-layout NetCDF/HDF5 files are supported "
                        "(reflectance/radiance + sensor_band_parameters)")
    if head.startswith(b"MATLAB"):
        return "matlab"
    if suffix in (".tif", ".tiff") or head[:4] in _TIFF_MAGIC:
        return "geotiff"
    try:
        envi_paths(p)
        return "envi"
    except DataError:
        pass
    raise DataError(f"cannot tell the format of {p.name}; pass format= one of {', '.join(FORMATS)}")


def open_hyperspectral(
    path: str | Path,
    *,
    format: str | None = None,
    wavelengths: Any = None,
    fwhm: Any = None,
    scale: float | None = None,
    nodata: float | None = None,
    sensor: str | None = None,
    units: str | None = None,
    orthorectify: bool = False,
    variable: str | None = None,
    band_axis: int = -1,
) -> xr.DataArray:
    """Open a hyperspectral scene as a ``(band, y, x)`` float32 ``DataArray``.

    Coords on ``band`` (1-based band numbers of the file): ``wavelength`` (nm, float64,
    NaN when unknown), ``fwhm`` (nm, NaN when unknown), ``bad_band`` (file's bad-band
    list, plus bands that are nodata everywhere). Nodata is NaN and the product's scale
    factor is applied (``attrs["scale_factor"]``). CRS/transform are attached when the
    file is georeferenced. ``attrs``: ``sensor``, ``units``, ``source``, ``format``.

    ``wavelengths`` (array in nm or µm, or a CSV with centre/fwhm columns) and ``fwhm``
    override the file's band metadata; ``scale``/``nodata`` override its scaling and
    nodata value; ``sensor``/``units`` its description. ``orthorectify`` applies the EMIT
    GLT; ``variable``/``band_axis`` choose the array of a .mat file.
    """
    from cropscope.hyperspectral.readers._scene import finish

    fmt = _normalise_format(format) if format else detect_format(path)
    if fmt == "envi":
        from cropscope.hyperspectral.readers.envi import read_envi

        scene = read_envi(path, scale=scale, nodata=nodata)
    elif fmt == "geotiff":
        from cropscope.hyperspectral.readers.geotiff import read_geotiff

        scene = read_geotiff(path, scale=scale, nodata=nodata)
    elif fmt == "enmap-product":
        from cropscope.hyperspectral.readers.enmap import read_enmap_product

        scene = read_enmap_product(path, scale=scale, nodata=nodata)
    elif fmt == "emit-netcdf":
        from cropscope.hyperspectral.readers.emit import read_emit_netcdf

        scene = read_emit_netcdf(path, orthorectify=orthorectify, scale=scale, nodata=nodata)
    else:
        from cropscope.hyperspectral.readers.matlab import read_matlab

        scene = read_matlab(path, variable=variable, band_axis=band_axis, scale=scale,
                            nodata=nodata)
    if orthorectify and fmt != "emit-netcdf":
        raise DataError("orthorectify=True applies to EMIT NetCDF files (GLT) only")
    return finish(scene, wavelengths=wavelengths, fwhm=fwhm, sensor=sensor, units=units)


def open_labels(path: str | Path, *, variable: str | None = None,
                nodata: float | None = None) -> xr.DataArray:
    """Open a label raster or matrix as a ``(y, x)`` int32 ``DataArray``.

    Reads any GDAL raster (band 1; GeoTIFF, ENVI classification, ...) or a ``.mat``
    matrix (``FILE.mat:VARIABLE``, else the one 2-D array). **0 means unlabelled**: the
    raster's nodata value (or ``nodata``) and NaN become 0. Class values must be
    integers ≥ 0 (float rasters holding whole numbers are accepted). CRS/transform are
    attached as for scenes; ``attrs["unlabelled"] = 0``.
    """
    import xarray as xr

    from cropscope.hyperspectral.readers._scene import attach_grid, grid_coords
    from cropscope.hyperspectral.readers.matlab import read_matlab_labels, split_mat_path

    mat_file, _ = split_mat_path(path)
    crs = transform = None
    if mat_file.suffix.lower() == ".mat":
        raw, info = read_matlab_labels(path, variable=variable)
        values = raw.astype(np.float64)
        nd = nodata
    else:
        import warnings

        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        p = Path(path).expanduser()
        if not p.is_file():
            raise DataError(f"file not found: {p}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(p) as src:
                    values = src.read(1).astype(np.float64)
                    nd = nodata if nodata is not None else src.nodata
                    crs, transform = src.crs, src.transform
        except RasterioIOError as exc:
            raise DataError(f"cannot read label raster {p}: {exc}") from None
        info = {"source": str(p)}
    missing = np.isnan(values)
    if nd is not None and not np.isnan(nd):
        missing |= values == nd
    values = np.where(missing, 0.0, values)
    if (values != np.round(values)).any() or (values < 0).any():
        raise DataError(f"labels in {info['source']} must be whole numbers >= 0 "
                        "(0 = unlabelled)")
    if values.max(initial=0) > np.iinfo(np.int32).max:
        raise DataError(f"label values in {info['source']} exceed int32")
    labels = values.astype(np.int32)
    ys, xs = grid_coords(crs, transform, *labels.shape)
    out = xr.DataArray(labels, dims=("y", "x"), coords={"y": ys, "x": xs}, name="labels")
    out = attach_grid(out, crs, transform)
    out.attrs.update(info)
    out.attrs["unlabelled"] = 0
    return out
