"""Image time-series cubes: a stack of rasters -> ``xarray.DataArray (time, band, y, x)``.

Reading
-------
One file per date (GeoTIFF, JPEG2000 or anything GDAL opens). Dates come from the file
names (``..._2013-09-14.jp2``, ``..._20130914.tif``, ``2013_09_14``) unless given. A
single-band file is named by ``band`` or by a band token in its file name (``NDVI``,
``EVI``, ``B04``, ``NIR``, ...); multi-band files use their band descriptions
(``band1``, ``band2``, ... without). Several single-band files of the same date (e.g.
``B04_2021-05-01.tif`` and ``B08_2021-05-01.tif``) are stacked as bands of that date.

All files must share shape, CRS and transform. Values are float32 with NaN for nodata.

Scaling convention (reflectance and indices end up in 0–1): ``scale`` (and an offset of
0) when given; otherwise the file's own ``scales``/``offsets`` when it has any; otherwise
``1e-4`` for integer ``NDVI``/``EVI``/``EVI2`` bands (the MODIS MOD13Q1 convention: the
Sinop ``.jp2`` files are int16 NDVI x 10000 with no scale in their metadata); otherwise
no scaling. The factors used are in ``attrs["scale_factor"]`` (one per band).
"""

from __future__ import annotations

import glob as globlib
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date as _date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.errors import DataError


def pixel_centres(transform: Any, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(y, x)`` coordinates of the pixel centres of a north-up grid."""
    xs = transform.c + transform.a * (np.arange(width) + 0.5)
    ys = transform.f + transform.e * (np.arange(height) + 0.5)
    return ys, xs


def write_grid(da: xr.DataArray, crs: Any, transform: Any) -> xr.DataArray:
    """``da`` with its transform (and CRS, when known) written by rioxarray and kept in
    ``attrs["transform"]`` (6 floats) and ``attrs["crs"]`` (WKT)."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    da = da.rio.write_transform(transform)
    if crs is not None:
        da = da.rio.write_crs(crs)
        da.attrs["crs"] = crs.to_wkt()
    da.attrs["transform"] = tuple(float(v) for v in tuple(transform)[:6])
    return da

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "CubeSource",
    "date_from_name",
    "pixel_centres",
    "read_cube",
    "write_geotiff",
    "write_grid",
]

_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img", ".nc")
_DATE_PATTERNS = (
    re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)"),
    re.compile(r"(?<!\d)(\d{4})_(\d{2})_(\d{2})(?!\d)"),
    re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)"),
)
_BAND_TOKEN = re.compile(
    r"^(NDVI|EVI2?|NDWI|NDMI|SAVI|NBR|LAI|BLUE|GREEN|RED|NIR|MIR|SWIR[12]?|VV|VH|"
    r"B0?[1-9]|B1[0-2]|B8A)$",
    re.IGNORECASE,
)
_INDEX_BANDS = {"NDVI", "EVI", "EVI2"}


def date_from_name(name: str) -> np.datetime64 | None:
    """The first valid date in a file name (``YYYY-MM-DD``, ``YYYY_MM_DD``, ``YYYYMMDD``)."""
    for pattern in _DATE_PATTERNS:
        for m in pattern.finditer(name):
            y, mo, d = (int(g) for g in m.groups())
            try:
                return np.datetime64(_date(y, mo, d), "D")
            except ValueError:
                continue
    return None


def _band_from_name(stem: str) -> str | None:
    for token in re.split(r"[_\-.\s]+", stem):
        if _BAND_TOKEN.match(token):
            return token.upper() if token.upper() != "B8A" else "B8A"
    return None


