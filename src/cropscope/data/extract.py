"""Training samples from an image cube and field labels (points or polygons).

A field survey gives points or parcels with a class label; a cube (any source
:func:`~cropscope.data.readers.open.open_cube_source` opens, or any
:class:`~cropscope.data.readers.cube.CubeLike`) gives ``(time, band, y, x)`` float32 values
with NaN for nodata and masked observations. :func:`extract_samples` turns both into the
canonical :class:`~cropscope.data.timeseries.TimeSeriesSet` ``values [N, T, C]``, written
as a long table by :func:`~cropscope.data.readers.table.write_table` (read back by
``read_table`` and ``cropscope train/evaluate --table``).

Labels (:func:`read_labels`): GeoPackage, GeoParquet, Shapefile, GeoJSON, FlatGeobuf
(geopandas/pyogrio) or CSV with ``lon``/``lat`` (``longitude``/``latitude``; EPSG:4326) or
``x``/``y`` columns (CRS from ``labels_crs``). A file without a CRS is refused unless
``labels_crs`` names it (a layer in metres read as degrees would land anywhere). Labels are
reprojected to the cube's CRS.

Modes (one sample = one series ``[T, C]``):

- ``pixels`` (polygons; default): every pixel whose centre lies inside the polygon
  (``all_touched``: every pixel it touches). ``buffer`` metres shrink each polygon first
  (mixed edge pixels left out; a polygon that vanishes is dropped and counted);
  ``max_pixels`` keeps a random sample of that many pixels per polygon (``seed``). A
  polygon holding no pixel centre takes the pixel of its centroid (``from_centroid``).
  Sample id ``<polygon id>_<row>_<col>``.
- ``mean`` / ``median`` (polygons): one sample per polygon, the statistic over its pixels
  with a finite value, per date and band
  (:func:`~cropscope.data.polygons.parcel_series`).
- ``nearest`` (points; default for points; a polygon uses a point on its surface): the
  pixel containing the point, i.e. the nearest pixel centre.

Every sample carries the feature's id as a group column (``polygon_id`` or ``point_id``:
pixels of one polygon must stay in one cross-validation fold, ``--group polygon_id``),
``row``/``col`` and ``x``/``y`` (cube CRS) and ``longitude``/``latitude`` of the pixel
centre it was read from (mean/median: a point inside the polygon). Masked observations
are gaps (NaN, ``valid`` False). Dates are days: observations of one day (two passes, two
tiles) are averaged over their finite values (:class:`DailyCube`; wrap the cube in it to map
it with a model trained on the samples). Series without any valid observation are dropped
unless ``keep_empty``.

Outside the cube: a polygon that does not overlap the cube's footprint (a point outside
it) is refused, naming how many, unless ``skip_outside`` (then counted and left out). When
none overlaps, the error shows both extents: the usual cause is a wrong CRS.

Reading: the grid is covered by ``window_size`` tiles
(:func:`~cropscope.data.windows.plan_windows`); the pixels to read are planned first
(rasterising only, :class:`~cropscope.data.polygons.Membership`), then only the tiles
holding a selected pixel are read, one at a time, with a progress bar. Memory: the output
``N x T x C`` float32 plus one tile ``T x C x window_size^2``.

Patches for segmentation (:func:`extract_label_patches`): the grid is cut into
``patch_size`` tiles; every tile holding a labelled pixel becomes one ``.h5`` sample
(:func:`~cropscope.data.readers.h5patches.write_h5_patches`: ``<source> (T, C, P, P)``
float32 and ``label (P, P)`` int64 class codes, -1 = unlabelled, a pixel claimed by polygons
of different classes, or padding beyond the cube's edge), plus ``patches.json`` (classes,
bands, dates, CRS, transform) and ``patches.csv`` (one row per patch: name, row, col,
labelled pixels, polygon ids). The folder is written beside its target and renamed into
place at the end: complete or absent.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.data.polygons import (
    POLYGON_KINDS,
    VECTOR_SUFFIXES,
    Membership,
    check_features,
    parcel_series,
    read_vector,
    require_geopandas,
)
from cropscope.data.readers.cube import CubeWrapper
from cropscope.data.windows import plan_windows
from cropscope.errors import DataError

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd
    import xarray as xr

    from cropscope.data.readers.cube import CubeLike
    from cropscope.data.timeseries import TimeSeriesSet

__all__ = [
    "MODES",
    "SAMPLE_SUFFIXES",
    "DailyCube",
    "Extraction",
    "PatchExtraction",
    "check_samples_path",
    "daily",
    "extract_label_patches",
    "extract_samples",
    "open_source",
    "read_labels",
    "write_samples",
]

_LOG = logging.getLogger("cropscope")

#: extraction modes
MODES = ("pixels", "mean", "median", "nearest")
#: table formats the samples can be written as (:func:`~cropscope.data.readers.table.write_table`)
SAMPLE_SUFFIXES = (".parquet", ".csv", ".csv.gz", ".tsv")
_POINTS = frozenset({"Point"})
_CSV = (".csv", ".csv.gz", ".tsv")
_XY_NAMES = (("lon", "lat"), ("longitude", "latitude"), ("x", "y"))
#: output columns a feature id column must not be named like
_RESERVED = frozenset({"sample_id", "date", "label", "valid", "polygon_id", "point_id", "row",
                       "col", "x", "y", "longitude", "latitude", "from_centroid",
                       "pixel_count", "polygon_pixels", "geometry"})


# ---------------------------------------------------------------------------- labels
def _read_csv_points(path: Path, labels_crs: Any) -> gpd.GeoDataFrame:
    """Points from a CSV's lon/lat (EPSG:4326 unless ``labels_crs``) or x/y columns."""
    import pandas as pd

    gpd = require_geopandas()
    sep = "\t" if path.name.lower().endswith(".tsv") else ","
    try:
        df = pd.read_csv(path, sep=sep)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read labels from {path.name}: {first}") from None
    lower = {str(c).lower(): c for c in df.columns}
    pair = next(((lower[a], lower[b]) for a, b in _XY_NAMES if a in lower and b in lower), None)
    if pair is None:
        raise DataError(f"{path.name} has no coordinate columns (lon/lat, longitude/latitude "
                        f"or x/y); its columns are {[str(c) for c in df.columns]}")
    xcol, ycol = pair
    geographic = str(xcol).lower() != "x"
    if not geographic and labels_crs is None:
        raise DataError(f"{path.name} gives x/y coordinates without a CRS; pass --labels-crs "
                        "(e.g. EPSG:32633)")
    xs = pd.to_numeric(df[xcol], errors="coerce").to_numpy(np.float64)
    ys = pd.to_numeric(df[ycol], errors="coerce").to_numpy(np.float64)
    bad = ~(np.isfinite(xs) & np.isfinite(ys))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path.name}: {int(bad.sum())} row(s) without numeric coordinates in "
                        f"{xcol!r}/{ycol!r} (row {row})")
    crs = labels_crs if labels_crs is not None else "EPSG:4326"
    if geographic and labels_crs is None and (np.abs(ys).max() > 90 or np.abs(xs).max() > 360):
        raise DataError(f"{path.name}: {xcol!r}/{ycol!r} hold values beyond longitude/latitude "
                        "ranges; projected coordinates need columns x/y and --labels-crs")
    frame = df.drop(columns=[xcol, ycol])
    return gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(xs, ys), crs=crs)


