"""Reference points and the map they assess: reading, checking, locating.

- :func:`read_class_map`: a class raster's grid, nodata and class names (the ``class_<i>``
  tags the map job writes, else the codes found as names).
- :func:`read_points`: reference points from a GeoPackage / GeoJSON / Shapefile / GeoParquet
  (geometry and CRS from the file) or a CSV (``x``/``y`` columns in ``points_crs``, the map's
  CRS by default; ``lon``/``lat`` or ``longitude``/``latitude`` columns in EPSG:4326).
  Points in another CRS than the map are refused unless ``reproject=True``: a silent
  reprojection hides a wrong file as often as it fixes a right one.
- :func:`locate`: the map pixel under each point; a point outside the map or on its
  nodata is an error naming how many and the first one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cropscope.data.readers.class_tags import tagged_class_names
from cropscope.errors import DataError, EvaluationError

__all__ = ["ClassMap", "ReferencePoints", "locate", "read_class_map", "read_points"]

_VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".parquet", ".fgb")
_XY_PAIRS = (("x", "y", None), ("lon", "lat", "EPSG:4326"),
             ("longitude", "latitude", "EPSG:4326"))


@dataclass
class ClassMap:
    """A class raster: path, grid and class names by code."""

    path: Path
    crs: Any
    transform: Any
    height: int
    width: int
    nodata: int | None
    #: class name of each code (``names[code]``; codes without a name are not classes)
    names: dict[int, str]


def read_class_map(path: str | Path) -> ClassMap:
    """Open a class raster (see the module doc)."""
    import rasterio

    p = Path(path)
    if not p.is_file():
        raise DataError(f"map not found: {p}")
    try:
        src_ctx = rasterio.open(p)
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"{p} is not a readable raster: {exc}") from None
    with src_ctx as src:
        if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
            raise DataError(f"{p}: a class map holds integer codes, not {src.dtypes[0]}")
        if src.count != 1:
            raise DataError(f"{p} is not a map of class labels (one band of integer codes); "
                            f"it has {src.count} bands (a probability map?)")
        tags = src.tags()
        names = tagged_class_names(tags)
        nodata = None if src.nodata is None else int(src.nodata)
        info = ClassMap(p, src.crs, src.transform, src.height, src.width, nodata, names)
    if not names:  # a map without names: its codes are the names
        from cropscope.data.pixel_areas import raster_class_areas

        counts, _, _ = raster_class_areas(p)
        info.names = {int(c): str(c) for c in np.flatnonzero(counts)}
    return info


@dataclass
class ReferencePoints:
    """Reference points in the map's CRS: coordinates and the reference label of each."""

    x: np.ndarray
    y: np.ndarray
    labels: list[str]
    source: str


def _same_crs(a: Any, b: Any) -> bool:
    from pyproj import CRS

    if a is None or b is None:
        return a is None and b is None
    return bool(CRS.from_user_input(a) == CRS.from_user_input(b))


