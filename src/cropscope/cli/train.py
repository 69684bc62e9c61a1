"""``cropscope train``: fit a model and write a run directory."""

from __future__ import annotations

from pathlib import Path

import click

from cropscope.cli._common import (
    attach_taxonomy,
    hierarchical_model,
    load_input,
    log,
    model_config_options,
    parse_config,
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
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--hierarchical", is_flag=True,
              help="Train on the class hierarchy (cascade heads for deep models, per-level "
                   "models otherwise); predictions then come on every level.")
@click.option("--taxonomy", "taxonomy_src", default=None,
              help="Class hierarchy for --hierarchical: a YAML/JSON/CSV file or a shipped "
                   "name (default: the one shipped with --dataset).")
@table_options
@model_config_options
def train(
    dataset: str | None, split: str | None, table: Path | None, model_name: str, out_dir: Path,
    holdout: float, seed: int, id_col: str, time_col: str, label_col: str, bands: str | None,
    config_file: Path | None, settings: tuple[str, ...],
    scene_path: str | None = None, labels_path: str | None = None,
    hierarchical: bool = False, taxonomy_src: str | None = None,
) -> None:
    """Train a model; the run directory holds weights, config, card and metrics."""
    from cropscope.evaluation import format_metrics_table
    from cropscope.training.rundir import train_run

    config = parse_config(config_file, settings)
    from cropscope.hyperspectral.scene import load_scene_input, train_scene

    scene = load_scene_input(dataset, scene_path, labels_path, table)
    if scene is not None:  # hyperspectral scene; --split is spatial (no split: all pixels)
        log(f"training {model_name} on {scene}")
        run = train_scene(model_name, scene, out_dir, split=split, config=config, seed=seed,
                          source=dataset or str(scene_path), progress=True)
        if run.metrics is not None:
            log(format_metrics_table(run.metrics))
        log(f"run directory: {run.run_dir} ({run.duration_s:.1f} s)")
        return
    ts, source = load_input(dataset, table, split, id_col, time_col, label_col, bands)
    if hierarchical:
        from cropscope.models.registry import get_model_class

        if "seed" in get_model_class(model_name).default_config():
            config.setdefault("seed", seed)
        ts = attach_taxonomy(ts, dataset, taxonomy_src)
        model_name, config = hierarchical_model(model_name, config)
    log(f"training {model_name} on {source}: {ts}")
    result = train_run(ts, model_name, out_dir, config=config, holdout=holdout, seed=seed,
                       source=source, progress=True)
    if result.metrics is not None:
        log(format_metrics_table(result.metrics))
    log(f"run directory: {result.run_dir} ({result.duration_s:.1f} s)")
