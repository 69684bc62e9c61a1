"""NetCDF and Zarr image-time-series cubes, read window by window with xarray.

Two layouts are understood:

- **variables as bands** (WorldCereal/openEO style): one ``(t, y, x)`` variable per band,
  e.g. ``S2-L2A-B02``, ``S2-L2A-B03``...; pick them by name or ``fnmatch`` pattern
  (``variables="S2-L2A-*"``);
- **a band dimension**: one variable ``(time, band, y, x)`` (any order); pick bands with
  ``bands=``.

The x/y/time dimensions are found by name (``x``/``lon``/``longitude``/``easting``, ...,
``t``/``time``/``date``) or by a datetime coordinate. The CRS comes from the variables'
``grid_mapping`` variable (``crs_wkt``/``spatial_ref`` attributes or CF parameters), a
``spatial_ref``/``crs`` variable, or rioxarray; the transform from the (regular) pixel-centre
coordinates. A cube stored south-up (y ascending) is presented north-up.

Reads are lazy: the dataset is opened without dask and without caching, and a window read
``isel``-s only that window of each variable before loading it. The source pickles without
its open dataset (reopened on first use). Values are float32 with NaN for nodata: the
file's ``_FillValue``/``missing_value`` (decoded by xarray) and ``nodata=`` when given;
``scale`` (a factor, or ``{band or pattern: factor}``) multiplies after that, and integer
NDVI/EVI bands default to ``1e-4`` as in :mod:`~cropscope.data.readers.cube`.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.data.readers.cube import (
    _INDEX_BANDS,
    CATEGORICAL_BANDS,
    GridShape,
    make_cube,
    resolve_window,
)
from cropscope.errors import DataError
from cropscope.settings import check_array_memory

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["XarrayCubeSource"]

_X_NAMES = ("x", "lon", "longitude", "easting", "X")
_Y_NAMES = ("y", "lat", "latitude", "northing", "Y")
_T_NAMES = ("t", "time", "times", "date", "dates", "T")
_CRS_VARS = ("spatial_ref", "crs", "grid_mapping", "transverse_mercator")


def _open_dataset(path: Path, engine: str | None) -> xr.Dataset:
    """The dataset, lazily (no dask, no caching: only what is indexed gets read)."""
    import xarray as xr

    is_zarr = engine == "zarr" or (engine is None and path.suffix.lower() == ".zarr")
    try:
        if is_zarr:
            with warnings.catch_warnings():
                # falls back to unconsolidated metadata: fine for a local store
                warnings.simplefilter("ignore", RuntimeWarning)
                return xr.open_dataset(path, engine="zarr", chunks=None, cache=False)
        return xr.open_dataset(path, engine=engine, chunks=None, cache=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot open the cube {path}: {exc}") from None


def _find_dim(dims: Sequence[str], names: Sequence[str], given: str | None, what: str) -> str:
    if given is not None:
        if given not in dims:
            raise DataError(f"no {what} dimension {given!r} among {list(dims)}")
        return given
    for name in names:
        if name in dims:
            return name
    lower = {d.lower(): d for d in dims}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    raise DataError(f"no {what} dimension (one of {list(names)}) among {list(dims)}")


def _crs_from_attrs(attrs: Mapping[str, Any]) -> Any:
    from rasterio.crs import CRS

    for key in ("crs_wkt", "spatial_ref", "crs"):
        text = attrs.get(key)
        if isinstance(text, str) and text.strip():
            try:
                return CRS.from_user_input(text)
            except Exception:  # try the next attribute
                continue
    for key in ("epsg_code", "epsg"):
        if attrs.get(key):
            return CRS.from_user_input(str(attrs[key]) if ":" in str(attrs[key])
                                       else f"EPSG:{attrs[key]}")  # fmt: skip
    if "grid_mapping_name" in attrs:
        from pyproj import CRS as ProjCRS

        try:
            return CRS.from_wkt(ProjCRS.from_cf(dict(attrs)).to_wkt())
        except Exception:  # not enough CF parameters
            return None
    return None


def _find_crs(ds: xr.Dataset, var_names: Sequence[str]) -> Any:
    candidates: list[str] = []
    for name in var_names:
        var = ds[name]
        gm = var.attrs.get("grid_mapping") or var.encoding.get("grid_mapping")
        if gm:
            candidates.append(str(gm).split(":")[0].split()[0])
    candidates += [c for c in _CRS_VARS if c in ds.variables]
    for name in candidates:
        if name in ds.variables:
            crs = _crs_from_attrs(ds[name].attrs)
            if crs is not None:
                return crs
    crs = _crs_from_attrs(ds.attrs)
    if crs is not None:
        return crs
    try:
        import rioxarray  # noqa: F401

        return ds.rio.crs
    except Exception:  # rioxarray could not tell either
        return None


def _axis(values: np.ndarray, name: str) -> tuple[float, float]:
    """(first centre, step) of a regular coordinate."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        raise DataError(f"cannot tell the pixel size from the single {name} coordinate")
    steps = np.diff(values)
    step = float(steps.mean())
    if step == 0 or not np.allclose(steps, step, rtol=1e-6, atol=abs(step) * 1e-6):
        raise DataError(f"the {name} coordinates are not regularly spaced")
    return float(values[0]), step


