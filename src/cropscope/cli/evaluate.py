"""``cropscope evaluate``: cross-validation or a fixed train/test split."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cropscope.cli._common import (
    attach_taxonomy,
    hierarchical_model,
    hierarchy_options,
    load_input,
    load_table,
    log,
    model_config_options,
    parse_config,
    table_options,
)
from cropscope.errors import DataError


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
    from cropscope.evaluation import (
        cross_validate,
        evaluate_split,
        format_metrics_table,
        write_report,
    )
    from cropscope.evaluation.hierarchical import format_levels_table
    from cropscope.models.registry import create_model, get_model_class

    config = parse_config(config_file, settings)
    if "seed" in get_model_class(model_name).default_config():
        config.setdefault("seed", seed)
    levels = hierarchical or per_level
    if hierarchical:
        model_name, config = hierarchical_model(model_name, config)
    create_model(model_name, **config)  # fail fast on a bad option
    level_args = {"levels": levels, "decoding": decoding, "background": background}

    def factory():
        return create_model(model_name, **config)

    if (train_table is None) != (test_table is None):
        raise DataError("--train-table and --test-table go together")
    from cropscope.hyperspectral.scene import evaluate_scene, load_scene_input

    scene = load_scene_input(dataset, scene_path, labels_path, table or train_table)
    if scene is not None:  # hyperspectral scene: spatially disjoint split (--split)
        log(f"scene evaluation of {model_name} on {scene}")
        result = evaluate_scene(model_name, scene, split, seed=seed, config=config, progress=True)
    elif train_table is not None and test_table is not None:
        if dataset or table:
            raise DataError("use either --train-table/--test-table or --dataset/--table")
        train = load_table(train_table, id_col, time_col, label_col, bands)
        test = load_table(test_table, id_col, time_col, label_col, bands)
        if levels:
            train = attach_taxonomy(train, None, taxonomy_src)
            test = attach_taxonomy(test, None, taxonomy_src)
        log(f"fixed split: train {train} / test {test}")
        result = evaluate_split(factory, train, test, **level_args)
    else:
        ts, source = load_input(dataset, table, split, id_col, time_col, label_col, bands)
        if levels:
            ts = attach_taxonomy(ts, dataset, taxonomy_src)
        log(f"{cv}-fold CV of {model_name} on {source}: {ts}"
            + (f", leave-{group}-out" if group else ""))
        result = cross_validate(factory, ts, cv=cv, seed=seed, group=group, progress=True,
                                **level_args)
    result.config.update({"model": model_name, "model_config": config})
    if out_dir is not None:
        write_report(result, out_dir)
        log(f"report written to {out_dir}")
    if as_json:
        click.echo(json.dumps(result.to_dict(), default=float))
    else:
        click.echo(format_metrics_table(result.metrics))
        if result.hierarchy:
            click.echo(format_levels_table(result.hierarchy))
