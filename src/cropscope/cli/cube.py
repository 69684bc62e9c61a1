"""``cropscope cube``: regular cubes from STAC API searches or local inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cropscope.cli._common import comma_list, log


@click.group()
def cube() -> None:
    """Build image cubes: search a STAC API, mask, composite, write Zarr or COGs."""


def _floats(text: str | None, what: str, n: int) -> list[float] | None:
    if text is None:
        return None
    from cropscope.errors import DataError

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n:
        raise DataError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return values


def _step(text: str | None) -> int | str | None:
    if text is None:
        return None
    return int(text) if text.strip().isdigit() else text.strip()


@cube.command("build")
@click.option("--input", "input_path", default=None,
              help="A cube input (raster folder, NetCDF/Zarr, STAC catalog or search file) "
                   "instead of --stac-api.")
@click.option("--stac-api", default=None, metavar="URL", help="Root URL of a STAC API.")
@click.option("--collection", "collections", multiple=True,
              help="Collection id to search (repeatable).")
@click.option("--bbox", default=None, metavar="W,S,E,N", help="Area in degrees.")
@click.option("--intersects", "intersects_file", default=None, type=click.Path(dir_okay=False),
              help="A GeoJSON file whose geometry is the area (instead of --bbox).")
@click.option("--datetime", "when", default=None, metavar="START/END",
              help="Dates, e.g. 2021-03-01/2021-10-31.")
@click.option("--max-cloud", type=float, default=None,
              help="Keep items whose eo:cloud_cover is at most this (percent).")
@click.option("--query", default=None, metavar="JSON",
              help='Item property filters, e.g. \'{"platform": {"eq": "sentinel-2a"}}\'.')
@click.option("--bands", default=None, help="Comma-separated bands (asset keys) to read.")
@click.option("--mask-band", default=None,
              help="Per-date quality band (e.g. SCL): its invalid classes become gaps.")
@click.option("--crs", default=None, help="Output CRS (default: the items').")
@click.option("--resolution", type=float, default=None, help="Output pixel size (CRS units).")
@click.option("--max-items", type=int, default=5000, show_default=True,
              help="Refuse searches that find more items.")
@click.option("--composite", default=None, metavar="DAYS|monthly",
              help="Median-composite to a regular time grid of this step.")
@click.option("--start", default=None, help="First date of the composite grid.")
@click.option("--end", default=None, help="Last date of the composite grid.")
@click.option("--tile", type=int, default=1024, show_default=True,
              help="Window size (pixels) read and written at a time.")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path),
              help="OUT.zarr (a Zarr store) or a folder for one COG per date.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out (once complete).")
@click.option("--save-search", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also save the search as a search file, usable as --input of maps "
                   "and sample extraction.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def build_cmd(input_path: str | None, stac_api: str | None, collections: tuple[str, ...],
              bbox: str | None, intersects_file: str | None, when: str | None,
              max_cloud: float | None, query: str | None, bands: str | None,
              mask_band: str | None, crs: str | None, resolution: float | None,
              max_items: int, composite: str | None, start: str | None, end: str | None,
              tile: int, out_path: Path, overwrite: bool, save_search: Path | None,
              as_json: bool) -> None:
    """Build a cube and write it to --out.

    From a STAC API (--stac-api with --collection, --bbox or --intersects, --datetime,
    --max-cloud, --bands, --mask-band SCL) or from --input; --composite gives it a regular
    time grid. Examples:

    \b
      cropscope cube build --stac-api URL --collection sentinel-2-l2a \\
        --bbox 13.0,52.3,13.2,52.4 --datetime 2021-03-01/2021-10-31 --max-cloud 40 \\
        --bands B04,B08 --mask-band SCL --composite 10 --out cube.zarr
      cropscope cube build --input search.json --composite monthly --out cogs/
    """
    from cropscope.data.readers.stac_api import StacSearch
    from cropscope.errors import DataError
    from cropscope.workflows.cube import build_cube

    search = None
    if stac_api is not None:
        if input_path is not None:
            raise DataError("give --stac-api or --input, not both")
        band_list = comma_list(bands)
        if not band_list:
            raise DataError("--stac-api needs --bands (the asset keys to read)")
        intersects = None
        if intersects_file is not None:
            from cropscope.io import read_user_text

            try:
                geo: Any = json.loads(read_user_text(Path(intersects_file), "GeoJSON file"))
            except json.JSONDecodeError as exc:
                raise DataError(f"{intersects_file} is not valid JSON: {exc}") from None
            if isinstance(geo, dict) and geo.get("type") == "FeatureCollection":
                feats = geo.get("features") or []
                geo = feats[0].get("geometry") if len(feats) == 1 else None
            elif isinstance(geo, dict) and geo.get("type") == "Feature":
                geo = geo.get("geometry")
            if not isinstance(geo, dict):
                raise DataError(f"{intersects_file} must hold one GeoJSON geometry or feature")
            intersects = geo
        filters = None
        if query is not None:
            try:
                filters = json.loads(query)
            except json.JSONDecodeError as exc:
                raise DataError(f"--query is not valid JSON: {exc}") from None
        search = StacSearch(
            stac_api=stac_api, bands=band_list, collections=list(collections),
            bbox=_floats(bbox, "--bbox", 4), intersects=intersects, datetime=when,
            max_cloud=max_cloud, query=filters, max_items=max_items, mask_band=mask_band,
            crs=crs, resolution=resolution,
        )  # fmt: skip
    elif input_path is None:
        raise DataError("give --stac-api URL (with --collection, --bbox, --bands, ...) or "
                        "--input CUBE")
    elif any(v is not None for v in (bbox, intersects_file, when, max_cloud, query, crs,
                                     resolution)) or collections:
        raise DataError("--collection/--bbox/--intersects/--datetime/--max-cloud/--query/"
                        "--crs/--resolution describe a --stac-api search")
    result = build_cube(
        out_path, input=input_path, search=search,
        bands=comma_list(bands) if search is None else None,
        mask_band=mask_band if search is None else None, composite=_step(composite),
        start=start, end=end, tile=tile, overwrite=overwrite, save_search=save_search,
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps(result.summary()))
        return
    h, w = result.shape
    log(f"{result.format} cube: {len(result.dates)} dates x {len(result.bands)} bands x "
        f"{h} x {w} px" + (f" from {result.n_items} items" if result.n_items else ""))
    click.echo(str(result.out))
