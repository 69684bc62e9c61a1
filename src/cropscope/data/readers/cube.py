"""Image time-series cubes: a stack of rasters -> ``xarray.DataArray (time, band, y, x)``.

Reading
-------
One file per date (GeoTIFF, JPEG2000 or anything GDAL opens). Dates come from the file
names (``..._2013-09-14.jp2``, ``..._20130914.tif``, ``2013_09_14``) unless given. A
single-band file is named by ``band`` or by a band token in its file name (``NDVI``,
``EVI``, ``B04``, ``NIR``, ...); multi-band files use their band descriptions
(``band1``, ``band2``, ... without). Several single-band files of the same date (e.g.
``B04_2021-05-01.tif`` and ``B08_2021-05-01.tif``) are stacked as bands of that date.

All files must share shape, CRS and transform, unless ``target=`` names one grid to align
them to: files on another grid are then read through a GDAL ``WarpedVRT`` (bilinear, or
nearest for categorical bands such as ``SCL``). Values are float32 with NaN for nodata.
One file may also hold several dates (``band_names`` + ``dates``: the bands of the first
date, then those of the next, ...).

Every input kind (this module's :class:`CubeSource`, NetCDF/Zarr cubes, STAC catalogs,
masked or aligned wrappers) satisfies the :class:`CubeLike` protocol the map job reads.

Scaling convention (reflectance and indices end up in 0–1): ``scale`` (and an offset of
0) when given; otherwise the file's own ``scales``/``offsets`` when it has any; otherwise
``1e-4`` for integer ``NDVI``/``EVI``/``EVI2`` bands (the MODIS MOD13Q1 convention: the
Sinop ``.jp2`` files are int16 NDVI x 10000 with no scale in their metadata); otherwise
no scaling. The factors used are in ``attrs["scale_factor"]`` (one per band). Categorical bands
(:data:`CATEGORICAL_BANDS`: ``SCL``, ``FMASK``, ``QA``, ...) are never scaled.
"""

from __future__ import annotations

import glob as globlib
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import date as _date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from cropscope.data.readers.grid import Grid
from cropscope.errors import DataError
from cropscope.remote import verify_listed


def pixel_centres(transform: Any, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(y, x)`` coordinates of the pixel centres of a north-up grid."""
    xs = transform.c + transform.a * (np.arange(width) + 0.5)
    ys = transform.f + transform.e * (np.arange(height) + 0.5)
    return ys, xs


def write_grid(da: xr.DataArray, crs: Any, transform: Any) -> xr.DataArray:
    """``da`` with its transform (and CRS, when known) written by rioxarray and kept in
    ``attrs["transform"]`` (6 floats) and ``attrs["crs"]`` (WKT)."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    # rioxarray's write_* without inplace deep-copies the data every time (two copies of a
    # whole window per read), and each copy keeps its cached .rio accessor in a reference
    # cycle that only the cyclic collector frees: a shallow copy (the caller's object stays
    # as it was), written in place, then the cached accessor dropped
    da = da.copy(deep=False)
    da.rio.write_transform(transform, inplace=True)
    if crs is not None:
        da.rio.write_crs(crs, inplace=True)
        da.attrs["crs"] = crs.to_wkt()
    da.attrs["transform"] = tuple(float(v) for v in tuple(transform)[:6])
    cache = getattr(da, "_cache", None)  # xarray keeps accessors there (obj -> accessor -> obj)
    if isinstance(cache, dict):
        cache.pop("rio", None)
    return da

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "CATEGORICAL_BANDS",
    "CubeLike",
    "CubeSource",
    "CubeWrapper",
    "RenamedBandsCube",
    "date_from_name",
    "make_cube",
    "pixel_centres",
    "read_cube",
    "resolve_window",
    "write_geotiff",
    "write_grid",
]

#: band names holding class codes or bit flags: never scaled, resampled with nearest
CATEGORICAL_BANDS = frozenset({"SCL", "FMASK", "QA", "QA_PIXEL", "MASK", "CLOUD_MASK", "CLM"})