def _as_times(values: np.ndarray) -> list[np.datetime64]:
    t = np.asarray(values)
    if not np.issubdtype(t.dtype, np.datetime64):
        try:
            t = np.array([np.datetime64(str(v)) for v in t])
        except ValueError:
            raise DataError("the time coordinate does not hold dates") from None
    days = t.astype("datetime64[D]")
    return list(days if (t == days.astype(t.dtype)).all() else t.astype("datetime64[s]"))


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


class XarrayCubeSource(GridShape):
    """A NetCDF (``.nc``) or Zarr (``.zarr``) cube read window by window; see the module
    docstring. Build it with :meth:`open`."""

    def __init__(
        self,
        path: Path,
        *,
        engine: str | None,
        variables: list[str],
        band_dim: str | None,
        band_index: list[int] | None,
        bands: list[str],
        dims: tuple[str, str, str],
        times: list[np.datetime64],
        shape: tuple[int, int],
        crs: Any,
        transform: Any,
        flip_y: bool,
        nodata: float | None,
        factors: list[float],
    ) -> None:
        self.path = path
        self._engine = engine
        self._variables = variables
        self._band_dim = band_dim
        self._band_index = band_index
        self.bands = bands
        self._dims = dims  # (time, y, x)
        self.times = times
        self.shape = shape
        self.crs = crs
        self.transform = transform
        self._flip_y = flip_y
        self._nodata = nodata
        self._factors = factors
        self._ds: xr.Dataset | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_ds"] = None  # no open file in the pickled state
        return state

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        variables: str | Sequence[str] | None = None,
        bands: Sequence[str] | None = None,
        time_dim: str | None = None,
        nodata: float | None = None,
        scale: float | Mapping[str, float] | None = None,
        engine: str | None = None,
        rename: Mapping[str, str] | Callable[[str], str] | None = None,
    ) -> XarrayCubeSource:
        """Describe the cube at ``path`` without reading pixels.

        ``variables``: names or ``fnmatch`` patterns of the variables to use (default: all
        with the x and y dimensions), in the order given; the matches of one pattern come
        sorted by name. ``bands``: the bands to keep, by name (after
        ``rename``), in that order. ``time_dim``: the time dimension when not found by
        name. ``nodata``: a raw value to treat as missing (besides the file's fill value).
        ``scale``: a factor for every band or ``{band or pattern: factor}``. ``engine``:
        xarray's backend (default: by suffix). ``rename``: a mapping or function giving
        each band its name (e.g. ``lambda v: v.removeprefix("S2-L2A-")``).
        """
        path = Path(path).expanduser()
        if not path.exists():
            raise DataError(f"cube not found: {path}")
        if path.is_file():  # a checksum list beside or above it: verified first
            from cropscope.remote import verify_listed

            verify_listed(path)
        ds = _open_dataset(path, engine)
        try:
            return cls._describe(ds, path, engine, variables, bands, time_dim, nodata, scale,
                                 rename)  # fmt: skip
        finally:
            ds.close()

    @classmethod
    def _describe(
        cls,
        ds: xr.Dataset,
        path: Path,
        engine: str | None,
        variables: str | Sequence[str] | None,
        bands: Sequence[str] | None,
        time_dim: str | None,
        nodata: float | None,
        scale: float | Mapping[str, float] | None,
        rename: Mapping[str, str] | Callable[[str], str] | None,
    ) -> XarrayCubeSource:
        all_dims = [str(d) for d in ds.sizes]
        x_dim = _find_dim(all_dims, _X_NAMES, None, "x")
        y_dim = _find_dim(all_dims, _Y_NAMES, None, "y")
        spatial = [str(v) for v in ds.data_vars if {x_dim, y_dim} <= set(ds[v].dims)]
        if variables is None:
            names = spatial
        else:
            patterns = [variables] if isinstance(variables, str) else list(variables)
            # in the order of the patterns; a wildcard's matches sorted by name, because
            # the variable order of a Zarr store follows its file system's listing
            names = []
            for pattern in patterns:
                names += sorted(v for v in spatial if _matches(v, [pattern]) and v not in names)
            if not names:
                raise DataError(f"no variable of {path.name} matches {patterns}; it has {spatial}")
        if not names:
            raise DataError(f"{path.name} has no variable with the {y_dim}/{x_dim} dimensions")

        if time_dim is None:
            dated = [d for d in all_dims if d in ds.coords and np.issubdtype(
                ds[d].dtype, np.datetime64)]  # fmt: skip
            candidates = [d for d in all_dims if d in _T_NAMES] + dated
            time_dim = candidates[0] if candidates else None
        t_dim = _find_dim(all_dims, _T_NAMES, time_dim, "time")
        other = sorted({str(d) for v in names for d in ds[v].dims} - {x_dim, y_dim, t_dim})
        if len(other) > 1:
            raise DataError(f"cannot tell the band dimension among {other}")
        band_dim = other[0] if other else None
        if band_dim is not None and len(names) > 1:
            raise DataError(
                f"{len(names)} variables with a band dimension {band_dim!r}: select one "
                "with variables="
            )
        for v in names:
            if t_dim not in ds[v].dims:
                raise DataError(f"variable {v!r} has no time dimension {t_dim!r}")

        def new_name(raw: str) -> str:
            if rename is None:
                return raw
            return rename(raw) if callable(rename) else rename.get(raw, raw)

        if band_dim is not None:
            coord = ds[band_dim].values if band_dim in ds.coords else np.arange(ds.sizes[band_dim])
            raw_names = [new_name(str(b)) for b in coord]
            units = [(names[0], i) for i in range(len(raw_names))]
        else:
            raw_names = [new_name(v) for v in names]
            units = [(v, -1) for v in names]
        if bands is not None:
            absent = [b for b in bands if b not in raw_names]
            if absent:
                raise DataError(f"bands {absent} not in {path.name}; it has {raw_names}")
            picks = [raw_names.index(b) for b in bands]
        else:
            picks = list(range(len(raw_names)))
        band_names = [raw_names[i] for i in picks]
        if len(set(band_names)) != len(band_names):
            raise DataError(f"duplicate band names {band_names}")
        chosen_vars = [units[i][0] for i in picks] if band_dim is None else names

        y0, dy = _axis(ds[y_dim].values, y_dim)
        x0, dx = _axis(ds[x_dim].values, x_dim)
        height, width = ds.sizes[y_dim], ds.sizes[x_dim]
        flip_y = dy > 0
        if flip_y:  # south-up storage: present it north-up
            y0 = y0 + dy * (height - 1)
            dy = -dy
        from affine import Affine

        transform = Affine(dx, 0.0, x0 - dx / 2, 0.0, dy, y0 - dy / 2)
        crs = _find_crs(ds, chosen_vars)

        factors = []
        for i, name in zip(picks, band_names, strict=True):
            var = ds[units[i][0]]
            factors.append(_factor(name, var.dtype, scale))
        return cls(
            path, engine=engine, variables=chosen_vars, band_dim=band_dim,
            band_index=picks if band_dim is not None else None, bands=band_names,
            dims=(t_dim, y_dim, x_dim), times=_as_times(ds[t_dim].values),
            shape=(int(height), int(width)), crs=crs, transform=transform, flip_y=flip_y,
            nodata=nodata, factors=factors,
        )  # fmt: skip

    @property
    def files(self) -> list[Path]:
        """The cube's file (or Zarr store)."""
        return [self.path]

    def _dataset(self) -> xr.Dataset:
        return self._ds if self._ds is not None else _open_dataset(self.path, self._engine)

    @contextmanager
    def opened(self) -> Iterator[XarrayCubeSource]:
        """Keep the dataset open while the block runs."""
        if self._ds is not None:
            yield self
            return
        self._ds = _open_dataset(self.path, self._engine)
        try:
            yield self
        finally:
            ds, self._ds = self._ds, None
            ds.close()

    def lazy_window(self, ds: xr.Dataset, window: Any = None) -> list[xr.DataArray]:
        """The window of each variable, ``isel``-ed but not loaded, as ``(time, [band,]
        y, x)`` arrays (south-up cubes: still in storage order)."""
        rows, cols, _ = resolve_window(window, self.height, self.width, self.transform)
        t_dim, y_dim, x_dim = self._dims
        if self._flip_y:
            rows = slice(self.height - rows.stop, self.height - rows.start)
        out = []
        for name in self._variables:
            var = ds[name].isel({y_dim: rows, x_dim: cols})
            order = [t_dim, *([self._band_dim] if self._band_dim else []), y_dim, x_dim]
            out.append(var.transpose(*order))
        return out

    def read(self, window: Any = None) -> xr.DataArray:
        """The cube, or ``window`` of it, as ``(time, band, y, x)`` float32 (NaN = nodata)."""
        _, _, transform = resolve_window(window, self.height, self.width, self.transform)
        ds = self._dataset()
        try:
            lazy = self.lazy_window(ds, window)
            check_array_memory([*lazy, *(((v.size,), "f4") for v in lazy)],
                               f"cube {self.path.name}")  # the values, then as float32
            parts = [v.to_numpy() for v in lazy]
        except (OSError, RuntimeError) as exc:
            raise DataError(f"cannot read {self.path}: {exc}") from None
        finally:
            if ds is not self._ds:
                ds.close()
        if self._band_dim is not None:
            raw = parts[0][:, self._band_index]
        else:
            raw = np.stack(parts, axis=1)
        if self._flip_y:
            raw = raw[:, :, ::-1]
        data = raw.astype(np.float32)
        if self._nodata is not None:
            nd = self._nodata
            data[np.isnan(raw) if np.isnan(nd) else raw == nd] = np.nan
        for c, factor in enumerate(self._factors):
            if factor != 1.0:
                data[:, c] *= np.float32(factor)
        return make_cube(data, self.times, self.bands, transform, self.crs, self._factors)


def _factor(name: str, dtype: Any, scale: float | Mapping[str, float] | None) -> float:
    """The scale factor of one band (see the module docstring)."""
    if name.upper() in CATEGORICAL_BANDS:
        return 1.0
    if isinstance(scale, Mapping):
        for pattern, value in scale.items():
            if _matches(name, [pattern]):
                return float(value)
    elif scale is not None:
        return float(scale)
    if np.issubdtype(np.dtype(dtype), np.integer) and name.upper() in _INDEX_BANDS:
        return 1e-4
    return 1.0