def _resolve(source: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(source, str | Path):
        text = str(source)
        path = Path(text).expanduser()
        if path.is_dir():
            files = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _RASTER_SUFFIXES
            )
            if not files:
                raise DataError(f"no raster files ({', '.join(_RASTER_SUFFIXES)}) in {path}")
            return files
        if any(ch in text for ch in "*?["):
            files = sorted(Path(p) for p in globlib.glob(str(Path(text).expanduser())))
            if not files:
                raise DataError(f"no files match {text}")
            return files
        if not path.is_file():
            raise DataError(f"file not found: {path}")
        return [path]
    files = [Path(p).expanduser() for p in source]
    if not files:
        raise DataError("no raster files given")
    absent = [str(p) for p in files if not p.is_file()]
    if absent:
        raise DataError(
            f"file not found: {absent[0]}"
            + (f" (+{len(absent) - 1} more)" if len(absent) > 1 else "")
        )
    return files


def _inspect(path: Path, band: str | None) -> dict[str, Any]:
    """A file's grid, data type, scaling, nodata and band names, without reading pixels."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                info = {
                    "shape": (src.height, src.width),
                    "crs": src.crs,
                    "transform": src.transform,
                    "dtype": src.dtypes[0],
                    "scales": src.scales,
                    "offsets": src.offsets,
                    "nodata": src.nodatavals,
                    "descriptions": src.descriptions,
                    "count": src.count,
                }
    except RasterioIOError as exc:
        raise DataError(f"cannot read raster {path}: {exc}") from None
    count = info["count"]
    if count == 1:
        names = [band or _band_from_name(path.stem) or info["descriptions"][0] or "band1"]
    else:
        descr = info["descriptions"]
        names = [descr[i] or f"band{i + 1}" for i in range(count)]
    return {**info, "names": names, "path": path}


def _scaling(info: Mapping[str, Any], i: int, scale: float | None) -> tuple[float, float]:
    """(factor, offset) of band ``i`` of a file (see the module docstring)."""
    file_scale, file_offset = info["scales"][i], info["offsets"][i]
    if scale is not None:
        return float(scale), 0.0
    if file_scale not in (None, 1.0) or file_offset not in (None, 0.0):
        return float(file_scale or 1.0), float(file_offset or 0.0)
    if np.issubdtype(np.dtype(info["dtype"]), np.integer) and info["names"][i].upper() in (
        _INDEX_BANDS
    ):
        return 1e-4, 0.0
    return 1.0, 0.0


def _to_float(raw: np.ndarray, nd: float | None, factor: float, offset: float) -> np.ndarray:
    """One band's raw values as float32 with NaN for nodata, scaled."""
    data = raw.astype(np.float32)
    if nd is not None:
        bad = np.isnan(raw) if np.isnan(nd) else raw == nd
        data[bad] = np.nan
    if factor != 1.0 or offset != 0.0:
        data = (data.astype(np.float64) * factor + offset).astype(np.float32)
    return data


