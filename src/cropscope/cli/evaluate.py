"""``cropscope evaluate``: cross-validation or a fixed train/test split."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cropscope.cli._common import (
    hierarchy_options,
    model_config_options,
    parse_config,
    table_columns,
    table_options,
)


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
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--group", default=None,
              help="Metadata column for leave-group-out folds (e.g. region, year).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Directory for the report (metrics.json, CSV, PNG).")
@table_options
@model_config_options
@hierarchy_options
def evaluate(
    dataset: str | None, split: str | None, table: Path | None, train_table: Path | None,
    test_table: Path | None, model_name: str, cv: int, seed: int, group: str | None,
    scene_path: str | None, labels_path: str | None,
    as_json: bool, out_dir: Path | None, id_col: str, time_col: str, label_col: str,
    bands: str | None, config_file: Path | None, settings: tuple[str, ...],
    hierarchical: bool, per_level: bool, taxonomy_src: str | None, decoding: str,
    background: str | None,
) -> None:
    """Evaluate a model by k-fold (or leave-group-out) CV, or on a fixed split."""
    from cropscope.evaluation import format_levels_table, format_metrics_table
    from cropscope.workflows import evaluate_model

    result = evaluate_model(
        model_name, dataset=dataset, split=split, table=table, train_table=train_table,
        test_table=test_table, scene=scene_path, labels=labels_path,
        config=parse_config(config_file, settings), cv=cv, seed=seed, group=group,
        hierarchical=hierarchical, levels=per_level, taxonomy=taxonomy_src, decoding=decoding,
        background=background, out_dir=out_dir, progress=True,
        **table_columns(id_col, time_col, label_col, bands))
    if as_json:
        click.echo(json.dumps(result.to_dict(), default=float))
    else:
        click.echo(format_metrics_table(result.metrics))
        if result.hierarchy:
            click.echo(format_levels_table(result.hierarchy))