def _set_crs(gdf: gpd.GeoDataFrame, labels_crs: Any, name: str) -> gpd.GeoDataFrame:
    """The labels with their CRS: the file's, or ``labels_crs`` for a file without one."""
    if labels_crs is None:
        if gdf.crs is None:
            raise DataError(f"{name} has no CRS information; pass --labels-crs (e.g. "
                            "EPSG:4326 or EPSG:32633) to say which coordinates it holds")
        return gdf
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        given = CRS.from_user_input(labels_crs)
    except CRSError as exc:
        raise DataError(f"--labels-crs {labels_crs!r} is not a CRS: {exc}") from None
    if gdf.crs is None:
        return gdf.set_crs(given)
    if not CRS.from_user_input(gdf.crs).equals(given, ignore_axis_order=True):
        raise DataError(f"{name} declares {gdf.crs.to_string()} but --labels-crs says "
                        f"{given.to_string()}; drop --labels-crs or fix the file")
    return gdf


def read_labels(
    labels: str | Path | gpd.GeoDataFrame,
    *,
    label_column: str,
    id_column: str | None = None,
    labels_crs: Any = None,
    layer: str | None = None,
) -> gpd.GeoDataFrame:
    """Labelled points or polygons, checked (see the module docstring).

    Returns a GeoDataFrame with a CRS, only Points or only (Multi)Polygons, unique ids in
    ``attrs["id_column"]`` (a ``polygon_id``/``point_id`` column 0..n-1 when
    ``id_column`` is None and absent) and ``attrs["kind"]`` = ``"points"`` or
    ``"polygons"``. Labels stay as read (missing ones are dropped later, and counted).
    """
    gpd = require_geopandas()
    if isinstance(labels, gpd.GeoDataFrame):
        gdf, name = labels, "the labels"
    else:
        path = Path(labels).expanduser()
        name = path.name
        lowered = name.lower()
        if any(lowered.endswith(s) for s in _CSV):
            if not path.is_file():
                raise DataError(f"label file not found: {path}")
            gdf = _read_csv_points(path, labels_crs)
        elif path.suffix.lower() in VECTOR_SUFFIXES:
            gdf = read_vector(path, layer=layer, what="label")
        else:
            raise DataError(f"unsupported label file {path.name}: use .gpkg, .parquet, .shp, "
                            ".geojson, .fgb or a .csv with lon/lat columns")
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry.name not in gdf.columns:
        raise DataError(f"{name} has no geometry column")
    if len(gdf) == 0:
        raise DataError(f"{name} holds no labels")
    types = set(gdf.geometry.dropna().geom_type)
    kind = "points" if types and types <= _POINTS else "polygons"
    gdf, id_column = check_features(
        gdf, id_column, name, kinds=_POINTS if kind == "points" else POLYGON_KINDS,
        what="point" if kind == "points" else "polygon",
        default_id="point_id" if kind == "points" else "polygon_id",
        reserved=_RESERVED - {"point_id" if kind == "points" else "polygon_id"},
    )  # fmt: skip
    if label_column not in gdf.columns or label_column == gdf.geometry.name:
        raise DataError(f"{name} has no label column {label_column!r}; its columns are "
                        f"{[str(c) for c in gdf.columns if c != gdf.geometry.name]}")
    gdf = _set_crs(gdf, labels_crs, name)
    gdf.attrs.update(id_column=id_column, kind=kind, label_column=label_column, name=name)
    return gdf


