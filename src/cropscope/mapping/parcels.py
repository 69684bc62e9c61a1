"""Parcel maps: per-parcel aggregation of pixel predictions, or parcel-level predictions.

Parcels are polygons read from GeoPackage, GeoParquet, Shapefile or GeoJSON
(:func:`read_parcels`, needs the ``parcels`` extra). Two ways to a parcel map:

- :func:`aggregate_parcels` summarises an existing probability COG of the map job: the
  mean probability of every class over the parcel's valid pixels, the class of highest
  mean, the pixel count and a majority vote of the pixel labels.
- :func:`predict_parcels` applies a parcel-level model (any classifier trained on parcel
  mean series) to the per-parcel mean (or median) time series of a cube
  (:func:`parcel_series`).

Both stream the raster window by window and never hold it whole. Which pixels belong to a
parcel: those whose centre lies inside it (GDAL's rasterisation rule), or every pixel it
touches with ``all_touched=True``. A pixel counts for every parcel it belongs to: the
parcels are split into *layers* of parcels that cannot share a pixel (greedy colouring of
their overlap graph) and each layer is rasterised in its own pass, so overlapping parcels
cost one extra pass each window, not one per parcel. A parcel that contains no pixel centre
(smaller than a pixel, or a thin sliver) takes the one pixel containing its centroid (a
point on its surface when the centroid falls outside it) and is flagged ``from_centroid``.
Parcels are reprojected to the raster's CRS for the computation; outputs keep the input
parcels' geometry and CRS. :func:`write_parcels` writes GeoParquet or GeoPackage.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.data.readers.class_tags import band_class_names
from cropscope.errors import DataError
from cropscope.io import atomic_path
from cropscope.mapping.windows import MapWindow, plan_windows

if TYPE_CHECKING:
    import geopandas as gpd

    from cropscope.data.readers.cube import CubeLike
    from cropscope.data.timeseries import TimeSeriesSet
    from cropscope.models.base import Classifier

__all__ = [
    "aggregate_parcels",
    "parcel_series",
    "predict_parcels",
    "read_parcels",
    "write_parcels",
]

#: name of the id column created when the parcels have none
DEFAULT_ID = "parcel_id"
#: uint8 nodata of the map job's outputs
NODATA = 255
_PARQUET = (".parquet", ".geoparquet")
_VECTOR = (".gpkg", ".shp", ".geojson", ".json")
_POLYGONS = {"Polygon", "MultiPolygon"}
_RESULT_COLUMNS = {"class", "probability", "pixel_count", "majority_class",
                   "majority_fraction", "from_centroid", "geometry"}  # fmt: skip


def _geopandas() -> Any:
    try:
        import geopandas
    except ImportError:
        raise DataError("parcel maps need geopandas: pip install 'cropscope[parcels]'") from None
    return geopandas


# ---------------------------------------------------------------------------- reading
def _check_parcels(gdf: Any, id_column: str | None, name: str) -> tuple[Any, str]:
    """Validate polygons and ids; return ``(parcels, id column)`` (a copy with a new id
    column ``parcel_id`` = 0..n-1 when there is none)."""
    gpd = _geopandas()
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry.name not in gdf.columns:
        raise DataError(f"{name} has no geometry column; parcels must be polygons")
    geoms = gdf.geometry
    if len(gdf) == 0:
        raise DataError(f"{name} holds no parcels")
    bad = geoms.isna() | geoms.is_empty
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{name}: {int(bad.sum())} parcel(s) without geometry (row {first})")
    kinds = set(geoms.geom_type)
    if not kinds <= _POLYGONS:
        raise DataError(
            f"{name} holds {sorted(kinds - _POLYGONS)} geometries; parcels must be "
            "Polygon or MultiPolygon"
        )
    gdf = gdf.copy(deep=False)  # attrs and a new id column never touch the caller's frame
    if id_column is None:
        id_column = gdf.attrs.get("id_column")
        if id_column not in gdf.columns:
            id_column = DEFAULT_ID
        if id_column not in gdf.columns:
            gdf.insert(0, id_column, np.arange(len(gdf), dtype=np.int64))
    elif id_column not in gdf.columns:
        raise DataError(
            f"{name} has no id column {id_column!r}; its columns are "
            f"{[c for c in gdf.columns if c != gdf.geometry.name]}"
        )
    if id_column in _RESULT_COLUMNS or str(id_column).startswith("p_"):
        raise DataError(f"id column {id_column!r} clashes with an output column; rename it")
    ids = gdf[id_column]
    if ids.isna().any():
        raise DataError(f"{name}: {int(ids.isna().sum())} parcel(s) without an id in {id_column!r}")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise DataError(
            f"{name}: duplicate ids in {id_column!r} (e.g. {dup.iloc[0]!r}); ids must be unique"
        )
    gdf.attrs["id_column"] = id_column
    return gdf, id_column


def read_parcels(
    path: str | Path, *, id_column: str | None = None, layer: str | None = None
) -> gpd.GeoDataFrame:
    """Read parcel polygons from GeoPackage, GeoParquet, Shapefile or GeoJSON.

    ``id_column`` names the unique parcel id; without it a ``parcel_id`` column is used,
    or created (0..n-1) when absent. ``layer`` picks a GeoPackage layer (required when the
    file holds several). The id column's name is kept in ``gdf.attrs["id_column"]``.
    """
    gpd = _geopandas()
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"parcel file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in _PARQUET:
        try:
            gdf = gpd.read_parquet(path)
        except ValueError as exc:  # no "geo" metadata: a plain Parquet table
            raise DataError(f"{path.name} is not GeoParquet (no geometry): {exc}") from None
    elif suffix in _VECTOR:
        if layer is None and suffix == ".gpkg":
            layers = [str(row[0]) for row in gpd.list_layers(path).itertuples(index=False)]
            if len(layers) > 1:
                raise DataError(f"{path.name} holds several layers {layers}; pass layer=")
        try:
            gdf = gpd.read_file(path, layer=layer)
        except Exception as exc:  # pyogrio's errors come in several types
            raise DataError(f"cannot read parcels from {path.name}: {exc}") from None
    else:
        raise DataError(
            f"unsupported parcel file {path.name}: use .gpkg, .parquet/.geoparquet, .shp "
            "or .geojson"
        )
    gdf, _ = _check_parcels(gdf, id_column, path.name)
    return gdf


def _as_parcels(parcels: Any, id_column: str | None) -> tuple[Any, str]:
    if isinstance(parcels, str | Path):
        gdf = read_parcels(parcels, id_column=id_column)
        return gdf, gdf.attrs["id_column"]
    return _check_parcels(parcels, id_column, "the parcels")


def _to_raster_crs(gdf: Any, crs: Any) -> np.ndarray:
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
class _Membership:
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


def _group(parcels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order, unique parcels and the start of each one's run in the sorted order."""
    order = np.argsort(parcels, kind="stable")
    uniq, starts = np.unique(parcels[order], return_index=True)
    return order, uniq, starts