@runtime_checkable
class CubeLike(Protocol):
    """What the map job needs from an input cube: one grid, dates, bands, windowed reads.

    Satisfied by :class:`CubeSource` (raster files),
    :class:`~cropscope.data.readers.xarray_cube.XarrayCubeSource` (NetCDF/Zarr),
    :class:`~cropscope.data.readers.stac.StacCubeSource` (STAC catalogs) and the wrappers
    :class:`~cropscope.data.readers.masks.MaskedCube` and
    :class:`~cropscope.data.readers.align.AlignedCube`. Sources must pickle cheaply (no
    open handles in their pickled state): the map job sends them to Dask workers.
    """

    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def crs(self) -> Any: ...
    @property
    def transform(self) -> Any: ...
    @property
    def times(self) -> list[np.datetime64]: ...
    @property
    def bands(self) -> list[str]: ...
    @property
    def files(self) -> list[Path]: ...

    def opened(self) -> AbstractContextManager[Any]:
        """Keep files open across reads while the block runs."""
        ...

    def read(self, window: Any = None) -> xr.DataArray:
        """``(time, band, y, x)`` float32 cube of ``window`` (all of it when None)."""
        ...


class GridShape:
    """``height`` and ``width`` of a cube from its ``shape``."""

    shape: tuple[int, int]

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]


class CubeWrapper:
    """Base of cubes that wrap another (masking, alignment, compositing): every
    :class:`CubeLike` attribute is the wrapped ``source``'s unless a subclass overrides it."""

    def __init__(self, source: CubeLike) -> None:
        self.source = source

    @property
    def shape(self) -> tuple[int, int]:
        return self.source.shape

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    @property
    def crs(self) -> Any:
        return self.source.crs

    @property
    def transform(self) -> Any:
        return self.source.transform

    @property
    def times(self) -> list[np.datetime64]:
        return list(self.source.times)

    @property
    def bands(self) -> list[str]:
        return list(self.source.bands)

    @property
    def files(self) -> list[Path]:
        return list(self.source.files)

    def opened(self) -> AbstractContextManager[Any]:
        """The source's :meth:`opened`."""
        return self.source.opened()

    def read(self, window: Any = None) -> xr.DataArray:
        raise NotImplementedError


class RenamedBandsCube(CubeWrapper):
    """``source`` with some bands under other names (``{cube name: new name}``), e.g. a
    NetCDF's ``S2-L2A-B02`` presented as the ``B02`` a model was trained on."""

    def __init__(self, source: CubeLike, names: dict[str, str]) -> None:
        absent = [b for b in names if b not in source.bands]
        if absent:
            raise DataError(f"band(s) {absent} are not in the cube; it has {source.bands}")
        super().__init__(source)
        self.names = dict(names)

    @property
    def bands(self) -> list[str]:
        return [self.names.get(b, b) for b in self.source.bands]

    def read(self, window: Any = None) -> xr.DataArray:
        cube = self.source.read(window)
        return cube.assign_coords(band=self.bands)


def resolve_window(
    window: Any, height: int, width: int, transform: Any
) -> tuple[slice, slice, Any]:
    """``(rows, cols, transform)`` of a window (rasterio ``Window``,
    ``((row_start, row_stop), (col_start, col_stop))`` or None = the whole grid)."""
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    if window is None:
        return slice(0, height), slice(0, width), transform
    if not isinstance(window, Window):
        window = Window.from_slices(*window)
    if (window.col_off < 0 or window.row_off < 0 or window.width <= 0
            or window.height <= 0 or window.col_off + window.width > width
            or window.row_off + window.height > height):  # fmt: skip
        raise DataError(f"window {window} is outside the {height}x{width} grid")
    r0, c0 = int(window.row_off), int(window.col_off)
    rows, cols = slice(r0, r0 + int(window.height)), slice(c0, c0 + int(window.width))
    if (r0, c0) != (0, 0):
        transform = window_transform(window, transform)
    return rows, cols, transform


