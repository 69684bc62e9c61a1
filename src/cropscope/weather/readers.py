"""Read gridded weather (NetCDF, GRIB via cfgrib, Zarr) into one standard layout.

The standard layout is an ``xarray.Dataset`` whose spatial dimensions are ``latitude``
(ascending, south → north) and ``longitude`` (ascending, in [-180, 180)), optional ``level``
(pressure in hPa) and any other leading dimensions (``time``, ``month``, ensemble …).
Variables get short canonical names (``u``, ``v``, ``z``, ``t``, ``q``, ``t2m`` …);
geopotential *height* in metres is converted to geopotential (m² s⁻²).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from cropscope.errors import DataError
from cropscope.settings import check_array_memory
from cropscope.weather.geometry import G0

__all__ = ["CANONICAL", "open_weather", "spatial_slices", "standardize", "write_netcdf"]

_LAT = ("latitude", "lat", "nav_lat", "y", "rlat")
_LON = ("longitude", "lon", "nav_lon", "x", "rlon")
_LEVEL = ("level", "isobaricInhPa", "pressure_level", "plev", "lev", "pressure", "isobaric")

#: canonical variable name → accepted aliases (case-insensitive) and CF standard names
CANONICAL: dict[str, tuple[str, ...]] = {
    "u": ("u", "uu", "ua", "u_component_of_wind", "eastward_wind"),
    "v": ("v", "vv", "va", "v_component_of_wind", "northward_wind"),
    "z": ("z", "geopotential", "ght", "gh", "zg", "geopotential_height", "hgt"),
    "t": ("t", "tt", "ta", "temperature", "air_temperature", "air"),
    "q": ("q", "qq", "hus", "specific_humidity"),
    "r": ("r", "rh", "hur", "relative_humidity"),
    "u10": ("u10", "10u", "uas", "10m_u_component_of_wind"),
    "v10": ("v10", "10v", "vas", "10m_v_component_of_wind"),
    "t2m": ("t2m", "2t", "t2", "tas", "2m_temperature"),
    "sp": ("sp", "psfc", "ps", "surface_pressure"),
    "q2": ("q2",),
    "rho": ("rho", "rio", "air_density"),
    "tmin": ("tmin", "mn2t", "tasmin", "minimum_2m_temperature"),
    "tmax": ("tmax", "mx2t", "tasmax", "maximum_2m_temperature"),
}


def _find(names: Sequence[str], candidates: Sequence[str]) -> str | None:
    lower = {n.lower(): n for n in names}
    for cand in candidates:
        if cand.lower() in lower:
            return lower[cand.lower()]
    return None


def _canonical_name(name: str, attrs: dict) -> str:
    keys = [name.lower(), str(attrs.get("standard_name", "")).lower(),
            str(attrs.get("GRIB_shortName", "")).lower()]
    for canon, aliases in CANONICAL.items():
        if any(k in aliases for k in keys if k):
            return canon
    return name


def standardize(ds: xr.Dataset | xr.DataArray, variables: Sequence[str] | None = None,
                ) -> xr.Dataset:
    """Bring a dataset to the standard layout (see module docstring)."""
    if isinstance(ds, xr.DataArray):
        ds = ds.to_dataset(name=ds.name or "var")
    names = [str(n) for n in [*ds.dims, *ds.coords]]
    lat, lon = _find(names, _LAT), _find(names, _LON)
    if lat is None or lon is None:
        raise DataError(f"no latitude/longitude coordinates among {sorted(map(str, names))}")
    if ds[lat].ndim != 1 or ds[lon].ndim != 1:
        raise DataError("only regular latitude/longitude grids (1-D coordinates) are supported")
    rename = {lat: "latitude", lon: "longitude"}
    level = _find(names, _LEVEL)
    if level is not None and level not in rename:
        rename[level] = "level"
    ds = ds.rename({k: v for k, v in rename.items() if k != v})
    for dim in ("latitude", "longitude"):
        if dim not in ds.dims:
            ds = ds.swap_dims({ds[dim].dims[0]: dim})
    # variables: canonical names, drop the ones without both spatial dims
    keep = {}
    for name, da in ds.data_vars.items():
        if "latitude" in da.dims and "longitude" in da.dims:
            canon = _canonical_name(str(name), da.attrs)
            keep[canon if canon not in keep else str(name)] = da
    if not keep:
        raise DataError("no variable on the latitude/longitude grid")
    out = xr.Dataset(keep, attrs=ds.attrs)
    if variables:
        wanted = [_canonical_name(v, {}) for v in variables]
        missing = [v for v, w in zip(variables, wanted, strict=True) if w not in out]
        if missing:
            have = sorted(map(str, out.data_vars))
            raise DataError(f"variables {missing} not in the file (has {have})")
        out = out[wanted]
    # longitudes to [-180, 180), ascending; latitudes ascending
    lon_vals = ((out["longitude"].values.astype(float) + 180.0) % 360.0) - 180.0
    out = out.assign_coords(longitude=lon_vals).sortby("longitude").sortby("latitude")
    if np.unique(out["longitude"].values).size != out.sizes["longitude"]:
        raise DataError("duplicate longitudes after wrapping to [-180, 180)")
    if "level" in out.coords:
        lev = out["level"]
        units = str(lev.attrs.get("units", "")).lower()
        if units in {"pa", "pascal"} or (units == "" and float(np.nanmax(lev.values)) > 2000):
            out = out.assign_coords(level=lev.values / 100.0)
        out["level"].attrs["units"] = "hPa"
    # geopotential height (m) → geopotential (m² s⁻²)
    if "z" in out:
        units = str(out["z"].attrs.get("units", "")).lower().replace(" ", "")
        if units in {"m", "gpm", "metre", "meter", "metres", "meters"}:
            out["z"] = out["z"] * G0
            out["z"].attrs.update(units="m**2 s**-2", long_name="Geopotential")
    # put latitude, longitude last
    for name in list(out.data_vars):
        dims = [d for d in out[name].dims if d not in ("latitude", "longitude")]
        out[name] = out[name].transpose(*dims, "latitude", "longitude").astype(np.float64)
    return out


def open_weather(path: str | Path, variables: Sequence[str] | None = None,
                 engine: str | None = None) -> xr.Dataset:
    """Open a NetCDF (classic or 4), GRIB (needs ``cfgrib``) or Zarr file, standardised.

    The data are loaded into memory (fields here are a few hundred MB at most).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"weather file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if path.is_dir() or suffix == ".zarr":
            ds = xr.open_zarr(path)
        elif suffix in {".grib", ".grb", ".grib2", ".grb2"}:
            try:
                import cfgrib  # noqa: F401
            except ImportError:
                raise DataError("reading GRIB needs cfgrib: pip install 'cropscope[grib]'"
                                ) from None
            ds = xr.open_dataset(path, engine="cfgrib")
        else:
            ds = _open_netcdf(path, engine)
    except DataError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise DataError(f"cannot read {path}: {' '.join(str(exc).split())[:300]}") from None
    # declared sizes first: the fields are converted to float64 and loaded whole
    check_array_memory([(v.shape, "f8") for v in ds.variables.values()],
                       f"weather file {path.name}")
    ds = standardize(ds, variables)
    return ds.load()


