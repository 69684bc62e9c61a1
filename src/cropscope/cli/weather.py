"""``cropscope weather``: fit, evaluate, sample and export continuous weather fields."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from cropscope.cli._common import log, parse_config
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


def _variables(text: str | None) -> list[str] | None:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def _threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


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
@click.option("--threads", type=int, default=None, help="Torch threads (default: torch's).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@_with_config
def evaluate(input_path: Path, coarsen: int, seed: int, variables: str | None,
             out_dir: Path | None, threads: int | None, as_json: bool,
             config_file: Path | None, settings: tuple[str, ...]) -> None:
    """Fit on a coarsened grid; score RMSE/MAE at the held-out points vs bilinear/bicubic."""
    from cropscope.weather.evaluate import evaluate_file

    _threads(threads)
    config = parse_config(config_file, settings)
    log(f"weather evaluate: {input_path}, coarsen factor {coarsen}, seed {seed}")
    result = evaluate_file(input_path, coarsen, seed, _variables(variables), config,
                           progress=True, out_dir=out_dir)
    if out_dir is not None:
        from cropscope.io import write_json

        write_json(Path(out_dir) / "metrics.json", result)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{'variable':<10}{'rmse_model':>14}{'rmse_bilinear':>15}{'rmse_bicubic':>14}"
               f"{'mae_model':>12}")
    for v in result["variables"]:
        e = result[v]
        click.echo(f"{v:<10}{e['rmse_model']:>14.5g}{e['rmse_bilinear']:>15.5g}"
                   f"{e['rmse_bicubic']:>14.5g}{e['mae_model']:>12.5g}")
    for eq, stats in result["residuals"].items():
        click.echo(f"{eq} residual RMS: " + ", ".join(
            f"{k} {v['rms']:.4g}" for k, v in stats.items() if isinstance(v, dict)))
    click.echo(f"total {result['timings_s']['total']} s")


@weather.command()
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Field directory (safetensors + JSON); resumable.")
@click.option("--variables", default=None, help="Comma-separated variables (default: all).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --out.")
@click.option("--threads", type=int, default=None)
@click.option("--json", "as_json", is_flag=True)
@_with_config
def fit(input_path: Path, out_dir: Path, variables: str | None, seed: int, resume: bool,
        threads: int | None, as_json: bool, config_file: Path | None,
        settings: tuple[str, ...]) -> None:
    """Fit a continuous field to every grid point of a file and save it."""
    from cropscope.weather.evaluate import stack_fields
    from cropscope.weather.geometry import RegularGrid
    from cropscope.weather.readers import open_weather
    from cropscope.weather.training import fit_field

    _threads(threads)
    config = {"seed": seed, **parse_config(config_file, settings)}
    ds = open_weather(input_path, _variables(variables))
    values, names, slices, _ = stack_fields(ds)
    grid = RegularGrid.from_coords(ds["latitude"].values, ds["longitude"].values)
    log(f"fitting {names} on {len(slices)} slice(s) of {grid.ny}×{grid.nx}")
    field = fit_field(values, grid, names, slices, config, out_dir=out_dir, resume=resume,
                      progress=True)
    summary = {"field": str(out_dir), "variables": names, "slices": len(slices),
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

    from cropscope.weather.field import WeatherField

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
    from cropscope.weather.field import WeatherField

    field = WeatherField.load(field_dir)
    field.to_netcdf(out_path, resolution)
    print(f"wrote {out_path}", file=sys.stderr)
