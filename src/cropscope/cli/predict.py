"""``cropscope predict``: apply a run directory to samples or to an image cube."""

from __future__ import annotations

from pathlib import Path

import click

from cropscope.cli._common import POSITIVE_INT, log


@click.command()
@click.option("--model", "run_dir", type=click.Path(path_type=Path), required=True,
              help="Run directory: 'cropscope train', 'segment train' or 'h2crop train'.")
@click.option("--input", "input_path", type=click.Path(path_type=Path), required=True,
              help="A long table (CSV/Parquet) of samples, or an image cube: a directory "
                   "or glob of single-date rasters, a NetCDF/Zarr cube, a STAC catalog or a "
                   "STAC API search file ('cropscope cube build --save-search').")
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
@click.option("--batch-size", type=POSITIVE_INT, default=65536, show_default=True,
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
@click.option("--bands", default=None,
              help="Cube: comma-separated cube band names in the model's band order, when "
                   "the cube names them differently (e.g. S2-L2A-B02,... for B02,...).")
@click.option("--composite", is_flag=True, default=False,
              help="Cube: median-composite the cube to the model's time grid first.")
@click.option("--device", default=None,
              help="Deep models: auto (CUDA when present), cpu, cuda or cuda:N (default: "
                   "cpu; AMP on CUDA).")
@click.option("--inference-batch", type=int, default=None, metavar="N",
              help="Deep models: samples (segmentation: windows) per forward pass "
                   "(default: sized to the device's memory; halved on out-of-memory).")
@click.option("--colours", "colours_path", type=click.Path(path_type=Path), default=None,
              help="Cube: JSON/YAML file of class colours {class: '#rrggbb'} (default: "
                   "colours keyed to the class names).")
def predict(
    run_dir: Path, input_path: Path, out_path: Path, id_col: str, time_col: str,
    scale: float | None, tile: int, halo: int | None, batch_size: int, workers: int | None,
    scheduler: str | None, resume: bool, mask_band: str | None, variables: str | None,
    nodata: float | None, parcels_path: Path | None, parcel_mode: str,
    parcels_out: Path | None, parcel_id: str | None, bands: str | None, composite: bool,
    colours_path: Path | None = None, device: str | None = None,
    inference_batch: int | None = None,
) -> None:
    """Predict classes for samples (table) or for every pixel of a cube (map).

    A cube is mapped window by window (resumable) into Cloud-Optimized GeoTIFFs: OUT
    (labels), OUT_probabilities and OUT_uncertainty, plus a PNG quick-look and a JSON
    summary of the area per class. With --parcels, a parcel table (class, probability,
    pixel count, per-class probabilities) is written too.
    """
    from cropscope.workflows import predict_run

    result = predict_run(
        run_dir, input_path, out_path, id_col=id_col, time_col=time_col, scale=scale,
        variables=variables, nodata=nodata, mask_band=mask_band,
        bands=[b.strip() for b in bands.split(",") if b.strip()] if bands else None,
        composite=composite, tile=tile, halo=halo, batch_size=batch_size, workers=workers,
        scheduler=scheduler, resume=resume, parcels=parcels_path, parcel_mode=parcel_mode,
        parcels_out=parcels_out, parcel_id=parcel_id, colours=colours_path, device=device,
        inference_batch=inference_batch)
    if result.kind == "table":
        log(f"{result.n_rows} predictions written to {out_path}")
    elif result.kind == "parcels":
        log(f"{result.n_rows} parcels classified from their {parcel_mode} series, written "
            f"to {result.paths['parcels']}")
    else:
        product = result.product
        if product.n_resumed:
            log(f"resumed: {product.n_resumed} of {product.n_windows} windows were done")
        for name, a in product.areas.items():
            log(f"  {name}: {a['pixels']} pixels, {a['share']:.1%}, {a['area_ha']:,.1f} ha")
        if not any(a["pixels"] for a in product.areas.values()):
            log("warning: no pixel was classified: every pixel of the input is nodata (NaN, "
                "its nodata value or masked); check --nodata, --scale, --mask-band and the "
                "input's extent")
        extra = ", ".join(p.name for k, p in product.paths.items() if k != "labels")
        log(f"map written to {product.paths['labels']} (+ {extra})")
    for message in result.messages:
        log(message)
