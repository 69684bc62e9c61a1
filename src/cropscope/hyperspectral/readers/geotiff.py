"""GeoTIFF (or any GDAL raster) carrying band metadata, e.g. EnMAP-Box style L2A tiles.

Band centres are looked up, in this order, in the per-band tags ``wavelength`` (+
``wavelength_units``) and ``fwhm``/``bbl`` (EnMAP-Box, GDAL's ENVI→GTiff copy), the
dataset's ``ENVI`` metadata domain (``wavelength = {...}``), GDAL's ``IMAGERY`` domain
(``CENTRAL_WAVELENGTH_UM``/``FWHM_UM``), then numbers in the band descriptions
(``"band 1 (418.24 Nanometers)"``). The GeoTIFF's own scales/offsets are applied
(EnMAP tiles: 1e-4), nodata becomes NaN.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.errors import DataError
from cropscope.hyperspectral.readers._scene import (
    apply_scale,
    build_scene,
    guess_sensor,
    guess_units,
    to_float,
    to_nanometres,
    wavelength_from_names,
    widths_to_nanometres,
)

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["read_geotiff", "read_raster"]


def _brace_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    inner = text.strip().lstrip("{").rstrip("}")
    return [v.strip() for v in inner.split(",") if v.strip()]


def _band_metadata(src: Any) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(wavelength nm, fwhm nm, bad) from whatever the raster carries."""
    n = src.count
    tags = [src.tags(i + 1) for i in range(n)]
    lower = [{k.lower(): v for k, v in t.items()} for t in tags]
    wl = fwhm = bad = None
    if all("wavelength" in t for t in lower):
        try:
            raw = np.asarray([float(t["wavelength"]) for t in lower])
            units = lower[0].get("wavelength_units") or lower[0].get("wavelength units")
            wl = to_nanometres(raw, units)
            if all("fwhm" in t for t in lower):
                fwhm = widths_to_nanometres([float(t["fwhm"]) for t in lower], units, raw)
        except ValueError:
            wl = fwhm = None
    if all("bbl" in t for t in lower):
        try:
            bad = np.asarray([float(t["bbl"]) for t in lower]) == 0
        except ValueError:
            bad = None
    if wl is None and "ENVI" in src.tag_namespaces():
        envi = {k.lower(): v for k, v in src.tags(ns="ENVI").items()}
        values = _brace_list(envi.get("wavelength"))
        if values and len(values) == n:
            raw = np.asarray([float(v) for v in values])
            units = envi.get("wavelength_units")
            wl = to_nanometres(raw, units)
            widths = _brace_list(envi.get("fwhm"))
            if widths and len(widths) == n:
                fwhm = widths_to_nanometres([float(v) for v in widths], units, raw)
        bbl = _brace_list(envi.get("bbl"))
        if bad is None and bbl and len(bbl) == n:
            bad = np.asarray([float(v) for v in bbl]) == 0
    if wl is None:
        imagery = [src.tags(i + 1, ns="IMAGERY") for i in range(n)]
        if all("CENTRAL_WAVELENGTH_UM" in t for t in imagery):
            wl = np.asarray([float(t["CENTRAL_WAVELENGTH_UM"]) for t in imagery]) * 1000.0
            if all("FWHM_UM" in t for t in imagery):
                fwhm = np.asarray([float(t["FWHM_UM"]) for t in imagery]) * 1000.0
    if wl is None and all(src.descriptions):
        wl = wavelength_from_names(list(src.descriptions))
    return wl, fwhm, bad


def read_raster(path: Path) -> dict[str, Any]:
    """Raw read of a GDAL raster: values, grid, nodata, scales, tags and band metadata."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                wl, fwhm, bad = _band_metadata(src)
                return {
                    "raw": src.read(),
                    "crs": src.crs,
                    "transform": src.transform,
                    "nodata": list(src.nodatavals),
                    "scales": list(src.scales),
                    "offsets": list(src.offsets),
                    "tags": src.tags(),
                    "wavelength": wl,
                    "fwhm": fwhm,
                    "bad": bad,
                    "dtype": src.dtypes[0],
                }
    except RasterioIOError as exc:
        raise DataError(f"cannot read raster {path}: {exc}") from None


def read_geotiff(path: str | Path, *, scale: float | None = None,
                 nodata: float | None = None) -> xr.DataArray:
    """Read a multi-band GeoTIFF as a hyperspectral scene (see the module docstring)."""
    path = Path(path).expanduser()
    info = read_raster(path)
    raw = info["raw"]
    data = to_float(raw, nodata if nodata is not None else info["nodata"])
    n_bands = raw.shape[0]
    if scale is not None:
        gain, offset = np.full(n_bands, float(scale)), np.zeros(n_bands)
    else:
        gain = np.asarray([1.0 if s is None else s for s in info["scales"]], dtype=np.float64)
        offset = np.asarray([0.0 if o is None else o for o in info["offsets"]], dtype=np.float64)
    data = apply_scale(data, gain, offset)
    tags = {k.lower(): v for k, v in info["tags"].items()}
    sensor = tags.get("sensor") or tags.get("sensor_type") or guess_sensor(path.name)
    units = guess_units(path.name, sensor)
    if units == "unknown" and np.allclose(gain, 1e-4) and np.all(offset == 0):
        units = "reflectance"  # the x10000 integer/float reflectance convention
    attrs: dict[str, Any] = {"nodata_value": nodata if nodata is not None else info["nodata"][0]}
    if tags.get("start_time"):
        attrs["time"] = tags["start_time"]
    return build_scene(
        data, wavelength=info["wavelength"], fwhm=info["fwhm"], bad_band=info["bad"],
        crs=info["crs"], transform=info["transform"], sensor=sensor, units=units,
        source=path, fmt="geotiff", scale_factor=gain.tolist(), attrs=attrs,
    )
