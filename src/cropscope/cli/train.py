"""``cropscope train``: fit a model and write a run directory."""

from __future__ import annotations

from pathlib import Path

import click

from cropscope.cli._common import (
    SEED_TYPE,
    log,
    model_config_options,
    parse_config,
    table_columns,
    table_options,
)


@click.command()
@click.option("--dataset", default=None, help="Registered dataset name (see 'datasets list').")
@click.option("--split", default=None, help="Dataset split (e.g. train).")
@click.option("--table", type=click.Path(path_type=Path), default=None,
              help="Your own long table (CSV/Parquet) instead of --dataset.")
@click.option("--scene", "scene_path", default=None,
              help="Your own hyperspectral scene (FILE or FILE.mat:VARIABLE), with --labels; "
                   "--split blocks:B / tiles then holds out a spatial test part.")
@click.option("--labels", "labels_path", default=None,
              help="Label raster or FILE.mat:VARIABLE for --scene (0 = unlabelled).")
@click.option("--model", "model_name", required=True, help="Model name (see 'models list').")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Run directory to write.")
@click.option("--holdout", type=float, default=0.2, show_default=True,
              help="Share of samples held out for the report (0 = train on everything).")
@click.option("--seed", type=SEED_TYPE, default=0, show_default=True)
@click.option("--hierarchical", is_flag=True,
              help="Train on the class hierarchy (cascade heads for deep models, per-level "
                   "models otherwise); predictions then come on every level.")
@click.option("--taxonomy", "taxonomy_src", default=None,
              help="Class hierarchy for --hierarchical: a YAML/JSON/CSV file, a shipped "
                   "name, or 'prefixes:2,4,6' (levels from the leading characters of the "
                   "class codes; default: the one shipped with --dataset).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue an interrupted training of the same data and settings into "
                   "--out (deep models checkpoint every epoch).")
@table_options
@model_config_options
def train(
    dataset: str | None, split: str | None, table: Path | None, model_name: str, out_dir: Path,
    holdout: float, seed: int, id_col: str, time_col: str, label_col: str, bands: str | None,
    config_file: Path | None, settings: tuple[str, ...],
    scene_path: str | None = None, labels_path: str | None = None,
    hierarchical: bool = False, taxonomy_src: str | None = None, resume: bool = True,
) -> None:
    """Train a model; the run directory holds weights, config, card and metrics."""
    from cropscope.evaluation import format_metrics_table
    from cropscope.workflows import train_model

    result = train_model(
        model_name, out_dir, dataset=dataset, split=split, table=table, scene=scene_path,
        labels=labels_path, config=parse_config(config_file, settings), holdout=holdout,
        seed=seed, hierarchical=hierarchical, taxonomy=taxonomy_src, progress=True,
        resume=resume, **table_columns(id_col, time_col, label_col, bands))
    if result.metrics is not None:
        log(format_metrics_table(result.metrics))
    log(f"run directory: {result.run_dir} ({result.duration_s:.1f} s)")
