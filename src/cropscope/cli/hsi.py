"""``cropscope hsi``: hyperspectral scenes."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def hsi() -> None:
    """Hyperspectral scenes (EnMAP, EMIT, AVIRIS, ENVI, MATLAB)."""


@hsi.command("info")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default=None,
              help="Reader (envi, geotiff, enmap-product, emit-netcdf, matlab); "
                   "detected when omitted.")
@click.option("--wavelengths", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV with band centres (and FWHM) when the file has none.")
@click.option("--orthorectify", is_flag=True, help="EMIT NetCDF: apply the GLT.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info_cmd(file: Path, fmt: str | None, wavelengths: Path | None, orthorectify: bool,
             as_json: bool) -> None:
    """Describe a hyperspectral FILE (a .mat may be given as FILE.mat:VARIABLE)."""
    from cropscope.hyperspectral import format_scene_info, open_hyperspectral, scene_info

    info = scene_info(open_hyperspectral(file, format=fmt, wavelengths=wavelengths,
                                         orthorectify=orthorectify))
    click.echo(json.dumps(info) if as_json else format_scene_info(info))
