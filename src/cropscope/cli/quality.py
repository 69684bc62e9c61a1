"""``cropscope quality``: look at the samples before training on them.

- ``quality profiles``: class temporal profiles (median and inter-quartile band per class
  and band) as a PNG, and optionally as a CSV table;
- ``quality noisy``: out-of-fold noisy-label detection: samples whose label the
  cross-validated model contradicts with high confidence, listed with their scores.

A thin layer over :mod:`cropscope.evaluation.quality`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cropscope.cli._common import (
    SEED_TYPE,
    comma_list,
    model_config_options,
    parse_config,
    read_options,
    reader_options,
    table_columns,
    table_options,
    warnings_as_lines,
)
from cropscope.errors import DataError

if TYPE_CHECKING:
    from cropscope.data.timeseries import TimeSeriesSet


def _check_suffix(path: Path, suffixes: tuple[str, ...], option: str) -> None:
    """Refuse an output whose name promises another format than the one written."""
    if path.suffix.lower() not in suffixes:
        raise DataError(f"{option} {path}: this command writes {' or '.join(suffixes)} files")


@click.group()
def quality() -> None:
    """Sample quality: class temporal profiles and noisy-label detection."""


def _samples(dataset: str | None, table: Path | None, split: str | None, id_col: str,
             time_col: str, label_col: str, bands: str | None, nodata: str | None,
             season_start: str | None, no_align: bool, time_step: str | None,
             wide: str | None, drop_empty: bool) -> TimeSeriesSet:
    from cropscope.data.samples import load_samples

    return load_samples(dataset, table, split=split,
                        **table_columns(id_col, time_col, label_col, bands),
                        **read_options(nodata, season_start, no_align, time_step, wide,
                                       drop_empty))


@quality.command()
@click.option("--dataset", default=None, help="Registered dataset name.")
@click.option("--split", default=None, help="Dataset split to use.")
@click.option("--table", type=click.Path(path_type=Path), default=None,
              help="Your own long table (CSV/Parquet).")
@click.option("--out", "out_png", type=click.Path(path_type=Path), required=True,
              help="PNG file for the plot.")
@click.option("--csv", "out_csv", type=click.Path(path_type=Path), default=None,
              help="Also write the profile table (class, band, step, date, n, q25, median, "
                   "q75) as CSV.")
@click.option("--plot-bands", default=None,
              help="Comma-separated bands to draw (default: all, at most 24).")
@table_options
@reader_options
def profiles(dataset: str | None, split: str | None, table: Path | None, out_png: Path,
             out_csv: Path | None, plot_bands: str | None, id_col: str, time_col: str,
             label_col: str, bands: str | None, nodata: str | None, season_start: str | None,
             no_align: bool, time_step: str | None, wide: str | None, drop_empty: bool) -> None:
    """Median and inter-quartile range per class, band and time step, as a PNG."""
    from cropscope.evaluation.quality import class_profiles, plot_class_profiles
    from cropscope.io import atomic_path

    _check_suffix(out_png, (".png",), "--out")
    if out_csv is not None:
        _check_suffix(out_csv, (".csv",), "--csv")
    ts = _samples(dataset, table, split, id_col, time_col, label_col, bands, nodata,
                  season_start, no_align, time_step, wide, drop_empty)
    prof = class_profiles(ts, comma_list(plot_bands))
    if out_csv is not None:
        with atomic_path(out_csv) as tmp:
            prof.to_csv(tmp, index=False)
    source = dataset or (table.name if table else "")
    plot_class_profiles(prof, out_png, title=f"class profiles: {source} ({ts.n_samples} "
                                             "samples)")
    click.echo(f"profiles of {len(set(prof['class']))} classes x {len(set(prof['band']))} "
               f"bands: {out_png}" + (f", {out_csv}" if out_csv else ""))


@quality.command()
@click.option("--dataset", default=None, help="Registered dataset name.")
@click.option("--split", default=None, help="Dataset split to use.")
@click.option("--table", type=click.Path(path_type=Path), default=None,
              help="Your own long table (CSV/Parquet).")
@click.option("--model", "model_name", default="rf", show_default=True,
              help="Model name (see 'models list').")
@click.option("--cv", type=int, default=5, show_default=True, help="Number of folds.")
@click.option("--seed", type=SEED_TYPE, default=0, show_default=True)
@click.option("--group", default=None, help="Metadata column for leave-group-out folds.")
@click.option("--spatial-blocks", default=None, metavar="SIZE",
              help="Folds from coordinate blocks ('0.5deg', '10km').")
@click.option("--threshold", type=float, default=0.8, show_default=True,
              help="Suspect when the out-of-fold model gives another class at least this "
                   "probability.")
@click.option("--out", "out_csv", type=click.Path(path_type=Path), default=None,
              help="CSV of the suspects (with --all: of every sample).")
@click.option("--all", "all_rows", is_flag=True, help="Write every sample, not only suspects.")
@click.option("--show", type=click.IntRange(min=0), default=20, show_default=True,
              help="Suspects listed on stdout.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@table_options
@reader_options
@model_config_options
def noisy(dataset: str | None, split: str | None, table: Path | None, model_name: str,
          cv: int, seed: int, group: str | None, spatial_blocks: str | None, threshold: float,
          out_csv: Path | None, all_rows: bool, show: int, as_json: bool, id_col: str,
          time_col: str, label_col: str, bands: str | None, nodata: str | None,
          season_start: str | None, no_align: bool, time_step: str | None, wide: str | None,
          drop_empty: bool, config_file: Path | None, settings: tuple[str, ...]) -> None:
    """Samples whose label the cross-validated model contradicts with high confidence."""
    import functools

    from cropscope.evaluation.quality import noisy_labels
    from cropscope.models.registry import create_model, get_model_class

    if out_csv is not None:
        _check_suffix(out_csv, (".csv",), "--out")
    ts = _samples(dataset, table, split, id_col, time_col, label_col, bands, nodata,
                  season_start, no_align, time_step, wide, drop_empty)
    config = parse_config(config_file, settings)
    if "seed" in get_model_class(model_name).default_config():
        config.setdefault("seed", seed)
    create_model(model_name, **config)  # fail fast on a bad option
    with warnings_as_lines():
        result = noisy_labels(functools.partial(create_model, model_name, **config), ts,
                              cv=cv, seed=seed, threshold=threshold, group=group,
                              spatial_blocks=spatial_blocks, progress=True)
    if out_csv is not None:
        result.write_csv(out_csv, suspects_only=not all_rows)
    suspects = result.suspects
    if as_json:
        click.echo(json.dumps({**result.config, "model": model_name,
                               "suspects": suspects.to_dict(orient="records")}, default=str))
        return
    click.echo(f"{len(suspects)} of {result.config['n_samples']} samples are suspects "
               f"(out-of-fold {model_name}, {result.config['cv']} folds, another class with "
               f"p >= {threshold:g})")
    if len(suspects):
        click.echo(suspects.head(show).to_string(index=False))