class CubeSource:
    """The files of a cube, scanned but not read: grid, dates, bands, scaling.

    :meth:`read` reads the whole cube or one window of it (rasterio windowed reads), so a
    map job can stream a scene window by window. :func:`read_cube` is
    ``CubeSource.scan(...).read()``. Use ``with source.opened():`` to keep the files open
    across many reads.
    """

    def __init__(
        self,
        layers: list[dict[str, Any]],
        times: list[np.datetime64],
        bands: list[str],
        plan: list[list[tuple[int, int]]],
        factors: list[list[tuple[float, float]]],
        nodata: float | None,
    ) -> None:
        self._layers = layers
        self.times = times
        self.bands = bands
        #: ``plan[t][c]`` = (layer index, 0-based band index in that file)
        self._plan = plan
        self._factors = factors
        self._nodata = nodata
        self._handles: dict[int, Any] | None = None
        ref = layers[0]
        self.shape: tuple[int, int] = tuple(ref["shape"])  # type: ignore[assignment]
        self.crs = ref["crs"]
        self.transform = ref["transform"]

    @classmethod
    def scan(
        cls,
        source: str | Path | Sequence[str | Path],
        *,
        dates: Sequence[Any] | None = None,
        band: str | None = None,
        scale: float | None = None,
        nodata: float | None = None,
    ) -> CubeSource:
        """Find the files, their dates and band names and check they share one grid."""
        files = _resolve(source)
        if dates is None:
            parsed = [date_from_name(p.name) for p in files]
            missing = [p.name for p, d in zip(files, parsed, strict=True) if d is None]
            if missing:
                raise DataError(
                    f"no date (YYYY-MM-DD or YYYYMMDD) in the file name {missing[0]}; "
                    "pass dates="
                )
            file_dates = [np.datetime64(d, "D") for d in parsed]
        else:
            if len(dates) != len(files):
                raise DataError(f"{len(dates)} dates given for {len(files)} files")
            try:
                file_dates = [np.datetime64(d, "D") for d in dates]
            except (ValueError, TypeError) as exc:
                raise DataError(f"cannot interpret the given dates: {exc}") from None

        layers = [_inspect(p, band) for p in files]
        ref = layers[0]
        for layer in layers[1:]:
            for key, what in (("shape", "shape"), ("crs", "CRS"), ("transform", "transform")):
                if layer[key] != ref[key]:
                    raise DataError(
                        f"{layer['path'].name} has a different {what} ({layer[key]}) than "
                        f"{ref['path'].name} ({ref[key]}); all files must share the same grid"
                    )

        # group by date; bands of one date may come from several files
        by_date: dict[np.datetime64, dict[str, tuple[int, int]]] = {}
        band_order: list[str] = []
        for d, (k, layer) in zip(file_dates, enumerate(layers), strict=True):
            slot = by_date.setdefault(d, {})
            for i, name in enumerate(layer["names"]):
                if name in slot:
                    raise DataError(
                        f"two files give band {name!r} for {d} (e.g. {layer['path'].name}); "
                        "pass dates= or band= to tell them apart"
                    )
                slot[name] = (k, i)
                if name not in band_order:
                    band_order.append(name)
        times = sorted(by_date)
        for d in times:
            absent = [b for b in band_order if b not in by_date[d]]
            if absent:
                raise DataError(f"date {d} lacks the bands {absent}; every date needs every band")
        plan = [[by_date[d][b] for b in band_order] for d in times]
        factors = [[_scaling(layers[k], i, scale) for k, i in row] for row in plan]
        return cls(layers, times, band_order, plan, factors, nodata)

    @property
    def files(self) -> list[Path]:
        """The raster files, in the order found."""
        return [layer["path"] for layer in self._layers]

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    @contextmanager
    def opened(self) -> Iterator[CubeSource]:
        """Keep every file open while the block runs (faster repeated window reads)."""
        import rasterio

        if self._handles is not None:
            yield self
            return
        handles: dict[int, Any] = {}
        try:
            with warnings.catch_warnings():
                from rasterio.errors import NotGeoreferencedWarning

                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                for k, layer in enumerate(self._layers):
                    handles[k] = rasterio.open(layer["path"])
            self._handles = handles
            yield self
        finally:
            self._handles = None
            for h in handles.values():
                h.close()

    def _read_layers(self, window: Any) -> dict[int, np.ndarray]:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        out: dict[int, np.ndarray] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            for k, layer in enumerate(self._layers):
                try:
                    if self._handles is not None:
                        out[k] = self._handles[k].read(window=window)
                    else:
                        with rasterio.open(layer["path"]) as src:
                            out[k] = src.read(window=window)
                except RasterioIOError as exc:
                    raise DataError(f"cannot read raster {layer['path']}: {exc}") from None
        return out

    def read(self, window: Any = None) -> xr.DataArray:
        """The cube, or the part inside ``window`` (a rasterio ``Window`` or
        ``((row_start, row_stop), (col_start, col_stop))``), as ``(time, band, y, x)``."""
        import xarray as xr
        from rasterio.windows import Window
        from rasterio.windows import transform as window_transform

        height, width = self.shape
        transform = self.transform
        if window is not None:
            if not isinstance(window, Window):
                window = Window.from_slices(*window)
            full = Window(0, 0, width, height)
            if (window.col_off < 0 or window.row_off < 0 or window.width <= 0
                    or window.height <= 0 or window.col_off + window.width > width
                    or window.row_off + window.height > height):  # fmt: skip
                raise DataError(f"window {window} is outside the {height}x{width} grid")
            if window != full:
                transform = window_transform(window, self.transform)
            height, width = int(window.height), int(window.width)
        raw = self._read_layers(window)
        data = np.empty((len(self.times), len(self.bands), height, width), dtype=np.float32)
        for t, row in enumerate(self._plan):
            for c, (k, i) in enumerate(row):
                nd = self._nodata if self._nodata is not None else self._layers[k]["nodata"][i]
                data[t, c] = _to_float(raw[k][i], nd, *self._factors[t][c])

        ys, xs = pixel_centres(transform, height, width)
        cube = xr.DataArray(
            data,
            dims=("time", "band", "y", "x"),
            coords={
                "time": np.array(self.times, dtype="datetime64[ns]"),
                "band": list(self.bands),
                "y": ys,
                "x": xs,
            },
            name="cube",
        )
        cube = write_grid(cube, self.crs, transform)
        cube.attrs["scale_factor"] = [float(f) for f, _ in self._factors[0]]
        return cube