def read_points(path: str | Path, label_column: str, map_crs: Any, *,
                x_column: str | None = None, y_column: str | None = None,
                points_crs: Any = None, reproject: bool = False,
                layer: str | None = None, require_labels: bool = True) -> ReferencePoints:
    """Reference points with their labels, in ``map_crs`` (see the module doc).
    ``layer``: the layer of a multi-layer file (a GeoPackage with several must name one);
    ``require_labels=False`` reads points only (``labels`` then empty)."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise DataError(f"reference points not found: {p}")
    if points_crs is not None:
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            points_crs = CRS.from_user_input(points_crs)
        except CRSError as exc:
            raise DataError(f"--points-crs {points_crs!r} is not a known CRS ({exc})") from None
    suffix = p.suffix.lower()
    if suffix == ".csv":
        frame = pd.read_csv(p)
        if x_column is None and y_column is None:
            for xc, yc, default in _XY_PAIRS:
                if xc in frame.columns and yc in frame.columns:
                    x_column, y_column = xc, yc
                    points_crs = points_crs if points_crs is not None else default
                    break
        if x_column is None or y_column is None or x_column not in frame.columns \
                or y_column not in frame.columns:
            raise DataError(f"{p}: no coordinate columns (x/y, lon/lat or longitude/latitude;"
                            f" or name them with --x-column/--y-column); columns: "
                            f"{list(frame.columns)}")
        x = pd.to_numeric(frame[x_column], errors="coerce").to_numpy(np.float64)
        y = pd.to_numeric(frame[y_column], errors="coerce").to_numpy(np.float64)
        crs = map_crs if points_crs is None else points_crs
    elif suffix in _VECTOR_SUFFIXES:
        import geopandas as gpd

        try:
            if suffix == ".parquet":
                frame = gpd.read_parquet(p)
            else:
                import pyogrio

                layers = [str(row[0]) for row in pyogrio.list_layers(p)]
                if layer is None and len(layers) > 1:
                    raise DataError(f"{p} holds several layers {layers}; name one (--layer)")
                if layer is not None and layer not in layers:
                    raise DataError(f"{p} has no layer {layer!r}; layers: {layers}")
                frame = gpd.read_file(p, layer=layer)
        except DataError:
            raise
        except Exception as exc:  # any reader failure means a bad file
            raise DataError(f"{p} is not a readable point file: {exc}") from None
        geom = frame.geometry
        if not (geom.geom_type == "Point").all():
            raise DataError(f"{p}: reference geometries must be points")
        x, y = geom.x.to_numpy(np.float64), geom.y.to_numpy(np.float64)
        crs = frame.crs if frame.crs is not None else (points_crs or map_crs)
    else:
        raise DataError(f"{p}: reference points must be .csv or a vector file "
                        f"({', '.join(_VECTOR_SUFFIXES)})")
    if require_labels and label_column not in frame.columns:
        raise DataError(f"{p}: no column {label_column!r}; columns: {list(frame.columns)}")
    if len(frame) == 0:
        raise DataError(f"{p} holds no point")
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        raise DataError(f"{p}: {int(bad.sum())} point(s) without valid coordinates "
                        f"(first: row {int(np.flatnonzero(bad)[0])})")
    raw = frame[label_column] if require_labels else pd.Series([], dtype=object)
    if raw.isna().any():
        raise DataError(f"{p}: {int(raw.isna().sum())} point(s) without a {label_column!r} "
                        "label; label every point or remove it")
    labels = [str(v).strip() for v in raw]
    empty = [i for i, v in enumerate(labels) if not v]
    if empty:
        raise DataError(f"{p}: {len(empty)} point(s) have an empty {label_column!r} label "
                        f"(first: row {empty[0]}); label every point or remove it")
    if not _same_crs(crs, map_crs):
        if not reproject:
            raise DataError(f"{p}: the points are in {_crs_name(crs)}, the map in "
                            f"{_crs_name(map_crs)}; reproject them (--reproject)")
        if crs is None or map_crs is None:
            raise DataError(f"{p}: cannot reproject between {_crs_name(crs)} and "
                            f"{_crs_name(map_crs)}")
        from pyproj import Transformer

        with np.errstate(all="ignore"):
            x, y = Transformer.from_crs(crs, map_crs, always_xy=True).transform(x, y)
        x, y = np.asarray(x), np.asarray(y)
        lost = ~(np.isfinite(x) & np.isfinite(y))
        if lost.any():
            raise DataError(f"{p}: {int(lost.sum())} point(s) fall outside what "
                            f"{_crs_name(map_crs)} can represent when read as "
                            f"{_crs_name(crs)} (first: row {int(np.flatnonzero(lost)[0])}); "
                            "is --points-crs right?")
    _, first, counts = np.unique(np.stack([x, y], axis=1), axis=0, return_index=True,
                                 return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{p}: {int((counts - 1).sum())} point(s) repeat the coordinates of an "
                        f"earlier point (first repeated: row {int(first[counts > 1].min())}); a "
                        "point counted twice makes the confidence intervals falsely narrow; "
                        "remove the duplicates")
    return ReferencePoints(x, y, labels, str(p))


def _crs_name(crs: Any) -> str:
    if crs is None:
        return "no CRS"
    from pyproj import CRS

    c = CRS.from_user_input(crs)
    epsg = c.to_epsg()
    return f"EPSG:{epsg}" if epsg else c.name


def locate(class_map: ClassMap, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray,
                                                                       np.ndarray, np.ndarray]:
    """Rows, columns and map codes of the pixels under ``(x, y)`` (map CRS)."""
    import rasterio

    inv = ~class_map.transform
    cols_f, rows_f = inv * (np.asarray(x), np.asarray(y))
    rows = np.floor(np.asarray(rows_f)).astype(np.int64)
    cols = np.floor(np.asarray(cols_f)).astype(np.int64)
    outside = (rows < 0) | (rows >= class_map.height) | (cols < 0) | (cols >= class_map.width)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise EvaluationError(f"{int(outside.sum())} of {len(rows)} reference points fall "
                              f"outside the map (first: point {i} at x={float(x[i]):.6g}, "
                              f"y={float(y[i]):.6g}); is it the right map and CRS?")
    t = class_map.transform
    cx = t.c + t.a * (cols + 0.5) + t.b * (rows + 0.5)
    cy = t.f + t.d * (cols + 0.5) + t.e * (rows + 0.5)
    with rasterio.open(class_map.path) as src:
        codes = np.array([v[0] for v in src.sample(zip(cx, cy, strict=True))], dtype=np.int64)
    unmapped = ~np.isin(codes, list(class_map.names))
    if class_map.nodata is not None:
        unmapped |= codes == class_map.nodata
    if unmapped.any():
        i = int(np.flatnonzero(unmapped)[0])
        raise EvaluationError(f"{int(unmapped.sum())} reference points fall on unmapped "
                              f"pixels (nodata; first: point {i}); remove them or map there")
    return rows, cols, codes
