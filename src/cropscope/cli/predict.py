"""``cropscope predict``: apply a run directory to samples or to an image cube."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cropscope.cli._common import log

_TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
#: the longest side of the PNG quick-look, in pixels
_PREVIEW_SIDE = 1024


def _is_table(path: Path) -> bool:
    return path.name.lower().endswith(_TABLE_SUFFIXES)


@click.command()
@click.option("--model", "run_dir", type=click.Path(path_type=Path), required=True,
              help="Run directory written by 'cropscope train'.")
@click.option("--input", "input_path", type=click.Path(path_type=Path), required=True,
              help="A long table (CSV/Parquet) of samples, or an image cube: a directory "
                   "or glob of single-date rasters.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), required=True,
              help="Output: a table (CSV/Parquet) for samples, a GeoTIFF for a cube.")
@click.option("--id-col", default="sample_id", show_default=True)
@click.option("--time-col", default="date", show_default=True)
@click.option("--scale", type=float, default=None,
              help="Scale factor applied to cube values (default: from file metadata).")
@click.option("--tile", type=int, default=512, show_default=True,
              help="Cube: window size in pixels (memory grows with tile^2 x dates x bands).")
@click.option("--halo", type=int, default=None,
              help="Cube: context pixels read around each window (default: what the model "
                   "needs: 0 for pixel models, the patch radius for patch models, the "
                   "model's context for scene models, whose overlaps are blended).")
@click.option("--batch-size", type=int, default=65536, show_default=True,
              help="Cube: pixels per predict call.")
@click.option("--workers", type=int, default=None,
              help="Cube: predict on a local Dask cluster of this many processes.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Cube: predict on a running Dask cluster (e.g. tcp://host:8786).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Cube: continue an interrupted job for the same output and settings.")
@click.option("--mask-band", default=None,
              help="Cube: a per-date validity band (e.g. SCL); invalid pixels become nodata.")
@click.option("--variables", default=None,
              help="NetCDF/Zarr cube: the variables to read as bands (a name prefix with *, "
                   "e.g. 'S2-L2A-*').")
@click.option("--nodata", type=float, default=None,
              help="Cube: the nodata value when the files do not declare one.")
@click.option("--parcels", "parcels_path", type=click.Path(path_type=Path), default=None,
              help="Cube: parcel polygons (GeoPackage, GeoParquet, Shapefile, GeoJSON) to "
                   "summarise per parcel.")
@click.option("--parcel-mode", type=click.Choice(["aggregate", "mean", "median"]),
              default="aggregate", show_default=True,
              help="aggregate: mean of the map's pixel probabilities per parcel; "
                   "mean/median: the model classifies each parcel's mean/median series "
                   "(a parcel-level model; no pixel map is made).")
@click.option("--parcels-out", type=click.Path(path_type=Path), default=None,
              help="Parcel output (.parquet or .gpkg; default OUT_parcels.parquet).")
@click.option("--id-column", "parcel_id", default=None,
              help="Parcels: the id column (default: parcel_id, created when absent).")
def predict(
    run_dir: Path, input_path: Path, out_path: Path, id_col: str, time_col: str,
    scale: float | None, tile: int, halo: int | None, batch_size: int, workers: int | None,
    scheduler: str | None, resume: bool, mask_band: str | None, variables: str | None,
    nodata: float | None, parcels_path: Path | None, parcel_mode: str,
    parcels_out: Path | None, parcel_id: str | None,
) -> None:
    """Predict classes for samples (table) or for every pixel of a cube (map).

    A cube is mapped window by window (resumable) into Cloud-Optimized GeoTIFFs: OUT
    (labels), OUT_probabilities and OUT_uncertainty, plus a PNG quick-look and a JSON
    summary of the area per class. With --parcels, a parcel table (class, probability,
    pixel count, per-class probabilities) is written too.
    """
    from cropscope.errors import DataError
    from cropscope.training.rundir import load_run

    model = load_run(run_dir)
    if _is_table(input_path):
        if workers is not None or scheduler is not None:
            raise DataError("--workers/--scheduler apply to image cubes, not to tables")
        if parcels_path is not None:
            raise DataError("--parcels applies to image cubes, not to tables")
        _predict_table(model, input_path, out_path, id_col, time_col)
        return
    from cropscope.data.readers.open import open_cube_source

    options: dict[str, Any] = {"scale": scale}
    if variables is not None:
        options["variables"] = variables
    if nodata is not None:
        options["nodata"] = nodata
    source = open_cube_source(input_path, mask_band=mask_band, **options)
    targets = output_paths(out_path)
    parcels_out = parcels_out or targets["parcels"]
    if parcels_path is not None and parcel_mode != "aggregate":
        _predict_parcel_series(model, source, parcels_path, parcels_out, stat=parcel_mode,
                               id_column=parcel_id)  # fmt: skip
        return
    _predict_cube(model, source, input_path, out_path, tile=tile, halo=halo,
                  batch_size=batch_size, workers=workers, scheduler=scheduler,
                  resume=resume)  # fmt: skip
    if parcels_path is not None:
        from cropscope.mapping.parcels import aggregate_parcels, write_parcels

        table = aggregate_parcels(parcels_path, targets["probabilities"],
                                  labels_tif=targets["labels"], id_column=parcel_id)
        write_parcels(table, parcels_out)
        log(f"{len(table)} parcels ({int((table['pixel_count'] > 0).sum())} with pixels) "
            f"written to {parcels_out}")


def _predict_table(model, input_path: Path, out_path: Path, id_col: str, time_col: str) -> None:
    import pandas as pd

    from cropscope.data.readers.table import read_table
    from cropscope.io import atomic_path

    ts = read_table(input_path, id_col=id_col, time_col=time_col, label_col=None,
                    bands=model.card.bands)
    proba = model.predict_proba(ts)
    classes = model.classes
    out = pd.DataFrame({id_col: ts.ids,
                        "prediction": [classes[i] for i in model.predict(ts)],
                        "confidence": proba.max(axis=1)})
    tax = model.taxonomy
    if tax is not None:  # trained on a hierarchy: one (consistent) prediction per level
        levels = model.predict_levels(ts)
        for k, level in enumerate(tax.levels):
            names = tax.classes(k)
            out[f"prediction@{level}"] = [names[i] for i in levels[:, k]]
    for i, name in enumerate(classes):
        out[f"p_{name}"] = proba[:, i]
    with atomic_path(out_path) as tmp:
        if out_path.name.lower().endswith((".parquet", ".pq")):
            out.to_parquet(tmp, index=False)
        else:
            out.to_csv(tmp, index=False, compression="gzip" if out_path.suffix == ".gz" else None)
    log(f"{len(out)} predictions written to {out_path}")


def output_paths(out_path: Path) -> dict[str, Path]:
    """Where ``predict`` delivers a cube's map: ``map.tif`` → labels ``map.tif``,
    ``map_probabilities.tif``, ``map_uncertainty.tif``, ``map.png``, ``map_areas.json``."""
    suffix = out_path.suffix or ".tif"
    stem = out_path.name[: -len(out_path.suffix)] if out_path.suffix else out_path.name
    return {
        "labels": out_path.with_name(stem + suffix),
        "probabilities": out_path.with_name(f"{stem}_probabilities{suffix}"),
        "uncertainty": out_path.with_name(f"{stem}_uncertainty{suffix}"),
        "preview": out_path.with_name(f"{stem}.png"),
        "areas": out_path.with_name(f"{stem}_areas.json"),
        "parcels": out_path.with_name(f"{stem}_parcels.parquet"),
    }


def _predict_parcel_series(
    model: Any, source: Any, parcels_path: Path, out: Path, *, stat: str,
    id_column: str | None,
) -> None:  # fmt: skip
    from cropscope.mapping.parcels import predict_parcels, write_parcels

    table = predict_parcels(model, parcels_path, source, stat=stat, id_column=id_column)
    write_parcels(table, out)
    log(f"{len(table)} parcels classified from their {stat} series, written to {out}")


def _predict_cube(
    model: Any, source: Any, input_path: Path, out_path: Path, *, tile: int,
    halo: int | None, batch_size: int, workers: int | None, scheduler: str | None, resume: bool,
) -> None:  # fmt: skip
    import os
    import shutil

    from cropscope.io import write_json
    from cropscope.mapping import run_map_job

    log(f"cube: {len(source.times)} dates x {len(source.bands)} bands x "
        f"{source.height} x {source.width} pixels from {input_path}")  # fmt: skip
    targets = output_paths(out_path)
    # the job's journal and intermediates live next to the output until it is delivered
    work = targets["labels"].with_name(f".{targets['labels'].name}.mapjob")
    result = run_map_job(model, source, work, tile=tile, halo=halo, batch_size=batch_size,
                         progress=True, resume=resume, workers=workers,
                         scheduler=scheduler)  # fmt: skip
    if result.n_resumed:
        log(f"resumed from {work}: {result.n_resumed} of {result.n_windows} windows were done")
    for name in ("labels", "probabilities", "uncertainty"):
        os.replace(result.paths[name], targets[name])  # same folder: atomic
    preview = _write_preview(targets["labels"], result.classes, targets["preview"])
    areas = _class_areas(targets["labels"], result.classes)
    write_json(targets["areas"], areas)
    shutil.rmtree(work, ignore_errors=True)
    for name, a in areas.items():
        log(f"  {name}: {a['pixels']} pixels, {a['share']:.1%}, {a['area_ha']:,.1f} ha")
    log(f"map written to {targets['labels']} (+ {targets['probabilities'].name}, "
        f"{targets['uncertainty'].name}, {preview.name}, {targets['areas'].name})")  # fmt: skip


def _class_areas(labels_path: Path, classes: list[str]) -> dict[str, dict[str, float]]:
    """Pixels, share and hectares per class, counted block by block from the labels COG."""
    import numpy as np
    import rasterio

    counts = np.zeros(256, dtype=np.int64)
    with rasterio.open(labels_path) as src:
        pixel_ha = abs(src.transform.a * src.transform.e) / 1e4
        for _, window in src.block_windows(1):
            counts += np.bincount(src.read(1, window=window).ravel(), minlength=256)
    total = int(counts[: len(classes)].sum())
    return {
        name: {"pixels": int(counts[i]), "share": int(counts[i]) / total if total else 0.0,
               "area_ha": int(counts[i]) * pixel_ha}
        for i, name in enumerate(classes)
    }  # fmt: skip


def _write_preview(labels_path: Path, classes: list[str], path: Path) -> Path:
    """The PNG quick-look, drawn from the labels COG read at reduced resolution (its
    overviews), so memory stays bounded whatever the scene size."""
    import math

    import numpy as np
    import rasterio
    import xarray as xr
    from affine import Affine
    from rasterio.enums import Resampling

    from cropscope.mapping import CropMap, write_preview

    with rasterio.open(labels_path) as src:
        factor = max(1, math.ceil(max(src.height, src.width) / _PREVIEW_SIDE))
        shape = (math.ceil(src.height / factor), math.ceil(src.width / factor))
        labels = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        transform = src.transform * Affine.scale(src.width / shape[1], src.height / shape[0])
    frame = xr.DataArray(labels, dims=("y", "x"),
                         attrs={"transform": tuple(float(v) for v in tuple(transform)[:6])})
    crop_map = CropMap(labels=labels, confidence=np.full(shape, np.nan, dtype=np.float32),
                       classes=classes, cube=frame)  # fmt: skip
    return write_preview(crop_map, path)