# ---------------------------------------------------------------------------- aggregation
def _output_frame(
    gdf: Any, id_column: str, classes: list[str], mean: np.ndarray, pixel_count: np.ndarray,
    from_centroid: np.ndarray, extra: dict[str, Any] | None = None,
) -> Any:  # fmt: skip
    """The result table: id, class, probability, pixel_count, [extra], p_<class>, flag."""
    import pandas as pd

    gpd = _geopandas()
    has = np.isfinite(mean).all(axis=1) & (pixel_count > 0)
    best = np.where(has, np.nan_to_num(mean, nan=-1.0).argmax(axis=1), -1)
    cls = pd.array([classes[b] if b >= 0 else None for b in best], dtype="string")
    columns: dict[str, Any] = {
        id_column: gdf[id_column].to_numpy(),
        "class": cls,
        "probability": np.where(has, np.take_along_axis(
            np.nan_to_num(mean), np.maximum(best, 0)[:, None], axis=1)[:, 0], np.nan),
        "pixel_count": pixel_count.astype(np.int64),
    }  # fmt: skip
    columns.update(extra or {})
    for k, name in enumerate(classes):
        columns[f"p_{name}"] = np.where(has, mean[:, k], np.nan)
    columns["from_centroid"] = from_centroid
    return gpd.GeoDataFrame(columns, geometry=gdf.geometry.to_numpy(), crs=gdf.crs)