def read_cube(
    source: str | Path | Sequence[str | Path],
    *,
    dates: Sequence[Any] | None = None,
    band: str | None = None,
    scale: float | None = None,
    nodata: float | None = None,
) -> xr.DataArray:
    """Read rasters (a directory, a glob pattern, a file or a list) as a cube.

    Returns a float32 ``DataArray (time, band, y, x)`` with coords ``time``
    (``datetime64``), ``band``, ``y``, ``x`` (pixel centres), the CRS and transform written
    with rioxarray and also kept in ``attrs["crs"]`` (WKT) and ``attrs["transform"]``
    (6-tuple ``a, b, c, d, e, f``). See the module docstring for dates, band names and the
    scaling convention. ``nodata`` overrides the files' nodata value. To read a window at
    a time, use :class:`CubeSource`.
    """
    return CubeSource.scan(source, dates=dates, band=band, scale=scale, nodata=nodata).read()


# ---------------------------------------------------------------------------- writing
def _grid_of(like: Any) -> tuple[Any, Any, tuple[int, int] | None]:
    """(crs, transform, (height, width)) of a cube, a rasterio dataset or a profile dict."""
    from affine import Affine
    from rasterio.crs import CRS

    if like is None:
        return None, None, None
    if isinstance(like, Mapping):
        shape = (like["height"], like["width"]) if "height" in like else None
        return like.get("crs"), like.get("transform"), shape
    if hasattr(like, "rio"):
        crs = like.rio.crs
        if crs is None and like.attrs.get("crs"):
            crs = CRS.from_wkt(like.attrs["crs"])
        if "transform" in like.attrs:
            transform = Affine(*like.attrs["transform"])
        else:
            transform = like.rio.transform()
        return crs, transform, (like.sizes["y"], like.sizes["x"])
    if hasattr(like, "transform") and hasattr(like, "crs"):  # open rasterio dataset
        return like.crs, like.transform, (like.height, like.width)
    raise DataError(f"cannot take a grid from {type(like).__name__}; pass a cube or a profile")


def _colormap(colormap: Mapping[int, Any]) -> dict[int, tuple[int, int, int, int]]:
    out = {}
    for value, colour in colormap.items():
        if isinstance(colour, str):
            hexa = colour.lstrip("#")
            if len(hexa) not in (6, 8):
                raise DataError(f"colour {colour!r} for value {value} is not #rrggbb[aa]")
            rgba = tuple(int(hexa[i : i + 2], 16) for i in range(0, len(hexa), 2))
        else:
            rgba = tuple(int(c) for c in colour)
        out[int(value)] = (*rgba, 255)[:4] if len(rgba) == 3 else rgba
    return out


