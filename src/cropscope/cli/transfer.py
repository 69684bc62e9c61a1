"""``cropscope transfer``: train on some regions/years/countries, test on others.

- ``transfer evaluate``: one model, repeated seeds, the CropGlobe protocol (a group split of a
  dataset/table, or CropGlobe ``.npz`` files by country).
- ``transfer study``: features x models x augmentation, table + plot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cropscope.cli._common import (
    load_input,
    log,
    model_config_options,
    parse_config,
    table_options,
)
from cropscope.errors import DataError


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise DataError(f"{what} must be comma-separated integers, got {text!r}") from None


def _split(ts: Any, group: str | None, train: str | None, test: str | None, blocks: int | None):
    """Transfer splits from ``--group`` and ``--train/--test`` or ``--blocks``."""
    from cropscope.transfer.protocol import TransferSplit, group_block_splits, parse_groups

    if group is None:
        raise DataError("give --group COLUMN (a metadata column such as year or region)")
    if group not in ts.meta.columns:
        raise DataError(f"no metadata column {group!r}; available: {list(ts.meta.columns)}")
    if (train is None) != (test is None):
        raise DataError("--train and --test go together")
    if train is not None and test is not None:
        if blocks is not None:
            raise DataError("use either --train/--test or --blocks")
        available = ts.meta[group].unique()
        return [TransferSplit(group, parse_groups(train, available),
                              parse_groups(test, available))]
    return group_block_splits(ts, group, blocks or 2)


def _fmt(s: dict[str, float]) -> str:
    return f"{s['mean']:.3f} ± {s['std']:.3f}"


@click.group()
def transfer() -> None:
    """Transfer evaluation across regions, years or countries (CropGlobe protocol)."""


@transfer.command("evaluate")
@click.option("--dataset", default=None, help="Registered dataset name.")
@click.option("--table", type=click.Path(path_type=Path), default=None,
              help="Your own long table (CSV/Parquet).")
@click.option("--group", default=None, help="Metadata column that defines the groups.")
@click.option("--train", "train_groups", default=None,
              help="Source groups, e.g. 2000-2007,2015 (integer ranges allowed).")
@click.option("--test", "test_groups", default=None, help="Target groups.")
@click.option("--per-group", is_flag=True, help="Score every target group separately.")
@click.option("--cropglobe", "cropglobe_dir", type=click.Path(path_type=Path), default=None,
              help="Folder with CropGlobe .npz files (instead of --dataset/--table).")
@click.option("--source", default=None, help="CropGlobe source country, e.g. FRA.")
@click.option("--targets", default=None, help="CropGlobe target countries, e.g. BEL,NLD,USA.")
@click.option("--kind", default="median", show_default=True,
              help="CropGlobe feature file: median, median_full, harmonic, presto, alphaearth.")
@click.option("--model", "model_name", required=True, help="Model name (see 'models list').")
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated seeds.")
@click.option("--other", default=None,
              help="Class that predictions outside a target's label space become "
                   "(CropGlobe: 'other', with the reference rules for AUS, CHN, ARG).")
@click.option("--target-classes", default=None,
              help="Label space of every target for --other (comma-separated class names).")
@click.option("--dedupe/--no-dedupe", default=None,
              help="Drop repeated feature rows (default: on for CropGlobe files).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Directory for transfer.json and runs.csv.")
@table_options
@model_config_options
def evaluate_cmd(
    dataset: str | None, table: Path | None, group: str | None, train_groups: str | None,
    test_groups: str | None, per_group: bool, cropglobe_dir: Path | None, source: str | None,
    targets: str | None, kind: str, model_name: str, seeds: str, other: str | None,
    target_classes: str | None, dedupe: bool | None, as_json: bool, out_dir: Path | None,
    id_col: str, time_col: str, label_col: str, bands: str | None, config_file: Path | None,
    settings: tuple[str, ...],
) -> None:
    """Train on source groups (or a CropGlobe country), test on targets, over seeds."""
    import numpy as np
    import pandas as pd

    from cropscope.io import atomic_path, write_json
    from cropscope.models.registry import create_model, get_model_class
    from cropscope.transfer.protocol import (
        CROPGLOBE_TARGET_CLASSES,
        evaluate_transfer,
        split_by_groups,
    )

    config = parse_config(config_file, settings)
    from cropscope.models._tabular import FeatureClassifier

    if issubclass(get_model_class(model_name), FeatureClassifier):
        config.setdefault("features", ["values"])  # the flat vector, as the reference RF
    create_model(model_name, **config)  # fail fast on a bad option
    seed_list = _ints(seeds, "--seeds")
    space: Any = None
    if cropglobe_dir is not None:
        if dataset or table or group:
            raise DataError("--cropglobe replaces --dataset/--table/--group")
        if not source or not targets:
            raise DataError("--cropglobe needs --source CC and --targets CC,CC,...")
        from cropscope.data.readers.cropglobe import read_cropglobe

        codes = [c.strip().upper() for c in targets.split(",") if c.strip()]
        src = read_cropglobe(cropglobe_dir, source, kind)[source.upper()]
        tgts = read_cropglobe(cropglobe_dir, codes, kind)
        other = other or "other"
        space = CROPGLOBE_TARGET_CLASSES
        dedupe = True if dedupe is None else dedupe
        desc = f"CropGlobe {kind}: {source.upper()} -> {','.join(codes)}"
    else:
        ts, desc = load_input(dataset, table, None, id_col, time_col, label_col, bands)
        split = _split(ts, group, train_groups, test_groups, None)[0]
        src, tgt = split_by_groups(ts, split)
        if per_group:
            values = np.array([str(v) for v in tgt.meta[group]])
            tgts = {g: tgt.subset(values == g) for g in split.test_groups}
        else:
            tgts = {"+".join(split.test_groups): tgt}
        dedupe = bool(dedupe)
        desc = f"{desc}: {split.name} ({group})"
    if target_classes is not None:
        if other is None:
            raise DataError("--target-classes needs --other CLASS")
        space = [c.strip() for c in target_classes.split(",") if c.strip()]
    elif other is not None and space is None:
        raise DataError("--other needs --target-classes (the target label space)")
    log(f"transfer evaluation of {model_name} on {desc}, seeds {seed_list}")
    result = evaluate_transfer(model_name, src, tgts, seed_list, config, space,
                               other or "other", dedupe, progress=True)
    data = result.to_dict()
    if out_dir is not None:
        write_json(Path(out_dir) / "transfer.json", data)
        runs = pd.DataFrame(result.runs).drop(columns=["macro_f1_classes"])
        runs["dropped"] = runs["dropped"].map(json.dumps)
        with atomic_path(Path(out_dir) / "runs.csv") as tmp:
            runs.to_csv(tmp, index=False, float_format="%.4f")
        log(f"results written to {out_dir}")
    if as_json:
        click.echo(json.dumps(data, default=float))
        return
    click.echo(f"{'target':<24} {'OA':>15} {'macro-F1':>15} {'weighted-F1':>15} {'n':>6}  dropped")
    for name, s in result.summary.items():
        run = next(r for r in result.runs if r["target"] == name)
        click.echo(f"{name:<24} {_fmt(s['overall_accuracy']):>15} {_fmt(s['macro_f1']):>15} "
                   f"{_fmt(s['weighted_f1']):>15} {run['n_target']:>6}  {run['dropped'] or ''}")


@transfer.command("study")
@click.option("--dataset", default=None, help="Registered dataset name.")
@click.option("--table", type=click.Path(path_type=Path), default=None,
              help="Your own long table (CSV/Parquet).")
@click.option("--group", default=None, help="Metadata column that defines the groups.")
@click.option("--train", "train_groups", default=None,
              help="Source groups, e.g. 2000-2007,2015 (with --test).")
@click.option("--test", "test_groups", default=None, help="Target groups.")
@click.option("--blocks", type=int, default=None,
              help="Instead of --train/--test: K blocks of whole groups, each the target once "
                   "(default 2).")
@click.option("--features", default=",".join(("raw", "median1d", "median2d", "harmonic",
                                              "indices")), show_default=True)
@click.option("--models", default="rf,lightgbm,tempcnn,cropnet,ltae", show_default=True)
@click.option("--aug", type=click.Choice(["both", "on", "off"]), default="both",
              show_default=True, help="Augmentation settings to run.")
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--jobs", type=int, default=2, show_default=True,
              help="Worker processes (one thread each).")
@click.option("--epochs", type=int, default=None, help="Epochs of the deep models.")
@click.option("--window-days", type=int, default=None,
              help="Median window in days (default: the data's step, at least 5).")
@click.option("--season", default=None, help="Median season as START-END day of year.")
@click.option("--sensor", default="sentinel2", show_default=True,
              help="Band naming for the indices (sentinel2, landsat8, landsat7).")
@click.option("--temperature", type=click.Path(path_type=Path), default=None,
              help="Temperature field (NetCDF/Zarr/GRIB): align the series on thermal time.")
@click.option("--temperature-var", default="t2m", show_default=True)
@click.option("--gdd-base", type=float, default=10.0, show_default=True)
@click.option("--thermal-step", type=float, default=50.0, show_default=True,
              help="Thermal-time step (°C·d).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Output folder (resumable: finished cells are reused).")
@click.option("--no-plot", is_flag=True, help="Do not draw study.png.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@table_options
def study_cmd(
    dataset: str | None, table: Path | None, group: str | None, train_groups: str | None,
    test_groups: str | None, blocks: int | None, features: str, models: str, aug: str,
    seeds: str, jobs: int, epochs: int | None, window_days: int | None, season: str | None,
    sensor: str, temperature: Path | None, temperature_var: str, gdd_base: float,
    thermal_step: float, out_dir: Path, no_plot: bool, as_json: bool, id_col: str,
    time_col: str, label_col: str, bands: str | None,
) -> None:
    """Features x models x augmentation on a group split; writes study.csv/.md/.png."""
    from cropscope.models.registry import get_model_class
    from cropscope.transfer.study import STUDY_MODELS, StudyConfig, ThermalAlignment, run_study

    ts, desc = load_input(dataset, table, None, id_col, time_col, label_col, bands)
    splits = _split(ts, group, train_groups, test_groups, blocks)
    model_cfg: dict[str, dict[str, Any]] = {}
    for name in (m.strip() for m in models.split(",") if m.strip()):
        cfg = dict(STUDY_MODELS.get(name, {}))
        if epochs is not None and "epochs" in get_model_class(name).default_config():
            cfg["epochs"] = epochs
        model_cfg[name] = cfg
    season_t = None
    if season is not None:
        parts = _ints(season.replace("-", ","), "--season")
        if len(parts) != 2:
            raise DataError(f"--season must be START-END days of year, got {season!r}")
        season_t = (parts[0], parts[1])
    thermal = None
    if temperature is not None:
        from cropscope.weather.covariates import GriddedField
        from cropscope.weather.readers import open_weather

        thermal = ThermalAlignment(GriddedField(open_weather(temperature)), temperature_var,
                                   gdd_base, step=thermal_step)
    if jobs < 1:
        raise DataError("--jobs must be >= 1")
    config = StudyConfig(
        splits=splits, features=[f.strip() for f in features.split(",") if f.strip()],
        models=model_cfg, augment={"both": (False, True), "on": (True,), "off": (False,)}[aug],
        seeds=_ints(seeds, "--seeds"), window_days=window_days, season=season_t,
        sensor=sensor, thermal=thermal, jobs=jobs,
    )
    log(f"transfer study on {desc}: " + "; ".join(s.name for s in splits))
    result = run_study(ts, config, out_dir, progress=True, plot=not no_plot, log=log)
    log(f"wall time {result.wall_s:.0f} s; results in {out_dir}")
    if as_json:
        click.echo(json.dumps(result.to_dict(), default=float))
    else:
        click.echo(result.files["study.md"].read_text())
