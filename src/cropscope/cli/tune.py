"""``cropscope tune``: Optuna search of a model's options, scored by nested cross-validation,
with the best configuration written as a run (see :mod:`cropscope.training.tuning`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cropscope.cli._common import (
    SEED_TYPE,
    log,
    model_config_options,
    parse_config,
    table_columns,
    table_options,
)


def _read_space(path: Path | None) -> dict[str, Any] | None:
    from cropscope.errors import ModelError
    from cropscope.io import read_user_text

    if path is None:
        return None
    try:
        space = json.loads(read_user_text(path, "search space"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"search space {path} is not valid JSON: {exc}") from None
    if not isinstance(space, dict):
        raise ModelError(f"search space {path} must be a JSON object (option -> range)")
    return space


@click.command()
@click.option("--dataset", default=None, help="Registered dataset name (see 'datasets list').")
@click.option("--split", default=None, help="Dataset split to use.")
@click.option("--table", type=click.Path(path_type=Path), default=None,
              help="Your own long table (CSV/Parquet) instead of --dataset.")
@click.option("--scene", "scene_path", default=None,
              help="Your own hyperspectral scene (FILE or FILE.mat:VARIABLE), with --labels; "
                   "tuned by spatial CV inside the training region of --split (blocks:B, "
                   "tiles), scored once on its test region.")
@click.option("--labels", "labels_path", default=None,
              help="Label raster or FILE.mat:VARIABLE for --scene (0 = unlabelled).")
@click.option("--model", "model_name", required=True, help="Model name (see 'models list').")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Run directory of the best configuration; the Optuna studies are kept "
                   "in it (.study.db), so the same command resumes.")
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True,
              help="Trials per study (one study per outer fold, and a final one).")
@click.option("--cv", type=int, default=5, show_default=True,
              help="Outer folds: the nested-CV figure is scored on them (tables; a scene's "
                   "test region is its split's).")
@click.option("--inner-cv", type=int, default=3, show_default=True,
              help="Inner folds scoring each trial (inside an outer training part).")
@click.option("--seed", type=SEED_TYPE, default=0, show_default=True)
@click.option("--group", default=None,
              help="Metadata column (parcel, region) no fold splits, at both levels.")
@click.option("--metric", type=click.Choice(["overall_accuracy", "macro_f1"]),
              default="overall_accuracy", show_default=True, help="Score to maximise.")
@click.option("--space", "space_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="JSON search space replacing the built-in one "
                                 "(option -> {type, low, high, log, step} or {choices}).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue the studies stored in --out (refused when the data or settings "
                   "changed); --no-resume starts over.")
@click.option("--prune/--no-prune", default=True, show_default=True,
              help="Stop trials whose inner-CV score trails the median (after 5 trials).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@table_options
@model_config_options
def tune(
    dataset: str | None, split: str | None, table: Path | None, model_name: str, out_dir: Path,
    trials: int, cv: int, inner_cv: int, seed: int, group: str | None, metric: str,
    space_file: Path | None, resume: bool, prune: bool, as_json: bool, id_col: str,
    time_col: str, label_col: str, bands: str | None, config_file: Path | None,
    settings: tuple[str, ...], scene_path: str | None = None, labels_path: str | None = None,
) -> None:
    """Tune a model's options (Optuna TPE); report the nested-CV figure and write the best
    configuration, trained on every sample, as a run. On a hyperspectral scene (a scene
    dataset, or --scene/--labels) the trials are scored by spatial CV inside the training
    region of --split and the best configuration once on its test region."""
    from cropscope.data.samples import load_samples, sample_source
    from cropscope.hyperspectral.datasets import load_scene_input
    from cropscope.training.tuning import tune_model

    config = parse_config(config_file, settings)
    space = _read_space(space_file)
    scene = load_scene_input(dataset, scene_path, labels_path, table)
    if scene is not None:
        _tune_scene(scene, model_name, out_dir, source=dataset or str(scene_path),
                    split=split, config=config, space=space, trials=trials,
                    inner_cv=inner_cv, seed=seed, group=group, metric=metric, resume=resume,
                    prune=prune, as_json=as_json)
        return
    ts = load_samples(dataset, table, split=split, **table_columns(id_col, time_col,
                                                                   label_col, bands))
    source = sample_source(dataset, table, split)
    log(f"tuning {model_name} on {source}: {ts}; {trials} trials x ({cv} outer folds + final), "
        f"{inner_cv}-fold inner CV")
    result = tune_model(ts, model_name, out_dir, config=config, space=space, trials=trials,
                        cv=cv, inner_cv=inner_cv, seed=seed, group=group, metric=metric,
                        resume=resume, prune=prune, source=source, progress=True)
    report = result.report
    if as_json:
        click.echo(json.dumps(report, default=float))
        return
    nested, inner = report["nested"], report["inner_best"]
    click.echo(f"nested CV ({report['cv']} outer folds, {metric}): "
               f"{nested['mean']:.4f} ± {nested['std']:.4f}   <- the figure to report")
    click.echo(f"  pooled outer predictions: OA {nested['pooled']['overall_accuracy']:.4f}, "
               f"macro-F1 {nested['pooled']['macro_f1']:.4f}")
    click.echo(f"inner best (optimistic, the score tuned on): {inner['mean']:.4f}")
    click.echo(f"best configuration: {json.dumps(report['final']['best_params'])}")
    click.echo(f"run directory: {result.run_dir}")


def _tune_scene(scene: Any, model_name: str, out_dir: Path, *, source: str, group: str | None,
                as_json: bool, **options: Any) -> None:
    from cropscope.errors import EvaluationError
    from cropscope.hyperspectral.tuning import tune_scene

    if group is not None:
        raise EvaluationError("--group is for tables; a scene's inner folds are the blocks or "
                              "tiles of its training region")
    log(f"tuning {model_name} on {scene}: {options['trials']} trials, {options['inner_cv']}-"
        f"fold spatial CV inside the training region of split "
        f"{options['split'] or scene.default_split()!r}")
    report = tune_scene(scene, model_name, out_dir, source=source, progress=True, **options)
    if as_json:
        click.echo(json.dumps(report, default=float))
        return
    test, inner, metric = report["test"], report["inner_best"], report["metric"]
    click.echo(f"test region ({metric}): {test['value']:.4f}   <- the figure to report "
               f"(OA {test['overall_accuracy']:.4f}, AA {test['average_accuracy']:.4f}, "
               f"macro-F1 {test['macro_f1']:.4f}, {test['n_samples']} px)")
    click.echo(f"inner best (optimistic, the score tuned on): {inner['value']:.4f} "
               f"({report['inner_groups']['count']} {report['inner_groups']['unit']})")
    click.echo(f"best configuration: {json.dumps(report['final']['best_params'])}")
    click.echo(f"run directory: {report['run_dir']}")
