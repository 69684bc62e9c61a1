"""EMIT L2A reflectance (or L1B radiance) NetCDF4 as distributed by the LP DAAC.

Layout: ``reflectance`` (or ``radiance``) ``(downtrack, crosstrack, bands)`` float32 with
``_FillValue`` −9999; group ``sensor_band_parameters`` with ``wavelengths``, ``fwhm`` (nm)
and ``good_wavelengths`` (1 good, 0 bad); group ``location`` with ``lat``/``lon``
``(downtrack, crosstrack)`` and the geometry lookup table ``glt_x``/``glt_y``
``(ortho_y, ortho_x)`` (1-based crosstrack column / downtrack row, 0 = no pixel); global
attributes ``geotransform`` (GDAL order) and ``spatial_ref`` (WKT) describe the GLT grid.

Without ``orthorectify`` the swath is returned (``y`` = downtrack, ``x`` = crosstrack, not
georeferenced, ``lat``/``lon`` as 2-D coords when present). With it, every GLT cell takes
its swath pixel (nearest neighbour, as the GLT prescribes) and cells without one are NaN.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.errors import DataError
from cropscope.hyperspectral.readers._scene import apply_scale, build_scene
from cropscope.settings import check_array_memory

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["is_emit_netcdf", "read_emit_netcdf"]

_VARIABLES = ("reflectance", "radiance")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.item())
    return str(value)


def is_emit_netcdf(path: Path) -> bool:
    """True for an HDF5/NetCDF4 file with the EMIT variable and band groups."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return any(v in f for v in _VARIABLES) and "sensor_band_parameters" in f
    except OSError:
        return False


def glt_orthorectify(swath: np.ndarray, glt_x: np.ndarray, glt_y: np.ndarray) -> np.ndarray:
    """``(band, downtrack, crosstrack)`` swath -> ``(band, ortho_y, ortho_x)`` through a GLT."""
    gx = np.asarray(glt_x).astype(np.int64)
    gy = np.asarray(glt_y).astype(np.int64)
    if gx.shape != gy.shape:
        raise DataError(f"glt_x {gx.shape} and glt_y {gy.shape} differ in shape")
    valid = (gx > 0) & (gy > 0)
    if (gy[valid] > swath.shape[1]).any() or (gx[valid] > swath.shape[2]).any():
        raise DataError("the GLT points outside the swath")
    out = np.full((swath.shape[0], *gx.shape), np.nan, dtype=np.float32)
    out[:, valid] = swath[:, gy[valid] - 1, gx[valid] - 1]
    return out


def read_emit_netcdf(path: str | Path, *, orthorectify: bool = False,
                     scale: float | None = None, nodata: float | None = None) -> xr.DataArray:
    """Read an EMIT L2A/L1B NetCDF (see the module docstring)."""
    import h5py

    path = Path(path).expanduser()
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"cannot open {path} as NetCDF4/HDF5: {exc}") from None
    with f:
        name = next((v for v in _VARIABLES if v in f), None)
        if name is None or "sensor_band_parameters" not in f:
            raise DataError(f"{path} is not an EMIT product (needs reflectance or radiance "
                            "and the sensor_band_parameters group)")
        var = f[name]
        location = f["location"] if "location" in f else None
        check_array_memory([var, *(location[k] for k in ("glt_x", "glt_y", "lat", "lon")
                                   if location is not None and k in location)],
                           f"EMIT product {path.name}")
        raw = var[()]
        fill = var.attrs.get("_FillValue")
        fill_value = float(np.asarray(fill).ravel()[0]) if fill is not None else None
        if nodata is not None:
            fill_value = float(nodata)
        bands = f["sensor_band_parameters"]
        wl = np.asarray(bands["wavelengths"][()], dtype=np.float64) if "wavelengths" in bands \
            else None
        fwhm = np.asarray(bands["fwhm"][()], dtype=np.float64) if "fwhm" in bands else None
        good = (np.asarray(bands["good_wavelengths"][()]) if "good_wavelengths" in bands
                else None)
        glt = None
        latlon = None
        if location is not None and "glt_x" in location and "glt_y" in location:
            glt = (location["glt_x"][()], location["glt_y"][()])
        if location is not None and "lat" in location and "lon" in location:
            latlon = (location["lat"][()], location["lon"][()])
        geotransform = f.attrs.get("geotransform")
        spatial_ref = f.attrs.get("spatial_ref")
        time = _text(f.attrs.get("time_coverage_start", ""))
        level = "L2A" if name == "reflectance" else "L1B"

    if raw.ndim != 3:
        raise DataError(f"{path}: {name} must be (downtrack, crosstrack, bands), got {raw.shape}")
    swath = np.moveaxis(raw, -1, 0).astype(np.float32)
    if fill_value is not None:
        swath[swath == fill_value] = np.nan
    if scale is not None:
        swath = apply_scale(swath, float(scale))
    units = "reflectance" if name == "reflectance" else "radiance (uW cm-2 sr-1 nm-1)"
    bad = None if good is None else good == 0
    attrs: dict[str, Any] = {"processing_level": level, "time": time,
                             "nodata_value": fill_value}
    common: dict[str, Any] = {"wavelength": wl, "fwhm": fwhm, "bad_band": bad, "sensor": "EMIT",
              "units": units, "source": path, "fmt": "emit-netcdf",
              "scale_factor": 1.0 if scale is None else float(scale)}
    if not orthorectify:
        scene = build_scene(swath, **common, attrs={**attrs, "geometry": "swath"})
        if latlon is not None and latlon[0].shape == swath.shape[1:]:
            scene = scene.assign_coords(lat=(("y", "x"), np.asarray(latlon[0], np.float64)),
                                        lon=(("y", "x"), np.asarray(latlon[1], np.float64)))
        return scene
    if glt is None or geotransform is None:
        raise DataError(f"{path} has no GLT (location/glt_x, glt_y) and geotransform; "
                        "cannot orthorectify")
    from affine import Affine
    from rasterio.crs import CRS

    ortho = glt_orthorectify(swath, *glt)
    transform = Affine.from_gdal(*[float(v) for v in np.asarray(geotransform).ravel()[:6]])
    crs = CRS.from_wkt(_text(spatial_ref)) if spatial_ref is not None else None
    return build_scene(ortho, **common, crs=crs, transform=transform,
                       attrs={**attrs, "geometry": "orthorectified (GLT)"})
