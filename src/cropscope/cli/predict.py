"""``cropscope predict``: apply a run directory to samples or to an image cube."""

from __future__ import annotations

from pathlib import Path

import click

from cropscope.cli._common import log

_TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


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
def predict(
    run_dir: Path, input_path: Path, out_path: Path, id_col: str, time_col: str,
    scale: float | None,
) -> None:
    """Predict classes for samples (table) or for every pixel of a cube (map)."""
    from cropscope.training.rundir import load_run

    model = load_run(run_dir)
    if _is_table(input_path):
        _predict_table(model, input_path, out_path, id_col, time_col)
    else:
        _predict_cube(model, input_path, out_path, scale)


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


def _predict_cube(model, input_path: Path, out_path: Path, scale: float | None) -> None:
    from cropscope.data.readers.cube import read_cube
    from cropscope.mapping import classify_cube, write_map, write_preview

    cube = read_cube(input_path, scale=scale)
    log(f"cube {dict(cube.sizes)} from {input_path}")
    crop_map = classify_cube(model, cube, progress=True)
    paths = write_map(crop_map, out_path)
    preview = write_preview(crop_map, out_path.with_suffix(".png"))
    log(f"map written to {paths['labels']} (+ {paths['confidence'].name}, {preview.name})")
