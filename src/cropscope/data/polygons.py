"""Polygons and points on a cube's grid: reading vector files, ids and CRS checks, which
pixels each polygon holds, and per-polygon mean/median series.

Shared by parcel maps (:mod:`cropscope.mapping.parcels`, which re-exports
:func:`read_parcels` and :func:`parcel_series`) and sample extraction
(:mod:`cropscope.data.extract`); it lives in the data layer so both can use it.

Files: GeoPackage, GeoParquet, Shapefile, GeoJSON, FlatGeobuf (:func:`read_vector`, needs
the ``parcels`` extra: geopandas/pyogrio). Which pixels belong to a polygon
(:class:`Membership`): those whose centre lies inside it (GDAL's rasterisation rule), or
every pixel it touches with ``all_touched=True``. A pixel counts for every polygon it
belongs to: the polygons are split into *layers* of polygons that cannot share a pixel
(greedy colouring of their overlap graph) and each layer is rasterised in its own pass, so
overlapping polygons cost one extra pass each window, not one per polygon. A polygon that
contains no pixel centre (smaller than a pixel, or a thin sliver) takes the one pixel
containing its centroid (a point on its surface when the centroid falls outside it) and is
flagged ``from_centroid``. The grid is covered by :func:`~cropscope.data.windows.plan_windows`
tiles and only the tiles some polygon's bounding box meets are visited.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.data.windows import MapWindow, plan_windows
from cropscope.errors import DataError

if TYPE_CHECKING:
    import geopandas as gpd

    from cropscope.data.readers.cube import CubeLike
    from cropscope.data.timeseries import TimeSeriesSet

__all__ = [
    "DEFAULT_ID",
    "POLYGON_KINDS",
    "VECTOR_SUFFIXES",
    "Membership",
    "as_parcels",
    "check_features",
    "check_polygons",
    "group_runs",
    "parcel_series",
    "read_parcels",
    "read_vector",
    "require_geopandas",
    "to_cube_crs",
]

#: name of the id column created when the parcels have none
DEFAULT_ID = "parcel_id"
_PARQUET = (".parquet", ".geoparquet")
_VECTOR = (".gpkg", ".shp", ".geojson", ".json", ".fgb")
#: suffixes :func:`read_vector` reads
VECTOR_SUFFIXES = (*_PARQUET, *_VECTOR)
#: geometry types of polygons
POLYGON_KINDS = frozenset({"Polygon", "MultiPolygon"})
#: columns of the parcel tables of :mod:`cropscope.mapping.parcels` an id must not take
_RESULT_COLUMNS = frozenset({"class", "probability", "pixel_count", "majority_class",
                             "majority_fraction", "from_centroid", "geometry"})  # fmt: skip


# ---------------------------------------------------------------------------- reading
def require_geopandas() -> Any:
    """The geopandas module, or a :class:`DataError` saying how to install it."""
    try:
        import geopandas
    except ImportError:
        raise DataError("parcel maps need geopandas: pip install 'cropscope[parcels]'") from None
    return geopandas


def check_features(
    gdf: Any, id_column: str | None, name: str, *, kinds: frozenset[str] = POLYGON_KINDS,
    what: str = "parcel", default_id: str = DEFAULT_ID,
    reserved: frozenset[str] = _RESULT_COLUMNS,
) -> tuple[Any, str]:
    """Validate geometries (every one present and of one of ``kinds``) and ids; return
    ``(features, id column)``: a shallow copy, with a new id column ``default_id`` =
    0..n-1 when there is none. ``what`` names a feature in messages; an id column named in
    ``reserved`` (or ``p_*``) is refused, as it would clash with an output column."""
    gpd = require_geopandas()
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry.name not in gdf.columns:
        raise DataError(f"{name} has no geometry column")
    geoms = gdf.geometry
    if len(gdf) == 0:
        raise DataError(f"{name} holds no {what}s")
    bad = geoms.isna() | geoms.is_empty
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{name}: {int(bad.sum())} {what}(s) without geometry (row {first})")
    found = set(geoms.geom_type)
    if not found <= kinds:
        raise DataError(
            f"{name} holds {sorted(found - kinds)} geometries; {what}s must be "
            f"{' or '.join(sorted(kinds))}"
        )
    gdf = gdf.copy(deep=False)  # attrs and a new id column never touch the caller's frame
    if id_column is None:
        id_column = gdf.attrs.get("id_column")
        if id_column not in gdf.columns:
            id_column = default_id
        if id_column not in gdf.columns:
            gdf.insert(0, id_column, np.arange(len(gdf), dtype=np.int64))
    elif id_column not in gdf.columns:
        raise DataError(
            f"{name} has no id column {id_column!r}; its columns are "
            f"{[c for c in gdf.columns if c != gdf.geometry.name]}"
        )
    if id_column in reserved or str(id_column).startswith("p_"):
        raise DataError(f"id column {id_column!r} clashes with an output column; rename it")
    ids = gdf[id_column]
    if ids.isna().any():
        raise DataError(f"{name}: {int(ids.isna().sum())} {what}(s) without an id in "
                        f"{id_column!r}")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise DataError(
            f"{name}: duplicate ids in {id_column!r} (e.g. {dup.iloc[0]!r}); ids must be unique"
        )
    gdf.attrs["id_column"] = id_column
    return gdf, id_column


def check_polygons(gdf: Any, id_column: str | None, name: str) -> tuple[Any, str]:
    """Validate parcel polygons and ids; return ``(parcels, id column)`` (a copy with a new
    id column ``parcel_id`` = 0..n-1 when there is none)."""
    return check_features(gdf, id_column, name)


def read_vector(path: str | Path, *, layer: str | None = None,
                what: str = "parcel") -> gpd.GeoDataFrame:
    """The features of a GeoPackage, GeoParquet, Shapefile, GeoJSON or FlatGeobuf file, as
    stored (no geometry or id checks). ``layer`` picks a GeoPackage layer (required when the
    file holds several); ``what`` names the features in messages."""
    gpd = require_geopandas()
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in _PARQUET:
        try:
            return gpd.read_parquet(path)
        except ValueError as exc:  # no "geo" metadata: a plain Parquet table
            raise DataError(f"{path.name} is not GeoParquet (no geometry): {exc}") from None
        except OSError as exc:  # not Parquet at all
            raise DataError(f"cannot read {what}s from {path.name}: {exc}") from None
    if suffix in _VECTOR:
        if layer is None and suffix == ".gpkg":
            try:
                listed = gpd.list_layers(path)
            except Exception as exc:  # pyogrio's errors come in several types
                raise DataError(f"cannot read {what}s from {path.name}: {exc}") from None
            layers = [str(row[0]) for row in listed.itertuples(index=False)]
            if len(layers) > 1:
                raise DataError(f"{path.name} holds several layers {layers}; pass layer=")
        try:
            return gpd.read_file(path, layer=layer)
        except Exception as exc:  # pyogrio's errors come in several types
            raise DataError(f"cannot read {what}s from {path.name}: {exc}") from None
    raise DataError(
        f"unsupported {what} file {path.name}: use .gpkg, .parquet/.geoparquet, .shp, "
        ".geojson or .fgb"
    )


def read_parcels(
    path: str | Path, *, id_column: str | None = None, layer: str | None = None
) -> gpd.GeoDataFrame:
    """Read parcel polygons from GeoPackage, GeoParquet, Shapefile or GeoJSON.

    ``id_column`` names the unique parcel id; without it a ``parcel_id`` column is used,
    or created (0..n-1) when absent. ``layer`` picks a GeoPackage layer (required when the
    file holds several). The id column's name is kept in ``gdf.attrs["id_column"]``.
    """
    gdf = read_vector(path, layer=layer)
    gdf, _ = check_polygons(gdf, id_column, Path(path).name)
    return gdf


def as_parcels(parcels: Any, id_column: str | None) -> tuple[Any, str]:
    """Parcels from a file or a GeoDataFrame, checked: ``(parcels, id column)``."""
    if isinstance(parcels, str | Path):
        gdf = read_parcels(parcels, id_column=id_column)
        return gdf, gdf.attrs["id_column"]
    return check_polygons(parcels, id_column, "the parcels")


def to_cube_crs(gdf: Any, crs: Any) -> np.ndarray:
    """The parcels' geometries (shapely array) in the raster's CRS."""
    if crs is None and gdf.crs is None:
        return gdf.geometry.to_numpy()
    if crs is None:
        raise DataError("the raster has no CRS but the parcels do; cannot match them")
    if gdf.crs is None:
        raise DataError(
            "the parcels have no CRS; set it first (gdf.set_crs(...)) so they can be "
            "matched to the raster"
        )
    return gdf.geometry.to_crs(crs).to_numpy()


# ---------------------------------------------------------------------------- pixels
class Membership:
    """Which pixels of each window belong to which parcels (see the module docstring)."""

    def __init__(
        self, geoms: np.ndarray, transform: Any, shape: tuple[int, int],
        window_size: int, all_touched: bool,
    ) -> None:  # fmt: skip
        import shapely

        self.geoms = geoms
        self.transform = transform
        self.shape = shape
        self.all_touched = all_touched
        self.windows = plan_windows(shape[0], shape[1], tile=window_size)
        self.window_size = window_size
        self.tree = shapely.STRtree(geoms)
        self.layers = self._layers()
        self.candidates = [self.tree.query(self._box(w)) for w in self.windows]
        #: pixels rasterised into each parcel, valid or not
        self.covered = np.zeros(len(geoms), dtype=np.int64)

    def _box(self, window: MapWindow) -> Any:
        import shapely
        from rasterio.windows import bounds

        return shapely.box(*bounds(window.write_window, self.transform))

    def _layers(self) -> np.ndarray:
        """Greedy colouring: parcels of one layer never share a pixel."""
        import shapely

        geoms, n = self.geoms, len(self.geoms)
        if self.all_touched:  # a shared touched pixel lies within one pixel of both
            dx, dy = abs(self.transform.a), abs(self.transform.e)
            b = shapely.bounds(geoms)
            grown = shapely.box(b[:, 0] - dx, b[:, 1] - dy, b[:, 2] + dx, b[:, 3] + dy)
            left, right = self.tree.query(grown, predicate="intersects")
        else:  # a shared pixel centre needs overlapping interiors
            left, right = self.tree.query(geoms, predicate="intersects")
            keep = left != right
            left, right = left[keep], right[keep]
            keep = ~shapely.touches(geoms[left], geoms[right])
            left, right = left[keep], right[keep]
        keep = left != right
        a = np.concatenate([left[keep], right[keep]])
        b = np.concatenate([right[keep], left[keep]])
        layers = np.zeros(n, dtype=np.int64)
        if a.size == 0:
            return layers
        order = np.lexsort((b, a))
        a, b = a[order], b[order]
        starts = np.searchsorted(a, np.arange(n + 1))
        for i in range(n):
            nbrs = b[starts[i] : starts[i + 1]]
            used = set(layers[nbrs[nbrs < i]].tolist())
            layer = 0
            while layer in used:
                layer += 1
            layers[i] = layer
        return layers

    def members(self, window: MapWindow) -> tuple[np.ndarray, np.ndarray]:
        """``(parcel index, flat pixel index in the window)`` of every membership."""
        from rasterio.features import rasterize
        from rasterio.windows import transform as window_transform

        cand = self.candidates[window.index]
        parcels, pixels = [], []
        wt = window_transform(window.write_window, self.transform)
        for layer in np.unique(self.layers[cand]):
            sel = cand[self.layers[cand] == layer]
            burnt = rasterize(
                ((self.geoms[i], int(i) + 1) for i in sel),
                out_shape=(window.height, window.width), transform=wt, fill=0,
                dtype="int32", all_touched=self.all_touched,
            ).ravel()  # fmt: skip
            flat = np.flatnonzero(burnt)
            parcels.append(burnt[flat].astype(np.int64) - 1)
            pixels.append(flat)
        if not parcels:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        p, q = np.concatenate(parcels), np.concatenate(pixels)
        self.covered += np.bincount(p, minlength=len(self.geoms))
        return p, q

    def centroid_pixels(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """For parcels without any pixel: the window, parcel and flat pixel of the pixel
        holding the centroid (or a point on the surface when the centroid is outside)."""
        import shapely

        idx = np.flatnonzero(self.covered == 0)
        if idx.size == 0:
            return {}
        geoms = self.geoms[idx]
        points = shapely.centroid(geoms)
        outside = ~shapely.contains(geoms, points)
        points[outside] = shapely.point_on_surface(geoms[outside])
        x, y = shapely.get_x(points), shapely.get_y(points)
        inv = ~self.transform
        cols, rows = inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f
        rows, cols = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
        inside = (rows >= 0) & (rows < self.shape[0]) & (cols >= 0) & (cols < self.shape[1])
        idx, rows, cols = idx[inside], rows[inside], cols[inside]
        n_wcols = -(-self.shape[1] // self.window_size)
        ws = self.window_size
        widx = (rows // ws) * n_wcols + cols // ws
        out = {}
        for w in np.unique(widx):
            sel = widx == w
            win = self.windows[int(w)]
            flat = (rows[sel] - win.row) * win.width + (cols[sel] - win.col)
            out[int(w)] = (idx[sel], flat)
        return out

    def stream(
        self, progress: bool, desc: str
    ) -> Iterator[tuple[MapWindow, np.ndarray, np.ndarray, bool]]:
        """``(window, parcels, pixels, from_centroid)`` for every window some parcel's
        bounding box meets (memberships may be empty), then for the windows holding the
        centroid pixels of the parcels left without any pixel."""
        from tqdm.auto import tqdm

        todo = [w for w in self.windows if self.candidates[w.index].size]
        for window in tqdm(todo, desc=desc, unit="window", disable=not progress,
                           file=sys.stderr):  # fmt: skip
            p, q = self.members(window)
            yield window, p, q, False
        for w, (p, q) in self.centroid_pixels().items():
            yield self.windows[w], p, q, True


def group_runs(parcels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order, unique parcels and the start of each one's run in the sorted order."""
    order = np.argsort(parcels, kind="stable")
    uniq, starts = np.unique(parcels[order], return_index=True)
    return order, uniq, starts


