"""Map post-processing commands (thin calls into :mod:`cropscope.mapping`): ``smooth``,
``sieve``, ``reclassify``, ``rollup``, ``mosaic``, ``propose-samples`` (active learning)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cropscope.cli._common import SEED_TYPE, log

F = TypeVar("F", bound=Callable[..., Any])


@click.command("smooth")
@click.option("--probabilities", "prob_path", type=click.Path(path_type=Path), required=True,
              help="The map's probabilities COG (map_probabilities.tif of 'predict').")
@click.option("--labels", "labels_path", type=click.Path(path_type=Path), default=None,
              help="The map's labels (default: map.tif beside the probabilities).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Folder for the smoothed labels.tif, probabilities.tif, uncertainty.tif.")
@click.option("--window", type=int, default=7, show_default=True,
              help="Neighbourhood size in pixels (odd).")
@click.option("--smoothness", type=float, default=20.0, show_default=True,
              help="Variance of a pixel's logit: larger smooths more.")
@click.option("--neigh-fraction", type=float, default=0.5, show_default=True,
              help="Share of the neighbours (most probable for each class) in the prior.")
@click.option("--keep-above", type=float, default=None,
              help="Never change a pixel whose largest probability is at least this.")
@click.option("--tile", type=int, default=512, show_default=True)
@click.option("--workers", type=int, default=None, help="Local Dask processes.")
@click.option("--scheduler", default=None, help="Address of a running Dask scheduler.")
@click.option("--resume/--no-resume", default=True, show_default=True)
def smooth(prob_path: Path, labels_path: Path | None, out_dir: Path, window: int,
           smoothness: float, neigh_fraction: float, keep_above: float | None, tile: int,
           workers: int | None, scheduler: str | None, resume: bool) -> None:
    """Bayesian smoothing of a probability map (as sits_smooth); prints the share of
    isolated pixels before and after as JSON."""
    from cropscope.mapping import smooth_map

    res = smooth_map(prob_path, out_dir, labels=labels_path, window=window,
                     smoothness=smoothness, neigh_fraction=neigh_fraction,
                     keep_above=keep_above, tile=tile, resume=resume, progress=True,
                     workers=workers, scheduler=scheduler)
    click.echo(json.dumps({"isolated_before": res.isolated_before,
                           "isolated_after": res.isolated_after,
                           "outputs": {k: str(v) for k, v in res.paths.items()}}))
    log(f"isolated pixels: {res.isolated_before:.2%} -> {res.isolated_after:.2%}")


@click.command("propose-samples")
@click.option("--probabilities", "prob_path", type=click.Path(path_type=Path), required=True,
              help="The map's probabilities COG (map_probabilities.tif of 'predict').")
@click.option("--n", "n_points", type=int, required=True, help="How many points to propose.")
@click.option("--score", type=click.Choice(["entropy", "margin", "least-confidence"]),
              default="entropy", show_default=True)
@click.option("--min-distance", type=int, default=10, show_default=True,
              help="Pixels between proposals, and from existing samples.")
@click.option("--exclude", type=click.Path(path_type=Path), default=None,
              help="Existing samples (points: .gpkg/.geojson/.csv with x/y or lon/lat) to "
                   "keep away from.")
@click.option("--seed", type=SEED_TYPE, default=0, show_default=True)
@click.option("--out", "out_path", type=click.Path(path_type=Path), required=True,
              help="Points to write: .gpkg, .geojson or .csv.")
def propose_samples(prob_path: Path, n_points: int, score: str, min_distance: int,
                    exclude: Path | None, seed: int, out_path: Path) -> None:
    """Active learning: the most uncertain pixels of a map, spread out, as points to label
    next; prints how many and their mean score."""
    import rasterio

    from cropscope.assessment import read_points
    from cropscope.mapping.active import propose_samples as propose

    existing = None
    if exclude is not None:
        with rasterio.open(prob_path) as src:
            crs = src.crs
        pts = read_points(exclude, "__none__", crs, reproject=True, require_labels=False)
        existing = (pts.x, pts.y)
    res = propose(prob_path, n_points, method=score, min_distance=min_distance,
                  exclude=existing, seed=seed)
    res.write(out_path)
    click.echo(json.dumps({"n": len(res.rows), "mean_score": float(res.score.mean()),
                           "points_file": str(out_path)}))
    log(f"{len(res.rows)} points to label written to {out_path}")


def _job_options(func: F) -> F:
    """--tile, --workers, --scheduler, --resume/--no-resume of a relabelling map job."""
    for option in reversed([
        click.option("--tile", type=int, default=1024, show_default=True),
        click.option("--workers", type=int, default=None, help="Local Dask processes."),
        click.option("--scheduler", default=None, help="Address of a running Dask scheduler."),
        click.option("--resume/--no-resume", default=True, show_default=True),
    ]):
        func = option(func)
    return func


@click.command("sieve")
@click.option("--map", "map_path", type=click.Path(path_type=Path), required=True)
@click.option("--min-pixels", type=int, required=True,
              help="Minimum mapping unit: smaller patches join their largest neighbour.")
@click.option("--connectivity", type=click.Choice(["4", "8"]), default="8", show_default=True)
@click.option("--out", "out_path", type=click.Path(path_type=Path), required=True)
@_job_options
def sieve(map_path: Path, min_pixels: int, connectivity: str, out_path: Path, tile: int,
          workers: int | None, scheduler: str | None, resume: bool) -> None:
    """Apply a minimum mapping unit to a class map."""
    from cropscope.mapping import sieve_map

    click.echo(str(sieve_map(map_path, out_path, min_pixels, connectivity=int(connectivity),
                             tile=tile, workers=workers, scheduler=scheduler, resume=resume,
                             progress=True)))


def _rules(rules: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for rule in rules:
        old, eq, new = rule.partition("=")
        if not eq or not old.strip() or not new.strip():
            raise click.BadParameter(f"{rule!r}: give OLD=NEW")
        out[old.strip()] = new.strip()
    return out


@click.command("reclassify")
@click.option("--map", "map_path", type=click.Path(path_type=Path), required=True)
@click.option("--rule", "rules", multiple=True, help="OLD=NEW (repeat; classes may merge).")
@click.option("--mask", type=click.Path(path_type=Path), default=None,
              help="A raster on the map's grid; its --mask-values pixels become --mask-class.")
@click.option("--mask-values", default="1", show_default=True,
              help="Comma-separated mask values that apply.")
@click.option("--mask-class", default=None, help="Class for masked pixels (default: nodata).")
@click.option("--out", "out_path", type=click.Path(path_type=Path), required=True)
@_job_options
def reclassify(map_path: Path, rules: tuple[str, ...], mask: Path | None, mask_values: str,
               mask_class: str | None, out_path: Path, tile: int, workers: int | None,
               scheduler: str | None, resume: bool) -> None:
    """Rename or merge classes of a map, and force a class (or nodata) under a mask."""
    from cropscope.mapping import reclassify_map

    try:
        values = [int(v) for v in mask_values.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"--mask-values {mask_values!r}: integers") from None
    click.echo(str(reclassify_map(map_path, out_path, _rules(rules), mask=mask,
                                  mask_values=values, mask_class=mask_class, tile=tile,
                                  workers=workers, scheduler=scheduler, resume=resume,
                                  progress=True)))


@click.command("rollup")
@click.option("--map", "map_path", type=click.Path(path_type=Path), required=True)
@click.option("--taxonomy", required=True,
              help="A taxonomy file, a shipped name, or a hierarchical run directory.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Folder for one map per level (<map>_<level>.tif).")
@_job_options
def rollup(map_path: Path, taxonomy: str, out_dir: Path, tile: int, workers: int | None,
           scheduler: str | None, resume: bool) -> None:
    """One map per level of a class hierarchy (each class becomes its ancestor)."""
    from cropscope.mapping import rollup_map

    outs = rollup_map(map_path, taxonomy, out_dir, tile=tile, workers=workers,
                      scheduler=scheduler, resume=resume, progress=True)
    click.echo(json.dumps({k: str(v) for k, v in outs.items()}))


@click.command("mosaic")
@click.argument("tiles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_path", type=click.Path(path_type=Path), required=True)
@click.option("--mem-limit", type=click.IntRange(min=1), default=256, show_default=True,
              help="Memory for merging single-band tiles without classes, in MB.")
@_job_options
def mosaic(tiles: tuple[Path, ...], out_path: Path, mem_limit: int, tile: int,
           workers: int | None, scheduler: str | None, resume: bool) -> None:
    """Merge map tiles (labels, probabilities or uncertainty of one product) into one COG."""
    from cropscope.mapping import mosaic_maps

    click.echo(str(mosaic_maps(list(tiles), out_path, mem_limit_mb=mem_limit, tile=tile,
                               workers=workers, scheduler=scheduler, resume=resume,
                               progress=True)))
