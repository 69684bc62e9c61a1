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

Reading, the pixel membership and :func:`parcel_series` live in
:mod:`cropscope.data.polygons` (sample extraction shares them); they are re-exported here.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.data.polygons import (
    DEFAULT_ID,
    Membership,
    as_parcels,
    group_runs,
    parcel_series,
    read_parcels,
    require_geopandas,
    to_cube_crs,
)
from cropscope.data.readers.class_tags import band_class_names
from cropscope.errors import DataError
from cropscope.io import atomic_path

if TYPE_CHECKING:
    import geopandas as gpd

    from cropscope.data.readers.cube import CubeLike
    from cropscope.models.base import Classifier

__all__ = [
    "DEFAULT_ID",
    "aggregate_parcels",
    "parcel_series",
    "predict_parcels",
    "read_parcels",
    "write_parcels",
]

#: uint8 nodata of the map job's outputs
NODATA = 255
_PARQUET = (".parquet", ".geoparquet")


# ---------------------------------------------------------------------------- aggregation
def _output_frame(
    gdf: Any, id_column: str, classes: list[str], mean: np.ndarray, pixel_count: np.ndarray,
    from_centroid: np.ndarray, extra: dict[str, Any] | None = None,
) -> Any:  # fmt: skip
    """The result table: id, class, probability, pixel_count, [extra], p_<class>, flag."""
    import pandas as pd

    gpd = require_geopandas()
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

    gdf, id_column = as_parcels(parcels, id_column)
    with contextlib.ExitStack() as stack:
        src = _open_raster(stack, probabilities_tif)
        lab = _open_raster(stack, labels_tif) if labels_tif is not None else None
        if lab is not None and (lab.shape != src.shape or lab.transform != src.transform
                                or lab.crs != src.crs):  # fmt: skip
            raise DataError(f"{labels_tif} and {probabilities_tif} are not on the same grid")
        classes = band_class_names(src)
        k = len(classes)
        members = Membership(to_cube_crs(gdf, src.crs), src.transform, src.shape,
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
            order, uniq, starts = group_runs(p)
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


# ---------------------------------------------------------------------------- parcel-level model
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
    gdf, id_column = as_parcels(parcels, id_column)
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
    gpd = require_geopandas()
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