def make_cube(
    data: np.ndarray,
    times: Sequence[np.datetime64],
    bands: Sequence[str],
    transform: Any,
    crs: Any,
    scale_factor: Sequence[float] | None = None,
) -> xr.DataArray:
    """A ``(time, band, y, x)`` float32 cube with pixel-centre coords and its grid written."""
    import xarray as xr

    height, width = data.shape[2:]
    ys, xs = pixel_centres(transform, height, width)
    cube = xr.DataArray(
        np.asarray(data, dtype=np.float32),
        dims=("time", "band", "y", "x"),
        coords={
            "time": np.array(times, dtype="datetime64[ns]"),
            "band": list(bands),
            "y": ys,
            "x": xs,
        },
        name="cube",
    )
    cube = write_grid(cube, crs, transform)
    cube.attrs["scale_factor"] = (
        [float(f) for f in scale_factor] if scale_factor is not None else [1.0] * len(bands)
    )
    return cube

_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img", ".nc")
_DATE_PATTERNS = (
    re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)"),
    re.compile(r"(?<!\d)(\d{4})_(\d{2})_(\d{2})(?!\d)"),
    re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)"),
)
_BAND_TOKEN = re.compile(
    r"^(NDVI|EVI2?|NDWI|NDMI|SAVI|NBR|LAI|BLUE|GREEN|RED|NIR|MIR|SWIR[12]?|VV|VH|"
    r"B0?[1-9]|B1[0-2]|B8A|SCL|FMASK|CLM)$",
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


def _one_line(value: Any) -> str:
    """A grid property for a one-line message (an ``Affine`` prints on three lines)."""
    from affine import Affine

    if isinstance(value, Affine):
        return "(" + ", ".join(f"{v:g}" for v in tuple(value)[:6]) + ")"
    return str(value)


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
    if np.dtype(info["dtype"]).kind == "c":
        raise DataError(f"{path} holds complex values ({info['dtype']}); a cube holds real "
                        "reflectances or indices")
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
    if info["names"][i].upper() in CATEGORICAL_BANDS:
        return 1.0, 0.0
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
    """One band's raw values as float32 with NaN for nodata, scaled: the definition,
    ``float32(float64(float32(raw)) * factor + offset)``."""
    data = raw.astype(np.float32)
    if nd is not None:
        bad = np.isnan(raw) if np.isnan(nd) else raw == nd
        data[bad] = np.nan
    if factor != 1.0 or offset != 0.0:
        data = (data.astype(np.float64) * factor + offset).astype(np.float32)
    return data


#: raw types float32 holds exactly: float64(float32(raw)) == float64(raw)
_EXACT_TYPES = ("uint8", "int8", "uint16", "int16", "float32")


def _decode_rows(raw: np.ndarray, nodata: np.ndarray | None, factor: np.ndarray,
                 offset: np.ndarray, out: np.ndarray) -> None:  # fmt: skip
    """``out[...] =`` :func:`_to_float` of each row of ``raw [g, n]`` with its own
    ``nodata``, ``factor`` and ``offset`` (``[g, 1]`` float64; ``nodata`` None: none), bit
    for bit, written into ``out [g, n]`` float32. Where the raw type is exact in float32
    the float64 product is rounded once, on its way into ``out``: one pass, no band-sized
    temporaries. Used by :meth:`CubeSource.read` and the map job's pixel reader."""
    if raw.dtype.name not in _EXACT_TYPES:  # e.g. int32 or float64: float32(raw) rounds first
        for j in range(raw.shape[0]):
            value = None if nodata is None else float(nodata[j, 0])
            out[j] = _to_float(raw[j], value, float(factor[j, 0]), float(offset[j, 0]))
        return
    if (factor == 1.0).all() and (offset == 0.0).all():
        np.copyto(out, raw, casting="unsafe")
    elif (offset == 0.0).all() and (factor > 0.0).all() and raw.dtype.kind in "iu":
        # x * f + 0.0 == x * f unless x * f is -0.0 (a float -0.0, or f <= 0)
        np.multiply(raw, factor, out=out, dtype=np.float64, casting="unsafe")
    else:
        for j in range(raw.shape[0]):  # the offset added in float64, then rounded once
            if factor[j, 0] == 1.0 and offset[j, 0] == 0.0:  # unscaled (keeps a -0.0)
                np.copyto(out[j], raw[j], casting="unsafe")
                continue
            scaled = np.multiply(raw[j], factor[j, 0], dtype=np.float64)
            np.add(scaled, offset[j, 0], out=scaled)
            np.copyto(out[j], scaled, casting="unsafe")
    if nodata is not None:
        bad = raw == nodata
        if np.isnan(nodata).any() and raw.dtype.kind == "f":
            bad |= np.isnan(nodata) & np.isnan(raw)
        np.copyto(out, np.float32(np.nan), where=bad)


class CubeSource(GridShape):
    """The files of a cube, scanned but not read: grid, dates, bands, scaling.

    :meth:`read` reads the whole cube or one window of it (rasterio windowed reads), so a
    map job can stream a scene window by window. :func:`read_cube` is
    ``CubeSource.scan(...).read()``. Use ``with source.opened():`` to keep the files open
    across many reads. Files on another grid than ``target`` are warped to it on the fly.
    """

    def __init__(
        self,
        layers: list[dict[str, Any]],
        times: list[np.datetime64],
        bands: list[str],
        plan: list[list[tuple[int, int]]],
        factors: list[list[tuple[float, float]]],
        nodata: float | None,
        grid: tuple[Any, Any, tuple[int, int]] | None = None,
        resampling: str = "bilinear",
    ) -> None:
        self._layers = layers
        self.times = times
        self.bands = bands
        #: ``plan[t][c]`` = (layer index, 0-based band index in that file)
        self._plan = plan
        self._factors = factors
        self._nodata = nodata
        self._resampling = resampling
        self._handles: dict[int, Any] | None = None
        ref = layers[0]
        crs, transform, shape = grid if grid is not None else (
            ref["crs"], ref["transform"], tuple(ref["shape"])
        )
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.crs = crs
        self.transform = transform
        for layer in layers:
            layer["warp"] = (layer["crs"], layer["transform"], tuple(layer["shape"])) != (
                crs, transform, self.shape
            )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = None  # open files stay with the process that opened them
        return state

    @classmethod
    def scan(
        cls,
        source: str | Path | Sequence[str | Path],
        *,
        dates: Sequence[Any] | None = None,
        band: str | None = None,
        scale: float | None = None,
        nodata: float | None = None,
        band_names: Sequence[str] | None = None,
        target: Any = None,
        resampling: str = "bilinear",
    ) -> CubeSource:
        """Find the files, their dates and band names and check they share one grid.

        ``band_names`` names the bands of every file (overriding descriptions and file-name
        tokens); a single file with ``len(dates) * len(band_names)`` bands holds several
        dates, date after date. ``target`` is the grid to align to: ``"first"`` (the first
        file's), a :class:`~cropscope.data.readers.grid.Grid` or anything
        :meth:`Grid.of <cropscope.data.readers.grid.Grid.of>` takes (a raster path, a
        cube, another source); files on another grid are warped with ``resampling``
        (nearest for :data:`CATEGORICAL_BANDS`).
        """
        files = _resolve(source)
        for path in files:  # a checksum list beside or above a file: verified first
            verify_listed(path)
        per_file_dates = dates
        multi_date = (
            dates is not None and band_names is not None and len(files) == 1
            and len(dates) > 1
        )  # fmt: skip
        if multi_date:
            per_file_dates = None
        if dates is None:
            parsed = [date_from_name(p.name) for p in files]
            missing = [p.name for p, d in zip(files, parsed, strict=True) if d is None]
            if missing:
                raise DataError(
                    f"no date (YYYY-MM-DD or YYYYMMDD) in the file name {missing[0]}; put "
                    "each file's date in its name (or give dates= in Python)"
                )
            file_dates = [d for d in parsed if d is not None]
        elif per_file_dates is None:
            file_dates = [np.datetime64("NaT", "D")]
        else:
            if len(per_file_dates) != len(files):
                raise DataError(f"{len(per_file_dates)} dates given for {len(files)} files")
            file_dates = _as_dates(per_file_dates)

        layers = [_inspect(p, band) for p in files]
        # (date, band name, 0-based band index) of every band of every file
        entries: list[list[tuple[np.datetime64, str, int]]] = []
        for d, layer in zip(file_dates, layers, strict=True):
            count = layer["count"]
            if band_names is None:
                entries.append([(d, name, i) for i, name in enumerate(layer["names"])])
                continue
            names = [str(b) for b in band_names]
            layer_dates = _as_dates(dates) if multi_date and dates is not None else [d]
            if count != len(names) * len(layer_dates):
                raise DataError(
                    f"{layer['path'].name} has {count} bands, not {len(layer_dates)} dates x "
                    f"{len(names)} band_names"
                )
            layer["names"] = names * len(layer_dates)
            entries.append([
                (layer_dates[i // len(names)], names[i % len(names)], i) for i in range(count)
            ])  # fmt: skip

        grid = None
        if target is not None:
            g = Grid.of(layers[0]["path"]) if isinstance(target, str) and target == "first" \
                else Grid.of(target)  # fmt: skip
            grid = (g.crs, g.transform, g.shape)
        else:
            ref = layers[0]
            for layer in layers[1:]:
                for key, what in (("shape", "shape"), ("crs", "CRS"), ("transform", "transform")):
                    if layer[key] != ref[key]:
                        raise DataError(
                            f"{layer['path'].name} has a different {what} "
                            f"{_one_line(layer[key])} than {ref['path'].name} "
                            f"{_one_line(ref[key])}; "
                            "all files must share one grid (resample them to one grid first, "
                            "or give target= in Python)"
                        )

        # group by date; bands of one date may come from several files
        by_date: dict[np.datetime64, dict[str, tuple[int, int]]] = {}
        band_order: list[str] = []
        for k, layer_entries in enumerate(entries):
            for d, name, i in layer_entries:
                slot = by_date.setdefault(d, {})
                if name in slot:
                    raise DataError(
                        f"two files give band {name!r} for {d} (e.g. {layers[k]['path'].name}); "
                        "name each file after its band and date (or give dates= or band= in "
                        "Python)"
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
        return cls(layers, times, band_order, plan, factors, nodata, grid, resampling)

    @property
    def files(self) -> list[Path]:
        """The raster files, in the order found."""
        return [layer["path"] for layer in self._layers]

    def _layer_nodata(self, k: int) -> float | None:
        nd = self._nodata if self._nodata is not None else self._layers[k]["nodata"][0]
        return None if nd is None else float(nd)

    def _open_layer(self, k: int, stack: Any) -> Any:
        """Layer ``k`` opened (warped to the source's grid when needed) in ``stack``."""
        import rasterio

        layer = self._layers[k]
        src = stack.enter_context(rasterio.open(layer["path"]))
        if not layer["warp"]:
            return src
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        categorical = any(n.upper() in CATEGORICAL_BANDS for n in layer["names"])
        method = Resampling.nearest if categorical else Resampling[self._resampling]
        nd = self._layer_nodata(k)
        options: dict[str, Any] = {
            "crs": self.crs, "transform": self.transform, "width": self.width,
            "height": self.height, "resampling": method,
        }  # fmt: skip
        if nd is None:
            options["add_alpha"] = True  # marks pixels the file does not cover
        else:
            options.update(src_nodata=nd, nodata=nd)
        return stack.enter_context(WarpedVRT(src, **options))

    @contextmanager
    def opened(self) -> Iterator[CubeSource]:
        """Keep every file open while the block runs (faster repeated window reads)."""
        import contextlib

        if self._handles is not None:
            yield self
            return
        from rasterio.errors import NotGeoreferencedWarning

        with contextlib.ExitStack() as stack:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                handles = {k: self._open_layer(k, stack) for k in range(len(self._layers))}
            self._handles = handles
            try:
                yield self
            finally:
                self._handles = None

    def _read_layers(
        self, window: Any, buffers: dict[int, np.ndarray] | None = None
    ) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
        """Raw bands of each layer in ``window`` and, for warped layers without nodata,
        where the file has no data.

        With ``buffers`` (one per layer, kept by the caller between windows) each layer is
        read into its buffer (made or re-made when the window's shape changes): the arrays
        returned are views of them, valid until the next call. A fresh array per window
        and layer costs its page faults every time, and more where freed memory goes back
        to the system at once (a Dask worker's ``MALLOC_TRIM_THRESHOLD_``).
        """
        import contextlib

        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        out: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            for k, layer in enumerate(self._layers):
                try:
                    with contextlib.ExitStack() as stack:
                        if self._handles is not None:
                            ds = self._handles[k]
                        else:
                            ds = self._open_layer(k, stack)
                        if buffers is None:
                            raw = ds.read(window=window)
                        else:
                            shape = (ds.count, int(window.height), int(window.width))
                            buf = buffers.get(k)
                            if buf is None or buf.shape != shape or buf.dtype != ds.dtypes[0]:
                                buf = buffers[k] = np.empty(shape, dtype=ds.dtypes[0])
                            raw = ds.read(window=window, out=buf)
                except RasterioIOError as exc:
                    raise DataError(f"cannot read raster {layer['path']}: {exc}") from None
                outside = None
                if layer["warp"] and self._layer_nodata(k) is None:
                    raw, outside = raw[:-1], raw[-1] == 0
                out[k] = (raw, outside)
        return out

    def read(self, window: Any = None) -> xr.DataArray:
        """The cube, or the part inside ``window`` (a rasterio ``Window`` or
        ``((row_start, row_stop), (col_start, col_stop))``), as ``(time, band, y, x)``."""
        from rasterio.windows import Window

        rows, cols, transform = resolve_window(window, self.height, self.width, self.transform)
        height, width = rows.stop - rows.start, cols.stop - cols.start
        raw = self._read_layers(Window.from_slices(rows, cols))
        data = np.empty((len(self.times), len(self.bands), height, width), dtype=np.float32)
        for t, row in enumerate(self._plan):
            for c, (k, i) in enumerate(row):
                nd = self._nodata if self._nodata is not None else self._layers[k]["nodata"][i]
                values, outside = raw[k]
                factor, offset = self._factors[t][c]
                _decode_rows(values[i].reshape(1, -1),
                             None if nd is None else np.array([[float(nd)]]),
                             np.array([[factor]]), np.array([[offset]]),
                             data[t, c].reshape(1, -1))  # fmt: skip
                if outside is not None:
                    data[t, c][outside] = np.nan
        return make_cube(
            data, self.times, self.bands, transform, self.crs,
            [f for f, _ in self._factors[0]],
        )  # fmt: skip


def _as_dates(dates: Sequence[Any]) -> list[np.datetime64]:
    try:
        return [np.datetime64(d, "D") for d in dates]
    except (ValueError, TypeError) as exc:
        raise DataError(f"cannot interpret the given dates: {exc}") from None


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
            parts = [int(hexa[i : i + 2], 16) for i in range(0, len(hexa), 2)]
        else:
            parts = [int(c) for c in colour]
        if len(parts) == 3:
            parts.append(255)
        if len(parts) != 4:
            raise DataError(f"colour {colour!r} for value {value} needs 3 or 4 components")
        r, g, b, a = parts
        out[int(value)] = (r, g, b, a)
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
