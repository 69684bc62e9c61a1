"""Delivering a map product: what ``cropscope predict --input CUBE`` writes, as one call.

:func:`deliver_map` runs the map job (:func:`~cropscope.mapping.job.run_map_job`: windowed,
resumable, optionally on Dask) in a hidden work folder beside the output and then delivers,
next to ``out`` (e.g. ``map.tif``):

- ``map.tif`` (labels, colour table keyed to the class names, class names),
  ``map_probabilities.tif`` (uint8 per class, GDAL scale 1/254 so GIS tools read 0–1),
  ``map_uncertainty.tif`` (normalised entropy, scale 1/254) — Cloud-Optimized GeoTIFFs,
  each moved into place atomically, with the permissions the user's umask gives;
- ``map.tif.aux.xml`` (GDAL category names: QGIS / ArcGIS / GDAL show class names) and
  ``map.qml`` (a QGIS style: each class's colour and name);
- ``map.png``: a quick-look drawn from the labels' overviews (bounded memory);
- ``map_areas.json``: pixels, share and hectares per class (each pixel's area on the
  ellipsoid, right in any CRS; mapped areas, not estimates).

``out`` must be a GeoTIFF path (``.tif``/``.tiff``): any other suffix would put the labels
under a name another output uses (``--out map.png`` would be overwritten by the preview).

Complete or absent: every file is made in the work folder first and then moved into place,
the labels last (an earlier map's labels are removed before the first move), so whatever
stops a delivery leaves either the whole new product or no labels at all.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cropscope.errors import DataError

__all__ = ["MapProduct", "class_areas", "deliver_map", "map_output_paths"]

#: the longest side of the PNG quick-look, in pixels
PREVIEW_SIDE = 1024


@dataclass
class MapProduct:
    """The files :func:`deliver_map` delivered and what they hold."""

    paths: dict[str, Path]
    classes: list[str]
    areas: dict[str, dict[str, float]]
    n_windows: int
    n_resumed: int


def map_output_paths(out_path: str | Path) -> dict[str, Path]:
    """Where a map is delivered: ``map.tif`` → labels ``map.tif``, ``map_probabilities.tif``,
    ``map_uncertainty.tif``, ``map.png``, ``map_areas.json``, ``map_parcels.parquet``."""
    out_path = Path(out_path)
    suffix = out_path.suffix.lower()
    if suffix not in (".tif", ".tiff"):
        raise DataError(f"--out {out_path}: a map is a GeoTIFF; give a .tif path (the PNG "
                        "quick-look and the area table are written beside it)")
    stem = out_path.name[: -len(out_path.suffix)]
    return {
        "labels": out_path,
        "probabilities": out_path.with_name(f"{stem}_probabilities{out_path.suffix}"),
        "uncertainty": out_path.with_name(f"{stem}_uncertainty{out_path.suffix}"),
        "preview": out_path.with_name(f"{stem}.png"),
        "areas": out_path.with_name(f"{stem}_areas.json"),
        "parcels": out_path.with_name(f"{stem}_parcels.parquet"),
    }


def deliver_map(
    model: Any,
    source: Any,
    out_path: str | Path,
    *,
    tile: int | None = 512,
    halo: int | None = None,
    batch_size: int = 65536,
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = True,
    progress: bool = True,
    colours: Mapping[str, str] | None = None,
) -> MapProduct:
    """Map ``source`` (a cube source or a path :func:`~cropscope.data.readers.open.
    open_cube_source` opens) with ``model`` (a map model or classifier) into the map product
    at ``out_path`` (see the module docstring). ``colours``: ``{class: "#rrggbb"}`` over the
    colours keyed to class names (:mod:`cropscope.mapping.styles`)."""
    from cropscope.io import write_json
    from cropscope.mapping.job import run_map_job

    targets = map_output_paths(out_path)
    labels_aux = Path(f"{targets['labels']}.aux.xml")
    style = targets["labels"].with_suffix(".qml")
    for path in (*targets.values(), labels_aux, style):
        if path.is_dir():
            raise DataError(f"--out: {path} is a folder; the map product writes a file there")
    targets["labels"].parent.mkdir(parents=True, exist_ok=True)
    # the job's journal and intermediates live next to the output until it is delivered
    work = targets["labels"].with_name(f".{targets['labels'].name}.mapjob")
    result = run_map_job(model, source, work, tile=tile, halo=halo, batch_size=batch_size,
                         progress=progress, resume=resume, workers=workers,
                         scheduler=scheduler, colours=colours)
    from cropscope.mapping.styles import write_category_names, write_qgis_style

    # every companion is made inside the work folder first (a failure here, e.g. a full
    # disk, leaves the delivered files of an earlier run as they were)
    staged = result.paths["labels"]
    write_category_names(staged, result.classes)
    write_qgis_style(staged, result.classes, colours)
    write_preview_from_cog(staged, result.classes, work / "preview.png")
    areas = class_areas(staged, result.classes)
    write_json(work / "areas.json", areas)
    # delivery: the labels are the product's "complete" file. The old labels go first and
    # the new ones come last, so an interruption in between leaves no labels (no map) rather
    # than new labels beside old areas, or old labels beside new probabilities.
    labels_aux.unlink(missing_ok=True)
    targets["labels"].unlink(missing_ok=True)
    moves = [(result.paths["probabilities"], targets["probabilities"]),
             (result.paths["uncertainty"], targets["uncertainty"]),
             (staged.with_suffix(".qml"), style),
             (work / "preview.png", targets["preview"]),
             (work / "areas.json", targets["areas"]),
             (Path(f"{staged}.aux.xml"), labels_aux),
             (staged, targets["labels"])]
    for src, dst in moves:
        os.replace(src, dst)  # same folder: each one atomic
    shutil.rmtree(work, ignore_errors=True)
    delivered = {k: v for k, v in targets.items() if k != "parcels"}
    return MapProduct(delivered, list(result.classes), areas, result.n_windows,
                      result.n_resumed)


def class_areas(labels_path: str | Path, classes: list[str]) -> dict[str, dict[str, float]]:
    """Pixels, share and hectares per class, counted block by block from the labels COG;
    hectares are each pixel's area on the ellipsoid (:mod:`cropscope.data.pixel_areas`), so
    they are right in a geographic or any projected CRS. These are *mapped* areas (pixel
    counts): for areas with confidence intervals use :func:`cropscope.assessment.assess_map`
    with a reference sample."""
    from cropscope.data.pixel_areas import raster_class_areas

    pixels, hectares, _ = raster_class_areas(labels_path)
    n = len(classes)
    pixels = np.pad(pixels, (0, max(0, n - len(pixels))))
    hectares = np.pad(hectares, (0, max(0, n - len(hectares))))
    total = int(pixels[:n].sum())
    return {
        name: {"pixels": int(pixels[i]), "share": int(pixels[i]) / total if total else 0.0,
               "area_ha": float(hectares[i])}
        for i, name in enumerate(classes)
    }


def write_preview_from_cog(labels_path: Path, classes: list[str], path: Path) -> Path:
    """The PNG quick-look, drawn from the labels COG read at reduced resolution (its
    overviews), so memory stays bounded whatever the scene size."""
    import rasterio
    import xarray as xr
    from affine import Affine
    from rasterio.enums import Resampling

    from cropscope.mapping.classify import CropMap, write_preview

    with rasterio.open(labels_path) as src:
        try:  # the map's own colours
            table = src.colormap(1)
            colours = {c: "#{:02x}{:02x}{:02x}".format(*table[i][:3])
                       for i, c in enumerate(classes) if i in table}
        except ValueError:
            colours = {}
        factor = max(1, math.ceil(max(src.height, src.width) / PREVIEW_SIDE))
        shape = (math.ceil(src.height / factor), math.ceil(src.width / factor))
        labels = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        transform = src.transform * Affine.scale(src.width / shape[1], src.height / shape[0])
    frame = xr.DataArray(labels, dims=("y", "x"),
                         attrs={"transform": tuple(float(v) for v in tuple(transform)[:6])})
    crop_map = CropMap(labels=labels, confidence=np.full(shape, np.nan, dtype=np.float32),
                       classes=classes, cube=frame)
    return write_preview(crop_map, path, colours=colours)