def _open_raster(stack: contextlib.ExitStack, path: str | Path) -> Any:
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        return stack.enter_context(rasterio.open(path))
    except RasterioIOError as exc:
        raise DataError(f"cannot read raster {path}: {exc}") from None


def aggregate_parcels(
    parcels: gpd.GeoDataFrame | str | Path,
    probabilities_tif: str | Path,
    *,
    labels_tif: str | Path | None = None,
    window_size: int = 1024,
    all_touched: bool = False,
    progress: bool = True,
    id_column: str | None = None,
) -> gpd.GeoDataFrame:
    """Per-parcel summary of a map job's probability COG, read window by window.

    ``probabilities_tif`` holds one uint8 band per class (probability = value / 254, 255 =
    nodata; class names from the ``class_<i>`` tags or band descriptions). Columns: the id,
    ``class`` (highest mean probability), ``probability`` (that mean), ``pixel_count``
    (valid pixels), ``majority_class`` and ``majority_fraction`` (vote of the pixel labels:
    ``labels_tif`` when given, else the argmax of the quantised probabilities),
    ``p_<class>`` (mean probability per class), ``from_centroid`` and the geometry (the
    input's, in its CRS). Parcels without a valid pixel get a null class, NaN
    probabilities and ``pixel_count`` 0.
    """
    import pandas as pd

    gdf, id_column = _as_parcels(parcels, id_column)
    with contextlib.ExitStack() as stack:
        src = _open_raster(stack, probabilities_tif)
        lab = _open_raster(stack, labels_tif) if labels_tif is not None else None
        if lab is not None and (lab.shape != src.shape or lab.transform != src.transform
                                or lab.crs != src.crs):  # fmt: skip
            raise DataError(f"{labels_tif} and {probabilities_tif} are not on the same grid")
        classes = band_class_names(src)
        k = len(classes)
        members = _Membership(_to_raster_crs(gdf, src.crs), src.transform, src.shape,
                              window_size, all_touched)  # fmt: skip
        n = len(gdf)
        sums = np.zeros((n, k), dtype=np.int64)  # of the uint8 values
        votes = np.zeros((n, k), dtype=np.int64)
        count = np.zeros(n, dtype=np.int64)
        flagged = np.zeros(n, dtype=bool)
        for window, p, q, centroid in members.stream(progress, "parcels"):
            if not p.size:
                continue
            proba = src.read(window=window.write_window).reshape(k, -1)
            valid = (proba != NODATA).all(axis=0)
            if lab is not None:
                labels = lab.read(1, window=window.write_window).ravel().astype(np.int64)
                valid &= labels < k
            else:
                labels = proba.argmax(axis=0)
            ok = valid[q]
            p, q = p[ok], q[ok]
            if not p.size:
                continue
            order, uniq, starts = _group(p)
            qs = q[order]
            sizes = np.diff(np.append(starts, qs.size))
            sums[uniq] += np.add.reduceat(proba[:, qs].astype(np.int64), starts, axis=1).T
            count[uniq] += sizes
            run = np.repeat(np.arange(uniq.size), sizes)
            votes[uniq] += np.bincount(run * k + labels[qs], minlength=uniq.size * k).reshape(-1, k)
            flagged[uniq] |= centroid
    has = count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(has[:, None], sums / (254.0 * count[:, None]), np.nan)
    major = votes.argmax(axis=1)
    extra = {
        "majority_class": pd.array(
            [classes[m] if h else None for m, h in zip(major, has, strict=True)], dtype="string"
        ),
        "majority_fraction": np.where(has, votes.max(axis=1) / np.maximum(count, 1), np.nan),
    }
    return _output_frame(gdf, id_column, classes, mean, count, flagged, extra)


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
    gdf, id_column = _as_parcels(parcels, id_column)
    if isinstance(source, str | Path):
        source = CubeSource.scan(source)
    n, t, c = len(gdf), len(source.times), len(source.bands)
    members = _Membership(_to_raster_crs(gdf, source.crs), source.transform, source.shape,
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
        order, uniq, starts = _group(p)
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


def predict_parcels(
    model: Classifier,
    parcels: gpd.GeoDataFrame | str | Path,
    source: CubeLike | str | Path,
    *,
    window_size: int = 1024,
    stat: str = "mean",
    all_touched: bool = False,
    batch_size: int = 65536,
    progress: bool = True,
    id_column: str | None = None,
) -> gpd.GeoDataFrame:
    """Classify every parcel from its mean (or median) series with a parcel-level model.

    Columns: the id, ``class``, ``probability`` (of that class), ``pixel_count``,
    ``p_<class>``, ``from_centroid`` and the geometry (the input's, in its CRS). Parcels
    without any valid observation get a null class and ``pixel_count`` 0.
    """
    from cropscope.data.readers.cube import CubeSource

    card = model._require_card()
    input_kind = getattr(model, "input_kind", "pixels")
    if input_kind != "pixels":
        raise DataError(f"model {model.name!r} takes {input_kind}, not parcel series")
    if batch_size <= 0:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    if isinstance(source, str | Path):
        source = CubeSource.scan(source)
    absent = [b for b in card.bands if b not in source.bands]
    if absent:
        raise DataError(
            f"the model was trained on bands {card.bands} but the cube has {source.bands}"
        )
    if len(source.times) != card.n_times:
        raise DataError(
            f"the model expects {card.n_times} time steps but the cube has "
            f"{len(source.times)}; composite or resample the cube to the model's time grid"
        )
    gdf, id_column = _as_parcels(parcels, id_column)
    series = parcel_series(
        gdf, source, window_size=window_size, stat=stat, all_touched=all_touched,
        progress=progress, id_column=id_column,
    )  # fmt: skip
    classes = list(model.classes)
    proba = np.full((series.n_samples, len(classes)), np.nan, dtype=np.float64)
    assert series.mask is not None and series.meta is not None  # set by __post_init__
    valid = np.flatnonzero(series.mask.any(axis=1))
    for start in range(0, valid.size, batch_size):
        idx = valid[start : start + batch_size]
        proba[idx] = model.predict_proba(series.subset(idx))
    count = series.meta["pixel_count"].to_numpy()
    flagged = series.meta["from_centroid"].to_numpy()
    return _output_frame(gdf, id_column, classes, proba, count, flagged)


# ---------------------------------------------------------------------------- writing
def write_parcels(gdf: gpd.GeoDataFrame, path: str | Path) -> Path:
    """Write parcels as GeoParquet (``.parquet``/``.geoparquet``) or GeoPackage (``.gpkg``,
    one layer named after the file), atomically, keeping the CRS."""
    gpd = _geopandas()
    if not isinstance(gdf, gpd.GeoDataFrame):
        raise DataError(f"write_parcels takes a GeoDataFrame, got {type(gdf).__name__}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (*_PARQUET, ".gpkg"):
        raise DataError(f"cannot write {path.name}: use .parquet/.geoparquet or .gpkg")
    with atomic_path(path) as tmp:
        if suffix == ".gpkg":
            # GDAL wants the .gpkg extension and a new file: write beside, then move
            inner = tmp.with_name(tmp.name + ".gpkg")
            try:
                gdf.to_file(inner, driver="GPKG", layer=path.stem)
                os.replace(inner, tmp)
            finally:
                inner.unlink(missing_ok=True)
        else:
            gdf.to_parquet(tmp)
    return path
