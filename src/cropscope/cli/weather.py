"""``cropscope weather``: fit, train (supervised), evaluate, sample and export continuous
weather fields."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from cropscope.cli._common import SEED_TYPE, comma_list, log, parse_config
from cropscope.errors import DataError

_config_options = [
    click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                 help="Model/training option, repeatable, e.g. --set steps=300"),
    click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                 default=None, help="JSON file with model/training options."),
]


def _with_config(func: Any) -> Any:
    for option in reversed(_config_options):
        func = option(func)
    return func


def _selectors(items: tuple[str, ...]) -> dict[str, Any]:
    sel: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise DataError(f"--select expects DIM=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            sel[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            sel[key.strip()] = raw
    return sel


@click.group()
def weather() -> None:
    """Continuous weather fields (physics-informed) and crop weather covariates."""


@weather.command()
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path),
              help="Gridded weather file (NetCDF, GRIB, Zarr).")
@click.option("--coarsen", type=int, default=None,
              help="Fit on every K-th grid point (the unsupervised evaluation; not with --run).")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), default=None,
              help="A supervised run (`weather train`): apply it to the times from --from "
                   "and score it against the reference interpolations.")
@click.option("--from", "from_time", default=None,
              help="With --run: first time scored (ISO, e.g. 2019-03-11T00).")
@click.option("--seed", type=SEED_TYPE, default=0, show_default=True)
@click.option("--variables", default=None, help="Comma-separated variables (default: all).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Directory for the fitted field (checkpoint) and metrics.json.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@_with_config
def evaluate(input_path: Path, coarsen: int | None, run_dir: Path | None,
             from_time: str | None, seed: int, variables: str | None,
             out_dir: Path | None, as_json: bool,
             config_file: Path | None, settings: tuple[str, ...]) -> None:
    """Score a model at held-out points against the reference interpolations.

    Without --run: fit on a coarsened grid and score RMSE/MAE at the held-out points vs
    bilinear/bicubic. With --run: apply a supervised run (`weather train`) to every time
    from --from and score it at the fine points that are not input points, every time,
    against bilinear × linear, bicubic × linear and the hour-of-day bias baseline.
    """
    if run_dir is not None:
        if from_time is None:
            raise DataError("--from is required with --run (the first time to score)")
        if coarsen is not None or variables or settings or config_file or out_dir:
            raise DataError("--run takes its coarsening, variables and settings from the run; "
                            "drop --coarsen/--variables/--set/--config/--out")
        from cropscope.weather.supervised import evaluate_supervised

        log(f"weather evaluate: run {run_dir} on {input_path} from {from_time}")
        result = evaluate_supervised(run_dir, input_path, from_time)
        click.echo(json.dumps(result) if as_json else _supervised_table(result))
        return
    if coarsen is None:
        raise DataError("--coarsen is required (or --run RUN --from TIME for a supervised run)")
    if from_time is not None:
        raise DataError("--from needs --run")
    from cropscope.weather import evaluate_file, format_evaluation

    config = parse_config(config_file, settings)
    log(f"weather evaluate: {input_path}, coarsen factor {coarsen}, seed {seed}")
    result = evaluate_file(input_path, coarsen, seed, comma_list(variables), config,
                           progress=True, out_dir=out_dir)
    click.echo(json.dumps(result) if as_json else format_evaluation(result))


def _supervised_table(result: dict[str, Any]) -> str:
    keys = ("rmse_model", "rmse_bilinear_linear", "rmse_bicubic_linear", "rmse_hour_bias",
            "mae_model")
    lines = [f"{'variable':<10}" + "".join(f"{k:>22}" for k in keys)]
    for v in result["variables"]:
        lines.append(f"{v:<10}" + "".join(f"{result[v][k]:>22.5g}" for k in keys))
    lines.append(f"{result['n_times']} times from {result['from']} to {result['to']}, "
                 f"{result['n_points_per_time']} points each; total "
                 f"{result['timings_s']['total']} s")
    return "\n".join(lines)


@weather.command()
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path),
              help="Fine gridded file with a time axis (NetCDF, GRIB, Zarr).")
@click.option("--coarsen", type=int, required=True,
              help="Inputs are every K-th grid point (rows and columns from the first).")
@click.option("--input-step", "input_step", type=float, required=True,
              help="Hours between input steps (steps at multiples of it since 00 UTC).")
@click.option("--until", required=True,
              help="Last time trained on (ISO, e.g. 2019-03-10T23); nothing later is read.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Run folder (safetensors + JSON, manifest last); resumable.")
@click.option("--variables", default=None, help="Comma-separated variables (default: all).")
@click.option("--seed", type=SEED_TYPE, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the interrupted training in --out.")
@click.option("--device", default=None,
              help="auto (default: CUDA when available), cpu, cuda, cuda:1, ...")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary on stdout.")
@_with_config
def train(input_path: Path, coarsen: int, input_step: float, until: str, out_dir: Path,
          variables: str | None, seed: int, resume: bool, device: str | None, as_json: bool,
          config_file: Path | None, settings: tuple[str, ...]) -> None:
    """Train a supervised downscaler: coarse windows → fine fields (DeepPhysiNet)."""
    from cropscope.weather.supervised import (
        SupervisedConfig,
        prepare_training,
        train_supervised,
    )

    config = {"seed": seed, **parse_config(config_file, settings)}
    if device is not None:
        config["device"] = device
    cfg = SupervisedConfig.from_dict(config)  # bad options fail before the file is read
    data = prepare_training(input_path, coarsen, input_step, until, cfg.window,
                            comma_list(variables))
    log(f"weather train: {data.variables} on {len(data.times)} times up to {data.until}, "
        f"{data.n_complete_windows} complete windows of {cfg.window} h")
    fld = train_supervised(data, config, out_dir, resume=resume, progress=True)
    summary = {"run": str(out_dir), "variables": fld.variables,
               "train_seconds": fld.info.get("train_seconds"),
               "threads": fld.info.get("threads"), "device": fld.info.get("device"),
               "steps": cfg.steps,
               "final_loss": (fld.info.get("history", {}).get("loss") or [{}])[-1]}
    click.echo(json.dumps(summary) if as_json else f"run written to {out_dir}")


@weather.command()
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Field directory (safetensors + JSON); resumable.")
@click.option("--variables", default=None, help="Comma-separated variables (default: all).")
@click.option("--seed", type=SEED_TYPE, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --out.")
@click.option("--json", "as_json", is_flag=True)
@_with_config
def fit(input_path: Path, out_dir: Path, variables: str | None, seed: int, resume: bool,
        as_json: bool, config_file: Path | None,
        settings: tuple[str, ...]) -> None:
    """Fit a continuous field to every grid point of a file and save it."""
    from cropscope.weather import fit_file

    field = fit_file(input_path, out_dir, variables=comma_list(variables), seed=seed,
                     config=parse_config(config_file, settings), resume=resume, progress=True)
    summary = {"field": str(out_dir), "variables": field.variables,
               "slices": len(field.slices),
               "pde_rms_before": field.info["history"].get("pde_rms_before"),
               "pde_rms_after": field.info["history"].get("pde_rms_after"),
               "fit_seconds": field.info["history"].get("fit_seconds")}
    click.echo(json.dumps(summary) if as_json else f"field written to {out_dir}")


@weather.command()
@click.option("--field", "field_dir", required=True, type=click.Path(path_type=Path))
@click.option("--variable", required=True)
@click.option("--lat", "lats", required=True, help="Comma-separated latitudes.")
@click.option("--lon", "lons", required=True, help="Comma-separated longitudes.")
@click.option("--select", "select", multiple=True, metavar="DIM=VALUE",
              help="Slice to query, e.g. --select level=500 --select month=1.")
@click.option("--time", "time_", default=None,
              help="ISO time (fields with a time axis; supervised runs: one, or one per "
                   "point, comma-separated).")
@click.option("--input", "input_path", type=click.Path(path_type=Path), default=None,
              help="Supervised runs: read the coarse inputs of this file (same grid).")
@click.option("--json", "as_json", is_flag=True)
def sample(field_dir: Path, variable: str, lats: str, lons: str, select: tuple[str, ...],
           time_: str | None, input_path: Path | None, as_json: bool) -> None:
    """Values of a fitted field (or a supervised run) at points."""
    import numpy as np

    try:
        lat = np.array([float(x) for x in lats.split(",")])
        lon = np.array([float(x) for x in lons.split(",")])
    except ValueError:
        raise DataError("--lat/--lon must be comma-separated numbers") from None
    if lat.shape != lon.shape:
        raise DataError("--lat and --lon need the same number of values")
    if not (np.isfinite(lat).all() and np.isfinite(lon).all()) or (np.abs(lat) > 90).any():
        raise DataError("--lat must be finite numbers in [-90, 90] and --lon finite numbers")
    from cropscope.weather.supervised import is_supervised_run

    if is_supervised_run(field_dir):
        from cropscope.weather.supervised import load_supervised
        from cropscope.weather.windows import parse_time

        if select:
            raise DataError("a supervised run has no slices to --select; give --time")
        if time_ is None:
            raise DataError("--time is required for a supervised run")
        times = np.array([parse_time(t.strip(), "--time") for t in time_.split(",")])
        if times.size not in (1, lat.size):
            raise DataError("--time takes one time or one per point")
        sup = load_supervised(field_dir)
        if input_path is not None:
            sup = sup.with_inputs(input_path)
        values = sup.sample(variable, lat, lon, times)
    else:
        from cropscope.weather import WeatherField

        if input_path is not None:
            raise DataError("--input applies to supervised runs only")
        field = WeatherField.load(field_dir)
        try:
            t = np.datetime64(time_) if time_ else None
        except ValueError:
            raise DataError(f"--time must be a date or time (2023-06-01T12), "
                            f"got {time_!r}") from None
        values = field.sample(variable, lat, lon, t, **_selectors(select))
    if as_json:
        click.echo(json.dumps({"variable": variable, "lat": lat.tolist(), "lon": lon.tolist(),
                               "values": values.tolist()}))
    else:
        for la, lo, v in zip(lat, lon, values, strict=True):
            click.echo(f"{la:g}\t{lo:g}\t{v:.6g}")


@weather.command()
@click.option("--field", "field_dir", required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path),
              help="Output NetCDF file.")
@click.option("--resolution", type=float, default=None,
              help="Output grid spacing in degrees (default: the fitted grid).")
@click.option("--start", default=None, help="Supervised runs: first time (default: first input).")
@click.option("--end", default=None, help="Supervised runs: last time (default: last input).")
@click.option("--time-step", "time_step", type=float, default=None,
              help="Supervised runs: hours between output times (default 1).")
@click.option("--input", "input_path", type=click.Path(path_type=Path), default=None,
              help="Supervised runs: read the coarse inputs of this file (same grid).")
def export(field_dir: Path, out_path: Path, resolution: float | None, start: str | None,
           end: str | None, time_step: float | None, input_path: Path | None) -> None:
    """Write a fitted field (or a supervised run) to NetCDF at any resolution."""
    from cropscope.weather.supervised import is_supervised_run

    if is_supervised_run(field_dir):
        from cropscope.weather.supervised import load_supervised

        sup = load_supervised(field_dir)
        if input_path is not None:
            sup = sup.with_inputs(input_path)
        sup.to_netcdf(out_path, resolution, sup.default_times(start, end, time_step))
    else:
        if start or end or time_step or input_path:
            raise DataError("--start/--end/--time-step/--input apply to supervised runs only")
        from cropscope.weather import WeatherField

        field = WeatherField.load(field_dir)
        field.to_netcdf(out_path, resolution)
    print(f"wrote {out_path}", file=sys.stderr)