def _open_netcdf(path: Path, engine: str | None) -> xr.Dataset:
    import warnings

    engines = [engine] if engine else ["scipy", "h5netcdf", "netcdf4"]
    errors = []
    for eng in engines:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=xr.SerializationWarning)
                return xr.open_dataset(path, engine=eng)
        except (OSError, ValueError, TypeError, ImportError) as exc:
            # each reader's first line only: xarray's text goes on with install advice
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
            errors.append(f"{eng}: {first[:160]}")
    raise DataError(f"cannot read {path} as NetCDF ({'; '.join(errors)})")


def spatial_slices(ds: xr.Dataset) -> list[dict[str, object]]:
    """Every combination of the non-spatial coordinates (e.g. month × level), in order."""
    dims: list[str] = []
    for da in ds.data_vars.values():
        for d in map(str, da.dims):
            if d not in ("latitude", "longitude") and d not in dims:
                dims.append(d)
    keys: list[dict[str, object]] = [{}]
    for d in dims:
        coord = ds[d].values if d in ds.coords else np.arange(ds.sizes[d])
        values: list[object]
        if np.issubdtype(coord.dtype, np.datetime64):
            values = [str(t) for t in coord.astype("datetime64[s]")]  # ISO, JSON-friendly
        else:
            values = [v.item() if hasattr(v, "item") else v for v in coord]
        keys = [{**k, d: v} for k in keys for v in values]
    return keys


def write_netcdf(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` to NetCDF at ``path``, atomically: NetCDF-4 through h5netcdf when it is
    installed, else classic NetCDF through scipy (both read back by :func:`open_weather`)."""
    from typing import Literal

    from cropscope.io import atomic_path

    engine: Literal["h5netcdf", "scipy"]
    try:
        import h5netcdf  # noqa: F401

        engine = "h5netcdf"
    except ImportError:
        engine = "scipy"
    path = Path(path)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine=engine)
    return path
