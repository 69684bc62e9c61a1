"""``cropscope evaluate``: cross-validation (random, leave-group-out or spatial blocks) or a
fixed train/test split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cropscope.cli._common import (
    SEED_TYPE,
    hierarchy_options,
    model_config_options,
    parse_config,
    read_options,
    reader_options,
    table_columns,
    table_options,
    warnings_as_lines,
)


def _fold_lines(result: Any) -> list[str]:
    """One line per fold: sizes, scores, the classes its training part lacks, test counts."""
    lines = ["fold  n_train  n_test  OA     macro-F1  missing in train  test class counts"]
    for f in result.fold_metrics:
        missing = ", ".join(f.get("missing_in_train", [])) or "-"
        counts = ", ".join(f"{c} {n}" for c, n in f.get("test_class_counts", {}).items())
        lines.append(f"{f['fold']:>4}  {f['n_train']:>7}  {f['n_test']:>6}  "
                     f"{f['overall_accuracy']:.3f}  {f['macro_f1']:>8.3f}  {missing:<16}  "
                     f"{counts}")
    return lines


@click.command()
@click.option("--dataset", default=None, help="Registered dataset name.")
@click.option("--split", default=None, help="Dataset split to use.")
@click.option("--table", type=click.Path(path_type=Path), default=None,
              help="Your own long table (CSV/Parquet).")
@click.option("--train-table", type=click.Path(path_type=Path), default=None,
              help="Fixed split: training table (with --test-table).")
@click.option("--test-table", type=click.Path(path_type=Path), default=None,
              help="Fixed split: test table (with --train-table).")
@click.option("--scene", "scene_path", default=None,
              help="Your own hyperspectral scene (FILE, or FILE.mat:VARIABLE), with --labels; "
                   "--split is then spatial: blocks:B[:random[:F]] (default blocks:16).")
@click.option("--labels", "labels_path", default=None,
              help="Label raster or FILE.mat:VARIABLE for --scene (0 = unlabelled).")
@click.option("--model", "model_name", required=True, help="Model name (see 'models list').")
@click.option("--cv", type=int, default=5, show_default=True, help="Number of folds.")
@click.option("--seed", type=SEED_TYPE, default=0, show_default=True)
@click.option("--group", default=None,
              help="Metadata column for leave-group-out folds (e.g. region, year).")
@click.option("--spatial-blocks", default=None, metavar="SIZE",
              help="Group the folds by square blocks of the sample coordinates: degrees "
                   "('0.5deg') or metres ('10km', '5000m').")
@click.option("--strict", is_flag=True,
              help="A fold whose training part lacks a class is an error, not a warning.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Directory for the report (metrics.json, CSV, PNG).")
@table_options
@reader_options
@model_config_options
@hierarchy_options
def evaluate(
    dataset: str | None, split: str | None, table: Path | None, train_table: Path | None,
    test_table: Path | None, model_name: str, cv: int, seed: int, group: str | None,
    spatial_blocks: str | None, strict: bool,
    scene_path: str | None, labels_path: str | None,
    as_json: bool, out_dir: Path | None, id_col: str, time_col: str, label_col: str,
    bands: str | None, nodata: str | None, season_start: str | None, no_align: bool,
    time_step: str | None, wide: str | None, drop_empty: bool, config_file: Path | None,
    settings: tuple[str, ...], hierarchical: bool, per_level: bool, taxonomy_src: str | None,
    decoding: str, background: str | None,
) -> None:
    """Evaluate a model by k-fold, leave-group-out or spatial-block CV, or on a fixed split.

    Every CV fold reports its class counts; a fold whose training part lacks a class is a
    warning naming it (an error with --strict).
    """
    from cropscope.evaluation import format_levels_table, format_metrics_table
    from cropscope.workflows import evaluate_model

    with warnings_as_lines():
        result = evaluate_model(
            model_name, dataset=dataset, split=split, table=table, train_table=train_table,
            test_table=test_table, scene=scene_path, labels=labels_path,
            config=parse_config(config_file, settings), cv=cv, seed=seed, group=group,
            hierarchical=hierarchical, levels=per_level, taxonomy=taxonomy_src,
            decoding=decoding, background=background, out_dir=out_dir, progress=True,
            spatial_blocks=spatial_blocks, strict=strict,
            table_options=read_options(nodata, season_start, no_align, time_step, wide,
                                       drop_empty),
            **table_columns(id_col, time_col, label_col, bands))
    if as_json:
        click.echo(json.dumps(result.to_dict(), default=float))
    else:
        click.echo(format_metrics_table(result.metrics))
        if result.fold_metrics and (group or spatial_blocks or any(
                f.get("missing_in_train") for f in result.fold_metrics)):
            click.echo("\n".join(_fold_lines(result)))
        if result.hierarchy:
            click.echo(format_levels_table(result.hierarchy))