# ---------------------------------------------------------------------------- parcel series
def parcel_series(
    parcels: gpd.GeoDataFrame | str | Path,
    source: CubeLike | str | Path,
    *,
    window_size: int = 1024,
    stat: str = "mean",
    all_touched: bool = False,
    progress: bool = True,
    id_column: str | None = None,
) -> TimeSeriesSet:
    """The mean (or median) time series of every parcel ``[N, T, C]``, read window by window.

    Per parcel, date and band, the statistic is over the parcel's pixels with a finite
    value there (NaN where none). ``ids`` are the parcel ids; ``meta`` has
    ``pixel_count`` (pixels with at least one valid observation) and ``from_centroid``.
    ``mean`` keeps sums and counts per parcel; ``median`` keeps a parcel's pixels only
    until the last window it overlaps has been read.
    """
    import pandas as pd

    from cropscope.data.readers.cube import CubeSource
    from cropscope.data.timeseries import TimeSeriesSet

    if stat not in ("mean", "median"):
        raise DataError(f"stat must be 'mean' or 'median', got {stat!r}")
    gdf, id_column = as_parcels(parcels, id_column)
    if isinstance(source, str | Path):
        source = CubeSource.scan(source)
    n, t, c = len(gdf), len(source.times), len(source.bands)
    members = Membership(to_cube_crs(gdf, source.crs), source.transform, source.shape,
                          window_size, all_touched)  # fmt: skip
    out = np.full((n, t, c), np.nan, dtype=np.float64)
    sums = np.zeros((n, t, c), dtype=np.float64) if stat == "mean" else None
    hits = np.zeros((n, t, c), dtype=np.int64) if stat == "mean" else None
    count = np.zeros(n, dtype=np.int64)
    flagged = np.zeros(n, dtype=bool)
    pending: dict[int, list[np.ndarray]] = {}  # median: pixels [m, T, C] per parcel
    windows_left = np.bincount(
        np.concatenate([*members.candidates, np.empty(0, dtype=np.int64)]), minlength=n
    )

    def finish(idx: np.ndarray) -> None:
        for i in idx.tolist():
            chunks = pending.pop(i, None)
            if chunks:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN dates
                    out[i] = np.nanmedian(np.concatenate(chunks), axis=0)

    def accumulate(window: MapWindow, p: np.ndarray, q: np.ndarray, centroid: bool) -> None:
        cube = source.read(window.write_window)
        values = np.asarray(cube.values).reshape(t, c, -1)
        order, uniq, starts = group_runs(p)
        qs = q[order]
        vals = values[:, :, qs].astype(np.float64)  # [T, C, m], pixels grouped by parcel
        finite = np.isfinite(vals)
        count[uniq] += np.add.reduceat(finite.any(axis=(0, 1)).astype(np.int64), starts)
        flagged[uniq] |= centroid & (count[uniq] > 0)
        if sums is not None and hits is not None:
            sums[uniq] += np.moveaxis(
                np.add.reduceat(np.where(finite, vals, 0.0), starts, axis=2), 2, 0
            )
            hits[uniq] += np.moveaxis(np.add.reduceat(finite.astype(np.int64), starts,
                                                      axis=2), 2, 0)  # fmt: skip
            return
        ends = np.append(starts[1:], qs.size)
        for i, s, e in zip(uniq.tolist(), starts.tolist(), ends.tolist(), strict=True):
            pending.setdefault(i, []).append(np.moveaxis(vals[:, :, s:e], 2, 0))
        if centroid:
            finish(uniq)

    with source.opened():
        for window, p, q, centroid in members.stream(progress, "parcel series"):
            if p.size:
                accumulate(window, p, q, centroid)
            if not centroid:
                cand = members.candidates[window.index]
                windows_left[cand] -= 1
                if stat == "median":  # parcels read in full: reduce and drop their pixels
                    finish(cand[windows_left[cand] == 0])
        if stat == "median":
            finish(np.array(sorted(pending), dtype=np.int64))
    if sums is not None and hits is not None:
        out = np.where(hits > 0, sums / np.maximum(hits, 1), np.nan)
    meta = pd.DataFrame({"pixel_count": count, "from_centroid": flagged})
    return TimeSeriesSet(
        values=out.astype(np.float32),
        bands=list(source.bands),
        dates=np.array(source.times, dtype="datetime64[D]"),
        ids=gdf[id_column].to_numpy(),
        meta=meta,
    )
