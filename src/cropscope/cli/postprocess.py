"""Map post-processing commands (thin calls into :mod:`cropscope.mapping`): ``smooth``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cropscope.cli._common import log


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
