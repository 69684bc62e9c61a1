"""``cropscope weather``: fit, evaluate, sample and export continuous weather fields."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from cropscope.cli._common import comma_list, log, parse_config
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
@click.option("--coarsen", type=int, required=True, help="Fit on every K-th grid point.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--variables", default=None, help="Comma-separated variables (default: all).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Directory for the fitted field (checkpoint) and metrics.json.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@_with_config
def evaluate(input_path: Path, coarsen: int, seed: int, variables: str | None,
             out_dir: Path | None, as_json: bool,
             config_file: Path | None, settings: tuple[str, ...]) -> None:
    """Fit on a coarsened grid; score RMSE/MAE at the held-out points vs bilinear/bicubic."""
    from cropscope.weather import evaluate_file, format_evaluation

    config = parse_config(config_file, settings)
    log(f"weather evaluate: {input_path}, coarsen factor {coarsen}, seed {seed}")
    result = evaluate_file(input_path, coarsen, seed, comma_list(variables), config,
                           progress=True, out_dir=out_dir)
    click.echo(json.dumps(result) if as_json else format_evaluation(result))


@weather.command()
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Field directory (safetensors + JSON); resumable.")
@click.option("--variables", default=None, help="Comma-separated variables (default: all).")
@click.option("--seed", type=int, default=0, show_default=True)
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
@click.option("--time", "time_", default=None, help="ISO time (fields with a time axis).")
@click.option("--json", "as_json", is_flag=True)
def sample(field_dir: Path, variable: str, lats: str, lons: str, select: tuple[str, ...],
           time_: str | None, as_json: bool) -> None:
    """Values of a fitted field at points."""
    import numpy as np

    from cropscope.weather import WeatherField

    try:
        lat = np.array([float(x) for x in lats.split(",")])
        lon = np.array([float(x) for x in lons.split(",")])
    except ValueError:
        raise DataError("--lat/--lon must be comma-separated numbers") from None
    if lat.shape != lon.shape:
        raise DataError("--lat and --lon need the same number of values")
    field = WeatherField.load(field_dir)
    t = np.datetime64(time_) if time_ else None
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
def export(field_dir: Path, out_path: Path, resolution: float | None) -> None:
    """Write a fitted field to NetCDF at any resolution."""
    from cropscope.weather import WeatherField

    field = WeatherField.load(field_dir)
    field.to_netcdf(out_path, resolution)
    print(f"wrote {out_path}", file=sys.stderr)
