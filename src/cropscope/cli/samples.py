"""``cropscope samples extract``: training samples from an image cube and field labels.

A thin layer over :func:`cropscope.data.extract.extract_samples` (a long table) and
:func:`cropscope.data.extract.extract_label_patches` (``--patch-size``: a folder of
``.h5`` patches). The cube is opened by the one cube-opening function every command uses
(:func:`~cropscope.data.readers.open.open_cube_source`), so any source it opens works
here. Results are written atomically: a failure leaves nothing at ``--out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cropscope.cli._common import SEED_TYPE, comma_list, log
from cropscope.errors import DataError


@click.group()
def samples() -> None:
    """Training samples from imagery and field labels."""


def _cube_options(mask_band: str | None, mask_invalid: str | None, variables: str | None,
                  bands: str | None, nodata: float | None, scale: float | None
                  ) -> dict[str, Any]:
    """Keyword arguments of :func:`~cropscope.data.readers.open.open_cube_source`."""
    options: dict[str, Any] = {}
    if mask_band is not None:
        options["mask_band"] = mask_band
    if mask_invalid is not None:
        if mask_band is None:
            raise DataError("--mask-invalid needs --mask-band")
        try:
            options["invalid"] = [int(v) for v in mask_invalid.split(",") if v.strip()]
        except ValueError:
            raise DataError(f"--mask-invalid {mask_invalid!r}: give integer classes, e.g. "
                            "1 or 3,8,9,10") from None
        if not options["invalid"]:
            raise DataError("--mask-invalid lists no class")
    for key, value in (("variables", variables), ("nodata", nodata), ("scale", scale)):
        if value is not None:
            options[key] = value
    band_list = comma_list(bands)
    if band_list is not None:
        options["bands"] = band_list
    return options


@samples.command("extract")
@click.option("--cube", "cube", required=True,
              help="Image cube: a folder or glob of rasters, a NetCDF/Zarr cube or a STAC "
                   "catalog (anything 'predict --input' opens).")
@click.option("--labels", "labels_path", type=click.Path(path_type=Path), required=True,
              help="Points or polygons with a label: GeoPackage, GeoParquet, Shapefile, "
                   "GeoJSON, FlatGeobuf, or CSV with lon/lat (EPSG:4326) or x/y columns.")
@click.option("--label-column", required=True, help="Column holding the class label.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), required=True,
              help="Output table (.parquet, .csv, .csv.gz, .tsv), or with --patch-size a new "
                   "folder of .h5 patches.")
@click.option("--mode", type=click.Choice(["pixels", "mean", "median", "nearest"]),
              default=None,
              help="pixels: every pixel centre inside each polygon (default for polygons); "
                   "mean/median: one series per polygon; nearest: the pixel holding each "
                   "point (default for points).")
@click.option("--buffer", type=float, default=0.0, show_default=True, metavar="METRES",
              help="Shrink polygons by this many metres first (leaves mixed edge pixels out).")
@click.option("--max-pixels", type=int, default=None, metavar="N",
              help="pixels mode: at most N pixels per polygon, drawn at random (--seed).")
@click.option("--seed", type=SEED_TYPE, default=0, show_default=True)
@click.option("--id-column", default=None,
              help="Unique feature id, written as the group column polygon_id/point_id "
                   "(default: the row number).")
@click.option("--labels-crs", default=None,
              help="CRS of labels whose file declares none (e.g. EPSG:32633), or of CSV x/y.")
@click.option("--layer", default=None, help="GeoPackage layer (when it holds several).")
@click.option("--skip-outside", is_flag=True,
              help="Leave out (and count) labels outside the cube instead of failing.")
@click.option("--all-touched", is_flag=True,
              help="Every pixel a polygon touches, not only those whose centre it holds.")
@click.option("--keep-empty", is_flag=True,
              help="Keep series without any valid observation (dropped by default).")
@click.option("--patch-size", type=int, default=None, metavar="P",
              help="Segmentation patches: every P x P tile of the cube grid holding a "
                   "labelled pixel, as .h5 files in the --out folder (label -1 = none).")
@click.option("--source-name", default="S2", show_default=True,
              help="--patch-size: the name of the image array in each .h5 file.")
@click.option("--window", "window_size", type=int, default=512, show_default=True,
              help="Cube tile read at a time, in pixels.")
@click.option("--mask-band", default=None,
              help="Cube: a per-date validity band (e.g. SCL, CLM); masked observations "
                   "become gaps.")
@click.option("--mask-invalid", default=None, metavar="CLASSES",
              help="Classes of --mask-band that are invalid, comma-separated (default: the "
                   "Sentinel-2 SCL no-data/cloud/shadow/cirrus classes; e.g. 1 for a 0/1 "
                   "cloud mask).")
@click.option("--variables", default=None,
              help="NetCDF/Zarr cube: the variables to read as bands (e.g. 'S2-L2A-*').")
@click.option("--bands", default=None,
              help="STAC cube: comma-separated asset keys to read as bands.")
@click.option("--nodata", type=float, default=None,
              help="Cube: the nodata value when the files do not declare one.")
@click.option("--scale", type=float, default=None,
              help="Cube: scale factor applied to the values (default: from metadata).")
def extract(
    cube: str, labels_path: Path, label_column: str, out_path: Path, mode: str | None,
    buffer: float, max_pixels: int | None, seed: int, id_column: str | None,
    labels_crs: str | None, layer: str | None, skip_outside: bool, all_touched: bool,
    keep_empty: bool, patch_size: int | None, source_name: str, window_size: int,
    mask_band: str | None, mask_invalid: str | None, variables: str | None,
    bands: str | None, nodata: float | None, scale: float | None,
) -> None:
    """Extract labelled time series (or segmentation patches) from an image cube.

    Each polygon's pixels (or mean/median series, or each point's pixel) become samples of
    a long table with the polygon id as a group column (use it for grouped folds:
    'cropscope evaluate --table OUT --group polygon_id'), pixel coordinates (cube CRS and
    lon/lat) and the cube's dates; masked observations are gaps.
    """
    from cropscope.data.extract import (
        check_samples_path,
        extract_label_patches,
        extract_samples,
        write_samples,
    )

    options = _cube_options(mask_band, mask_invalid, variables, bands, nodata, scale)
    common: dict[str, Any] = {
        "label_column": label_column, "id_column": id_column, "labels_crs": labels_crs,
        "layer": layer, "skip_outside": skip_outside, "all_touched": all_touched,
        "progress": True,
    }  # fmt: skip
    if patch_size is not None:
        if mode is not None or buffer or max_pixels is not None or keep_empty:
            raise DataError("--patch-size writes label patches: --mode, --buffer, "
                            "--max-pixels and --keep-empty do not apply")
        result = extract_label_patches(cube, labels_path, out_path, patch_size=patch_size,
                                       source_name=source_name, **common, **options)
        log(f"{result.n_patches} patches of {patch_size} x {patch_size} pixels "
            f"({result.n_labelled} labelled pixels, classes {', '.join(result.classes)}) "
            f"written to {result.folder}")
        return
    check_samples_path(out_path)
    extraction = extract_samples(cube, labels_path, mode=mode, buffer=buffer,
                                 max_pixels=max_pixels, seed=seed, keep_empty=keep_empty,
                                 window_size=window_size, **common, **options)
    ts = extraction.samples
    write_samples(ts, out_path)
    what = "points" if extraction.kind == "points" else "polygons"
    log(f"{ts.n_samples} samples ({extraction.mode}) from {extraction.n_used} of "
        f"{extraction.n_features} {what}, {ts.n_times} dates x {ts.n_bands} bands, "
        f"{ts.n_classes} classes; group column {extraction.group_column}; written to "
        f"{out_path}")