def _label_names(values: pd.Series) -> np.ndarray:
    """Label names as strings (whole numbers without ``.0``); None where missing/empty."""
    from pandas.api import types as ptypes

    arr = values.to_numpy(dtype=object)
    if ptypes.is_numeric_dtype(values) and not ptypes.is_bool_dtype(values):
        numbers = values.to_numpy(np.float64, na_value=np.nan)
        whole = np.isfinite(numbers) & (numbers == np.round(numbers))
        arr = np.array([str(int(v)) if w else (None if not np.isfinite(v) else str(v))
                        for v, w in zip(numbers, whole, strict=True)], dtype=object)
    out = np.empty(len(arr), dtype=object)
    for i, v in enumerate(arr):
        missing = v is None or (isinstance(v, float) and v != v) or str(v).strip() == ""
        out[i] = None if missing else str(v).strip()
    return out


# ---------------------------------------------------------------------------- cube
def open_source(cube: CubeLike | str | Path | Sequence[str | Path], **options: Any) -> CubeLike:
    """``cube`` when it is already a window-readable source, else
    :func:`~cropscope.data.readers.open.open_cube_source` ``(cube, **options)``."""
    from cropscope.data.readers.cube import CubeLike

    if isinstance(cube, CubeLike):
        if options:
            raise DataError(f"cube options {sorted(options)} apply to a path, not to an "
                            "opened cube source")
        return cube
    from cropscope.data.readers.open import open_cube_source

    return open_cube_source(cube, **options)


