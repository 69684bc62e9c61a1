"""``cropscope transfer``: train on some regions/years/countries, test on others.

- ``transfer evaluate``: one model, repeated seeds, the CropGlobe protocol (a group split of a
  dataset/table, or CropGlobe ``.npz`` files by country).
- ``transfer study``: features x models x augmentation, table + plot.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from cropscope.cli._common import (
    comma_list,
    log,
    model_config_options,
    parse_config,
    table_columns,
    table_options,
)
from cropscope.errors import DataError


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise DataError(f"{what} must be comma-separated integers, got {text!r}") from None


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
    from cropscope.transfer import run_transfer

    result = run_transfer(
        model_name, dataset=dataset, table=table, group=group, train=train_groups,
        test=test_groups, per_group=per_group, cropglobe=cropglobe_dir, source=source,
        targets=comma_list(targets), kind=kind, seeds=_ints(seeds, "--seeds"),
        config=parse_config(config_file, settings), other=other,
        target_classes=comma_list(target_classes), dedupe=dedupe, out_dir=out_dir,
        progress=True, **table_columns(id_col, time_col, label_col, bands))
    if out_dir is not None:
        log(f"results written to {out_dir}")
    click.echo(json.dumps(result.to_dict(), default=float) if as_json else result.format_table())


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
    from cropscope.transfer import run_transfer_study

    season_t = None
    if season is not None:
        parts = _ints(season.replace("-", ","), "--season")
        if len(parts) != 2:
            raise DataError(f"--season must be START-END days of year, got {season!r}")
        season_t = (parts[0], parts[1])
    result = run_transfer_study(
        out_dir, dataset=dataset, table=table, group=group, train=train_groups,
        test=test_groups, blocks=blocks, features=comma_list(features) or [],
        models=comma_list(models) or [],
        augment={"both": (False, True), "on": (True,), "off": (False,)}[aug],
        seeds=_ints(seeds, "--seeds"), jobs=jobs, epochs=epochs, window_days=window_days,
        season=season_t, sensor=sensor, temperature=temperature,
        temperature_var=temperature_var, gdd_base=gdd_base, thermal_step=thermal_step,
        plot=not no_plot, progress=True, **table_columns(id_col, time_col, label_col, bands))
    log(f"wall time {result.wall_s:.0f} s; results in {out_dir}")
    if as_json:
        click.echo(json.dumps(result.to_dict(), default=float))
    else:
        click.echo(result.files["study.md"].read_text())