def _cog_available() -> bool:
    import rasterio

    with rasterio.Env() as env:
        return "COG" in env.drivers()


def write_geotiff(
    array: Any,
    path: str | Path,
    *,
    like: Any = None,
    crs: Any = None,
    transform: Any = None,
    dtype: str | np.dtype | None = None,
    nodata: float | None = None,
    colormap: Mapping[int, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    band_names: Sequence[str] | None = None,
) -> Path:
    """Write a 2-D ``[y, x]`` or 3-D ``[band, y, x]`` array as a tiled, compressed GeoTIFF.

    The grid comes from ``like`` (a cube from :func:`read_cube`, an open rasterio dataset or
    a profile dict) unless ``crs``/``transform`` are given. A Cloud-Optimized GeoTIFF
    (GDAL's COG driver, DEFLATE) is written when available, else a tiled DEFLATE GTiff;
    always atomically. ``dtype`` defaults to the array's; NaN is written as ``nodata``
    (default NaN for float output; integer output with NaN needs ``nodata``). ``colormap``
    (``{value: "#rrggbb" or (r, g, b[, a])}``) applies to single-band uint8/uint16 output.
    """
    import rasterio

    from cropscope.io import atomic_path

    data = np.asarray(array.values if hasattr(array, "values") else array)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise DataError(f"write_geotiff takes [y, x] or [band, y, x], got shape {data.shape}")
    if like is None and hasattr(array, "rio"):
        like = array
    like_crs, like_transform, like_shape = _grid_of(like)
    crs = crs if crs is not None else like_crs
    transform = transform if transform is not None else like_transform
    if like_shape is not None and tuple(data.shape[1:]) != tuple(like_shape):
        raise DataError(f"array is {data.shape[1:]} pixels but the grid is {like_shape}")
    out_dtype = np.dtype(dtype) if dtype is not None else data.dtype
    if out_dtype == np.float16 or out_dtype == np.bool_:
        out_dtype = np.dtype(np.float32) if out_dtype == np.float16 else np.dtype(np.uint8)
    if np.issubdtype(out_dtype, np.floating):
        nodata = np.nan if nodata is None else nodata
        data = data.astype(out_dtype)
        if not np.isnan(nodata):
            data = np.where(np.isnan(data), out_dtype.type(nodata), data)
    else:
        if np.issubdtype(data.dtype, np.floating) and np.isnan(data).any():
            if nodata is None:
                raise DataError(f"the array has NaN but {out_dtype} output needs nodata=")
            data = np.where(np.isnan(data), nodata, data)
        data = data.astype(out_dtype)
    if colormap is not None and (data.shape[0] != 1 or out_dtype not in (np.uint8, np.uint16)):
        raise DataError("a colormap needs single-band uint8 or uint16 output")
    if band_names is not None and len(band_names) != data.shape[0]:
        raise DataError(f"{len(band_names)} band names for {data.shape[0]} bands")
    if band_names is None and hasattr(array, "coords") and "band" in getattr(array, "dims", ()):
        band_names = [str(b) for b in array.coords["band"].values]

    count, height, width = data.shape
    profile: dict[str, Any] = {
        "width": width,
        "height": height,
        "count": count,
        "dtype": out_dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "deflate",
    }
    if _cog_available():
        profile.update(driver="COG", blocksize=256)
    else:  # pragma: no cover - depends on the GDAL build
        profile.update(driver="GTiff", tiled=True, blockxsize=256, blockysize=256)
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        from rasterio.errors import NotGeoreferencedWarning

        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            if colormap is not None:
                dst.write_colormap(1, _colormap(colormap))
            if tags:
                dst.update_tags(**{str(k): str(v) for k, v in tags.items()})
            for i, name in enumerate(band_names or []):
                dst.set_band_description(i + 1, str(name))
    return path