def _day_groups(times: Sequence[np.datetime64]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct days of ``times`` and, for each time, the index of its day."""
    days = np.asarray(times).astype("datetime64[D]")
    uniq, inverse = np.unique(days, return_inverse=True)
    return uniq, inverse


def _merge_days(values: np.ndarray, inverse: np.ndarray, n_days: int, axis: int) -> np.ndarray:
    """Average the time steps of one day along ``axis`` (finite values only; NaN when a
    day has none). A no-op copy-free return when every day has one step."""
    if n_days == values.shape[axis]:
        return values
    moved = np.moveaxis(values, axis, 0)
    finite = np.isfinite(moved)
    sums = np.zeros((n_days, *moved.shape[1:]), dtype=np.float64)
    counts = np.zeros((n_days, *moved.shape[1:]), dtype=np.int64)
    np.add.at(sums, inverse, np.where(finite, moved, 0.0))
    np.add.at(counts, inverse, finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        merged = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return np.moveaxis(merged.astype(np.float32), 0, axis)


class DailyCube(CubeWrapper):
    """``source`` with the observations of one day averaged into one date (finite values
    only): two passes or two tiles of one day become one time step, as in the extracted
    samples, so a model trained on them maps this cube on the same time axis."""

    def __init__(self, source: CubeLike) -> None:
        super().__init__(source)
        self._days, self._inverse = _day_groups(source.times)

    @property
    def times(self) -> list[np.datetime64]:
        return list(self._days)

    def read(self, window: Any = None) -> xr.DataArray:
        """The source's window, same-day dates averaged, as ``(time, band, y, x)``."""
        from cropscope.data.readers.cube import make_cube

        cube = self.source.read(window)
        data = _merge_days(np.asarray(cube.values, dtype=np.float32), self._inverse,
                           len(self._days), axis=0)
        return make_cube(data, self.times, self.bands, cube.rio.transform(), self.crs,
                         cube.attrs.get("scale_factor"))


def daily(source: CubeLike) -> CubeLike:
    """``source`` itself when every date is on its own day, else :class:`DailyCube`."""
    days, _ = _day_groups(source.times)
    return source if len(days) == len(source.times) else DailyCube(source)


def _lonlat(crs: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude/latitude (EPSG:4326) of cube coordinates; NaN without a cube CRS."""
    if crs is None or len(x) == 0:
        return np.full(len(x), np.nan), np.full(len(y), np.nan)
    from pyproj import CRS, Transformer

    tr = Transformer.from_crs(CRS.from_user_input(crs), CRS.from_epsg(4326), always_xy=True)
    lon, lat = tr.transform(np.asarray(x, np.float64), np.asarray(y, np.float64))
    return np.asarray(lon), np.asarray(lat)


def _footprint(source: CubeLike) -> Any:
    import shapely
    from rasterio.transform import array_bounds

    west, south, east, north = array_bounds(source.height, source.width, source.transform)
    return shapely.box(west, south, east, north)


def _in_cube_crs(gdf: gpd.GeoDataFrame, source: CubeLike) -> np.ndarray:
    if source.crs is None:
        raise DataError("the cube has no CRS, so labels cannot be placed on it; give the "
                        "cube a CRS (e.g. GeoTIFFs with georeferencing)")
    try:
        return gdf.geometry.to_crs(source.crs).to_numpy()
    except Exception as exc:  # pyproj cannot transform
        raise DataError(f"cannot reproject the labels to the cube's CRS: {exc}") from None


def _describe_extent(bounds: Sequence[float]) -> str:
    return f"x {bounds[0]:.10g}..{bounds[2]:.10g}, y {bounds[1]:.10g}..{bounds[3]:.10g}"


def _check_outside(geoms: np.ndarray, kind: str, source: CubeLike, ids: np.ndarray,
                   skip_outside: bool, messages: list[str]) -> np.ndarray:
    """True for the features on the cube; an error (or a message) for the others."""
    import shapely

    box = _footprint(source)
    if kind == "points":  # a pixel holds its west and north edges
        x, y = shapely.get_x(geoms), shapely.get_y(geoms)
        west, south, east, north = shapely.bounds(box)
        inside = (x >= west) & (x < east) & (y > south) & (y <= north)
    else:
        inside = shapely.intersects(geoms, box) & ~shapely.touches(geoms, box)
    n_out = int((~inside).sum())
    what = "point" if kind == "points" else "polygon"
    if n_out == len(geoms):
        crs = source.crs.to_string() if source.crs is not None else "no CRS"
        raise DataError(
            f"none of the {len(geoms)} {what}s lie on the cube: in the cube's CRS ({crs}) they "
            f"span {_describe_extent(shapely.total_bounds(geoms))}, the cube covers "
            f"{_describe_extent(shapely.bounds(box))}; is the labels' CRS right?")
    if n_out:
        example = ", ".join(repr(v) for v in ids[~inside][:3].tolist())
        text = f"{n_out} of {len(geoms)} {what}s lie outside the cube (e.g. ids {example})"
        if not skip_outside:
            raise DataError(f"{text}; pass --skip-outside to leave them out")
        messages.append(f"{text}: left out")
    return np.asarray(inside)


def _inward(geoms: np.ndarray, crs: Any, metres: float) -> np.ndarray:
    """The polygons shrunk by ``metres`` (in a local UTM zone when the cube's CRS is not
    in metres, feet are converted)."""
    if metres == 0:
        return geoms
    import shapely
    from pyproj import CRS

    pcrs = CRS.from_user_input(crs) if crs is not None else None
    if pcrs is None or pcrs.is_projected:
        factor = 1.0
        if pcrs is not None and pcrs.axis_info:
            factor = float(pcrs.axis_info[0].unit_conversion_factor or 1.0)
        return np.asarray(shapely.buffer(geoms, -metres / factor))
    gpd = require_geopandas()
    series = gpd.GeoSeries(geoms, crs=pcrs)
    utm = series.estimate_utm_crs()
    return np.asarray(series.to_crs(utm).buffer(-metres).to_crs(pcrs).to_numpy())


# ---------------------------------------------------------------------------- result
@dataclass
class Extraction:
    """What :func:`extract_samples` produced and left out."""

    samples: TimeSeriesSet
    mode: str
    kind: str
    n_features: int
    #: features that gave at least one sample
    n_used: int
    n_outside: int = 0
    n_unlabelled: int = 0
    #: polygons that vanished under the inward buffer
    n_vanished: int = 0
    #: polygons whose pixels were capped at ``max_pixels``
    n_capped: int = 0
    #: series dropped because they had no valid observation
    n_empty: int = 0
    #: windows read from the cube
    n_windows: int = 0
    messages: list[str] = field(default_factory=list)

    @property
    def group_column(self) -> str:
        """The meta column naming each sample's feature (for grouped folds)."""
        return "point_id" if self.kind == "points" else "polygon_id"


# ---------------------------------------------------------------------------- plans
@dataclass
class _Plan:
    """Pixels to read: feature index, grid row and column, centroid flag."""

    feature: np.ndarray
    row: np.ndarray
    col: np.ndarray
    from_centroid: np.ndarray


def _pixel_plan(geoms: np.ndarray, source: CubeLike, window_size: int,
                all_touched: bool) -> _Plan:
    """Every (polygon, pixel) membership, by rasterising only (nothing is read)."""
    members = Membership(geoms, source.transform, source.shape, window_size, all_touched)
    feats, rows, cols, flags = [], [], [], []
    for window, p, q, centroid in members.stream(False, "labels"):
        if not p.size:
            continue
        feats.append(p)
        rows.append(window.row + q // window.width)
        cols.append(window.col + q % window.width)
        flags.append(np.full(p.size, centroid))
    if not feats:
        empty = np.empty(0, dtype=np.int64)
        return _Plan(empty, empty, empty, np.empty(0, dtype=bool))
    feature, row, col = (np.concatenate(a).astype(np.int64) for a in (feats, rows, cols))
    order = np.lexsort((col, row, feature))
    return _Plan(feature[order], row[order], col[order], np.concatenate(flags)[order])


def _cap(plan: _Plan, max_pixels: int, seed: int) -> tuple[_Plan, int]:
    """At most ``max_pixels`` pixels per polygon, a seeded random choice (kept in
    row-major order), and how many polygons were capped."""
    _uniq, starts, counts = np.unique(plan.feature, return_index=True, return_counts=True)
    over = counts > max_pixels
    if not over.any():
        return plan, 0
    rng = np.random.default_rng(seed)
    keep = np.ones(plan.feature.size, dtype=bool)
    for s, n in zip(starts[over].tolist(), counts[over].tolist(), strict=True):
        chosen = rng.choice(n, size=max_pixels, replace=False)
        mask = np.zeros(n, dtype=bool)
        mask[chosen] = True
        keep[s:s + n] = mask
    return _Plan(plan.feature[keep], plan.row[keep], plan.col[keep],
                 plan.from_centroid[keep]), int(over.sum())


def _read_pixels(source: CubeLike, rows: np.ndarray, cols: np.ndarray, window_size: int,
                 progress: bool) -> tuple[np.ndarray, int]:
    """``[M, T, C]`` float32 values of the pixels ``(rows, cols)``, reading only the
    ``window_size`` tiles that hold one, and the number of tiles read."""
    from tqdm.auto import tqdm

    from cropscope.settings import check_memory

    t, c = len(source.times), len(source.bands)
    check_memory(rows.size * t * c * 4.0,
                 f"the samples ({rows.size} series x {t} dates x {c} bands)")
    out = np.full((rows.size, t, c), np.nan, dtype=np.float32)
    if rows.size == 0:
        return out, 0
    windows = plan_windows(source.height, source.width, tile=window_size)
    n_wcols = -(-source.width // window_size)
    tile = (rows // window_size) * n_wcols + cols // window_size
    order = np.argsort(tile, kind="stable")
    uniq, starts = np.unique(tile[order], return_index=True)
    ends = np.append(starts[1:], order.size)
    with source.opened():
        for w, s, e in tqdm(list(zip(uniq.tolist(), starts.tolist(), ends.tolist(),
                                     strict=True)),
                            desc="extracting", unit="window", disable=not progress,
                            file=sys.stderr):  # fmt: skip
            window = windows[w]
            idx = order[s:e]
            cube = np.asarray(source.read(window.write_window).values)  # [T, C, h, w]
            if cube.shape[:2] != (t, c):
                raise DataError(f"the cube gave a window of shape {cube.shape}, expected "
                                f"{t} dates x {c} bands")
            picked = cube[:, :, rows[idx] - window.row, cols[idx] - window.col]  # [T, C, m]
            out[idx] = np.moveaxis(picked, 2, 0)
            del cube, picked
            _free_windows()
    return out, int(uniq.size)


def _free_windows() -> None:
    """Free the window reads: a read cube is an xarray object in a reference cycle (its
    cached ``.rio`` accessor) that only the cyclic collector frees, and without it the
    windows read pile up (measured: 555 MiB instead of 171 MiB of traced allocations over
    four 512 x 512 x 48 float32 windows). The objects are young: a generation-1 pass frees
    them in about a millisecond (a full collection took 0.2 s)."""
    gc.collect(1)


def _centres(source: CubeLike, rows: np.ndarray, cols: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    tr = source.transform
    cx, cy = cols + 0.5, rows + 0.5
    return tr.a * cx + tr.b * cy + tr.c, tr.d * cx + tr.e * cy + tr.f


# ---------------------------------------------------------------------------- extraction
def extract_samples(
    cube: CubeLike | str | Path | Sequence[str | Path],
    labels: str | Path | gpd.GeoDataFrame,
    *,
    label_column: str,
    mode: str | None = None,
    buffer: float = 0.0,
    max_pixels: int | None = None,
    seed: int = 0,
    id_column: str | None = None,
    labels_crs: Any = None,
    layer: str | None = None,
    skip_outside: bool = False,
    all_touched: bool = False,
    keep_empty: bool = False,
    window_size: int = 512,
    progress: bool = True,
    **cube_options: Any,
) -> Extraction:
    """Extract labelled time series from ``cube`` at ``labels`` (see the module docstring).

    ``cube``: a path/glob/list :func:`~cropscope.data.readers.open.open_cube_source` opens
    (``cube_options`` go to it: ``mask_band``, ``invalid``, ``variables``, ``bands``,
    ``nodata``, ``scale``, ...) or an opened source. ``mode``: ``pixels`` (default for
    polygons), ``mean``, ``median`` or ``nearest`` (default for points). ``buffer``: inward
    buffer in metres (polygons). ``max_pixels``: cap per polygon (``pixels`` mode).
    """
    import pandas as pd

    from cropscope.data.timeseries import TimeSeriesSet

    if mode is not None and mode not in MODES:
        raise DataError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not np.isfinite(buffer) or buffer < 0:
        raise DataError(f"buffer must be a distance >= 0 metres, got {buffer}")
    if max_pixels is not None and max_pixels < 1:
        raise DataError(f"max_pixels must be >= 1, got {max_pixels}")
    if window_size < 1:
        raise DataError(f"window_size must be >= 1 pixel, got {window_size}")
    gdf = read_labels(labels, label_column=label_column, id_column=id_column,
                      labels_crs=labels_crs, layer=layer)
    kind = str(gdf.attrs["kind"])
    mode = mode or ("nearest" if kind == "points" else "pixels")
    if kind == "points" and mode != "nearest":
        raise DataError(f"points have no area: mode {mode!r} needs polygons; use nearest")
    if buffer and mode == "nearest":
        raise DataError("buffer shrinks polygons: it does not apply to nearest mode")
    if max_pixels is not None and mode != "pixels":
        raise DataError(f"max_pixels caps the pixels of a polygon in pixels mode, not {mode}")
    source = open_source(cube, **cube_options)
    messages: list[str] = []
    id_col = str(gdf.attrs["id_column"])
    group_col = "point_id" if kind == "points" else "polygon_id"
    n_features = len(gdf)

    names = _label_names(gdf[label_column])
    labelled = np.array([v is not None for v in names])
    n_unlabelled = int((~labelled).sum())
    if n_unlabelled:
        messages.append(f"{n_unlabelled} feature(s) without a label in {label_column!r}: "
                        "left out")
    if not labelled.any():
        raise DataError(f"no feature has a label in {label_column!r}")
    geoms_all = _in_cube_crs(gdf, source)
    ids_all = gdf[id_col].to_numpy()
    inside = _check_outside(geoms_all[labelled], kind, source, ids_all[labelled], skip_outside,
                            messages)
    keep = np.flatnonzero(labelled)[inside]
    n_outside = int((~inside).sum())
    geoms, ids, label_names = geoms_all[keep], ids_all[keep], names[keep]

    counts: dict[str, int] = {"n_outside": n_outside, "n_unlabelled": n_unlabelled}
    if mode != "nearest" and buffer:
        import shapely

        shrunk = _inward(geoms, source.crs, buffer)
        alive = ~(shapely.is_empty(shrunk) | shapely.is_missing(shrunk))
        counts["n_vanished"] = int((~alive).sum())
        if counts["n_vanished"]:
            messages.append(f"{counts['n_vanished']} polygon(s) vanished under the "
                            f"{buffer:g} m inward buffer: left out")
        if not alive.any():
            raise DataError(f"every polygon vanished under the {buffer:g} m inward buffer")
        geoms, ids, label_names = shrunk[alive], ids[alive], label_names[alive]

    merged = daily(source)
    if merged is not source:
        messages.append(f"{len(source.times) - len(merged.times)} date(s) share a day with "
                        "another: their observations are averaged")
        source = merged
    days = np.array(source.times, dtype="datetime64[D]")
    meta: dict[str, Any]
    if mode in ("mean", "median"):
        gpd = require_geopandas()
        frame = gpd.GeoDataFrame({"polygon_id": np.arange(len(geoms))}, geometry=geoms,
                                 crs=source.crs)
        series = parcel_series(frame, source, window_size=window_size, stat=mode,
                               all_touched=all_touched, progress=progress,
                               id_column="polygon_id")
        values = series.values
        assert series.meta is not None  # set by TimeSeriesSet
        import shapely

        points = shapely.point_on_surface(geoms)
        x, y = shapely.get_x(points), shapely.get_y(points)
        inv = ~source.transform
        cols = np.floor(inv.a * x + inv.b * y + inv.c).astype(np.int64)
        rows = np.floor(inv.d * x + inv.e * y + inv.f).astype(np.int64)
        sample_ids: np.ndarray = ids
        meta = {group_col: ids, "row": rows, "col": cols, "x": x, "y": y,
                "pixel_count": series.meta["pixel_count"].to_numpy(),
                "from_centroid": series.meta["from_centroid"].to_numpy()}
        feature = np.arange(len(geoms))
    else:
        if mode == "nearest":
            import shapely

            points = geoms if kind == "points" else shapely.point_on_surface(geoms)
            x, y = shapely.get_x(points), shapely.get_y(points)
            inv = ~source.transform
            cols = np.floor(inv.a * x + inv.b * y + inv.c).astype(np.int64)
            rows = np.floor(inv.d * x + inv.e * y + inv.f).astype(np.int64)
            on = (rows >= 0) & (rows < source.height) & (cols >= 0) & (cols < source.width)
            if not on.all():
                messages.append(f"{int((~on).sum())} polygon(s) have their inner point off "
                                "the cube: left out")
            feature = np.flatnonzero(on)
            plan = _Plan(feature, rows[on], cols[on], np.zeros(feature.size, dtype=bool))
        else:
            plan = _pixel_plan(geoms, source, window_size, all_touched)
            polygon_pixels = np.bincount(plan.feature, minlength=len(geoms))
            if max_pixels is not None:
                plan, counts["n_capped"] = _cap(plan, max_pixels, seed)
                if counts["n_capped"]:
                    messages.append(f"{counts['n_capped']} polygon(s) had more than "
                                    f"{max_pixels} pixels: {max_pixels} drawn at random "
                                    f"(seed {seed})")
        raw, counts["n_windows"] = _read_pixels(source, plan.row, plan.col, window_size,
                                                progress)
        values = raw
        feature = plan.feature
        x, y = _centres(source, plan.row, plan.col)
        fids = ids[feature]
        if mode == "pixels":
            sample_ids = np.array([f"{f}_{r}_{c}" for f, r, c in
                                   zip(fids.tolist(), plan.row.tolist(), plan.col.tolist(),
                                       strict=True)], dtype=object)  # fmt: skip
        else:
            sample_ids = fids
        meta = {group_col: fids, "row": plan.row, "col": plan.col, "x": x, "y": y,
                "from_centroid": plan.from_centroid}
        if mode == "pixels":  # the polygon's pixels before any cap
            meta["polygon_pixels"] = polygon_pixels[plan.feature]
    lon, lat = _lonlat(source.crs, np.asarray(meta["x"]), np.asarray(meta["y"]))
    meta["longitude"], meta["latitude"] = lon, lat
    meta_frame = pd.DataFrame(meta)

    valid_any = np.isfinite(values).all(axis=2).any(axis=1)
    if not keep_empty and not valid_any.all():
        counts["n_empty"] = int((~valid_any).sum())
        messages.append(f"{counts['n_empty']} series without any valid observation (masked or "
                        "nodata on every date): left out")
        sel = np.flatnonzero(valid_any)
        values, feature, sample_ids = values[sel], feature[sel], sample_ids[sel]
        meta_frame = meta_frame.iloc[sel].reset_index(drop=True)
    if values.shape[0] == 0:
        raise DataError("the labels gave no sample with a valid observation")
    samples = TimeSeriesSet.from_labels(
        values, list(source.bands), list(label_names[feature]), dates=days, ids=sample_ids,
        meta=meta_frame)
    for message in messages:
        _LOG.info(message)
    return Extraction(samples=samples, mode=mode, kind=kind, n_features=n_features,
                      n_used=int(np.unique(feature).size), messages=messages, **counts)


def write_samples(samples: TimeSeriesSet, path: str | Path) -> Path:
    """Write the samples as a long table (Parquet keeps bands, classes and meta columns),
    atomically: :func:`~cropscope.data.readers.table.write_table`."""
    from cropscope.data.readers.table import write_table

    return write_table(samples, path)


def check_samples_path(path: str | Path) -> Path:
    """``path`` if it names a table format :func:`write_samples` writes, else an error
    (checked before any work is done)."""
    path = Path(path)
    if not any(path.name.lower().endswith(s) for s in SAMPLE_SUFFIXES):
        raise DataError(f"--out {path.name}: write samples as "
                        f"{', '.join(SAMPLE_SUFFIXES)} (or pass --patch-size for patches)")
    if path.is_dir():
        raise DataError(f"--out {path} is a folder; name a file")
    return path


# ---------------------------------------------------------------------------- patches
@dataclass
class PatchExtraction:
    """What :func:`extract_label_patches` wrote."""

    folder: Path
    n_patches: int
    classes: list[str]
    #: labelled pixels over all patches
    n_labelled: int
    n_features: int
    n_outside: int = 0
    n_unlabelled: int = 0
    messages: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _atomic_folder(target: Path) -> Iterator[Path]:
    """A new folder beside ``target``, renamed onto it only when the block succeeds."""
    from cropscope.io import public_mode

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        public_mode(tmp)
        os.replace(tmp, target)  # onto an absent or empty folder
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def extract_label_patches(
    cube: CubeLike | str | Path | Sequence[str | Path],
    labels: str | Path | gpd.GeoDataFrame,
    out: str | Path,
    *,
    label_column: str,
    patch_size: int,
    id_column: str | None = None,
    labels_crs: Any = None,
    layer: str | None = None,
    skip_outside: bool = False,
    all_touched: bool = False,
    source_name: str = "S2",
    progress: bool = True,
    **cube_options: Any,
) -> PatchExtraction:
    """Rasterise labelled polygons on the cube's grid and write every ``patch_size`` tile
    holding a labelled pixel as one ``.h5`` sample in ``out`` (see the module docstring)."""
    import pandas as pd
    from tqdm.auto import tqdm

    from cropscope.data.readers.h5patches import write_h5_patches
    from cropscope.data.timeseries import TimeSeriesSet

    if patch_size < 1:
        raise DataError(f"patch_size must be >= 1 pixel, got {patch_size}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"--out {out} exists and is not an empty folder; patches go into a "
                        "new folder")
    gdf = read_labels(labels, label_column=label_column, id_column=id_column,
                      labels_crs=labels_crs, layer=layer)
    if gdf.attrs["kind"] != "polygons":
        raise DataError("patches are rasterised from polygons; the labels hold points")
    source = open_source(cube, **cube_options)
    messages: list[str] = []
    names = _label_names(gdf[label_column])
    labelled = np.array([v is not None for v in names])
    if not labelled.any():
        raise DataError(f"no feature has a label in {label_column!r}")
    if (~labelled).any():
        messages.append(f"{int((~labelled).sum())} polygon(s) without a label: left out")
    geoms_all = _in_cube_crs(gdf, source)
    ids_all = gdf[str(gdf.attrs["id_column"])].to_numpy()
    inside = _check_outside(geoms_all[labelled], "polygons", source, ids_all[labelled],
                            skip_outside, messages)
    keep = np.flatnonzero(labelled)[inside]
    geoms, ids = geoms_all[keep], ids_all[keep]
    codes, classes = TimeSeriesSet.encode_labels(list(names[keep]))
    source = daily(source)
    days = np.array(source.times, dtype="datetime64[D]")
    members = Membership(geoms, source.transform, source.shape, patch_size, all_touched)
    rows_index: list[dict[str, Any]] = []
    size = patch_size

    def samples() -> Iterator[tuple[str, dict[str, np.ndarray], np.ndarray]]:
        todo = [w for w in members.windows if members.candidates[w.index].size]
        with source.opened():
            for window in tqdm(todo, desc="patches", unit="patch", disable=not progress,
                               file=sys.stderr):  # fmt: skip
                p, q = members.members(window)
                if not p.size:
                    continue
                flat = np.full(window.height * window.width, -1, dtype=np.int64)
                order = np.argsort(q, kind="stable")
                qs, cs = q[order], codes[p[order]]
                uq, starts = np.unique(qs, return_index=True)
                low = np.minimum.reduceat(cs, starts)
                high = np.maximum.reduceat(cs, starts)
                flat[uq] = np.where(low == high, low, -1)  # classes disagree: unlabelled
                if not (flat >= 0).any():
                    continue
                label = np.full((size, size), -1, dtype=np.int64)
                label[:window.height, :window.width] = flat.reshape(window.height, window.width)
                data = np.asarray(source.read(window.write_window).values, dtype=np.float32)
                _free_windows()
                patch = np.full((data.shape[0], data.shape[1], size, size), np.nan,
                                dtype=np.float32)
                patch[:, :, :window.height, :window.width] = data
                name = f"patch_r{window.row:06d}_c{window.col:06d}"
                rows_index.append({
                    "name": name, "row": window.row, "col": window.col,
                    "labelled_pixels": int((label >= 0).sum()),
                    "polygon_ids": " ".join(str(v) for v in pd.unique(ids[p])),
                })  # fmt: skip
                yield name, {source_name: patch}, label

    with _atomic_folder(out) as tmp:
        write_h5_patches(tmp, samples())
        if not rows_index:
            raise DataError("no polygon holds a pixel centre of the cube: no patch to write")
        tr = source.transform
        info = {
            "source": source_name, "patch_size": size, "classes": classes,
            "label_nodata": -1, "bands": list(source.bands),
            "dates": [str(d) for d in days],
            "crs": source.crs.to_wkt() if source.crs is not None else None,
            "transform": [float(v) for v in tuple(tr)[:6]],
            "label_column": label_column,
        }  # fmt: skip
        (tmp / "patches.json").write_text(json.dumps(info, indent=1))
        pd.DataFrame(rows_index).to_csv(tmp / "patches.csv", index=False)
    result = PatchExtraction(
        folder=out, n_patches=len(rows_index), classes=classes,
        n_labelled=int(sum(r["labelled_pixels"] for r in rows_index)),
        n_features=len(gdf), n_outside=int((~inside).sum()),
        n_unlabelled=int((~labelled).sum()), messages=messages)  # fmt: skip
    for message in messages:
        _LOG.info(message)
    return result
