"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import CropscopeError, DataError

F = Callable[..., Any]


def log(message: str) -> None:
    """Progress and information go to stderr, never stdout (stdout is for results)."""
    click.echo(message, err=True)


def table_options(func: F) -> F:
    """Column options for a user's long table."""
    options = [
        click.option("--id-col", default="sample_id", show_default=True,
                     help="Column with the sample id."),
        click.option("--time-col", default="date", show_default=True,
                     help="Column with the date (or integer time step)."),
        click.option("--label-col", default="label", show_default=True,
                     help="Column with the class label."),
        click.option("--bands", default=None,
                     help="Comma-separated band columns (default: every numeric column)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def model_config_options(func: F) -> F:
    """``--set key=value`` and ``--config FILE`` for model options."""
    func = click.option(
        "--set", "settings", multiple=True, metavar="KEY=VALUE",
        help="Model option, repeatable (value parsed as JSON when possible), e.g. --set epochs=20",
    )(func)
    func = click.option(
        "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
        default=None, help="JSON file with model options.",
    )(func)
    return func


def parse_config(config_file: Path | None, settings: tuple[str, ...]) -> dict[str, Any]:
    """Merge a JSON config file and ``KEY=VALUE`` settings."""
    config: dict[str, Any] = {}
    if config_file is not None:
        if not config_file.is_file():
            raise DataError(f"config file not found: {config_file}")
        try:
            config.update(json.loads(config_file.read_text()))
        except json.JSONDecodeError as exc:
            raise DataError(f"config file {config_file} is not valid JSON: {exc}") from None
    for item in settings:
        if "=" not in item:
            raise DataError(f"--set expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        config[key.strip()] = value
    return config


def option_overrides(settings: tuple[str, ...], **options: Any) -> dict[str, Any]:
    """``KEY=VALUE`` settings, then every named option the user gave (not None) on top."""
    config = parse_config(None, settings)
    config.update({k: v for k, v in options.items() if v is not None})
    return config


def load_table(
    path: Path, id_col: str, time_col: str, label_col: str | None, bands: str | None
) -> TimeSeriesSet:
    from cropscope.data.readers.table import read_table

    band_list = [b.strip() for b in bands.split(",")] if bands else None
    return read_table(path, id_col=id_col, time_col=time_col, label_col=label_col,
                      bands=band_list)


def load_input(
    dataset: str | None,
    table: Path | None,
    split: str | None,
    id_col: str,
    time_col: str,
    label_col: str,
    bands: str | None,
) -> tuple[TimeSeriesSet, str]:
    """The samples named by ``--dataset`` or ``--table`` and a description of the source."""
    if (dataset is None) == (table is None):
        raise DataError("give exactly one of --dataset NAME or --table FILE")
    if dataset is not None:
        from cropscope.data.registry import load_dataset

        ts = load_dataset(dataset, split=split)
        source = f"dataset:{dataset}" + (f":{split}" if split else "")
    else:
        assert table is not None
        ts = load_table(table, id_col, time_col, label_col, bands)
        source = f"table:{table}"
    if bands and dataset is not None:
        ts = ts.select_bands([b.strip() for b in bands.split(",")])
    return ts, source


def fail(exc: CropscopeError) -> None:
    """Print a user error as one line on stderr and exit non-zero."""
    click.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


def hierarchy_options(func: F) -> F:
    """``--hierarchical``, ``--levels``, ``--taxonomy``, ``--decoding``, ``--background``."""
    options = [
        click.option("--hierarchical", is_flag=True,
                     help="Hierarchical model: cascade heads for deep models, per-level "
                          "base models for the others; reports every level (implies --levels)."),
        click.option("--levels", "per_level", is_flag=True,
                     help="Also score every taxonomy level (a flat model's probabilities are "
                          "summed up the tree)."),
        click.option("--taxonomy", "taxonomy_src", default=None,
                     help="Class hierarchy: a YAML/JSON/CSV file or a shipped name "
                          "(default: the one shipped with --dataset)."),
        click.option("--decoding", type=click.Choice(["consistent", "independent"]),
                     default="consistent", show_default=True,
                     help="Per-level decoding: best root-to-leaf path, or argmax per level."),
        click.option("--background", default=None,
                     help="Class name left out of the *_no_background scores."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def attach_taxonomy(ts: TimeSeriesSet, dataset: str | None, source: str | None) -> TimeSeriesSet:
    """``ts`` with the hierarchy from ``source`` (file or shipped name), else the one
    shipped with ``dataset``; restricted to the classes present when they are leaves."""
    from cropscope.taxonomy.sources import builtin_taxonomy, read_taxonomy

    if source is not None:
        path = Path(source)
        tax = read_taxonomy(path) if path.suffix else builtin_taxonomy(source)
    elif dataset is not None:
        from cropscope.data.registry import get_dataset

        name = get_dataset(dataset).taxonomy
        if name is None:
            raise DataError(f"no class hierarchy is shipped for {dataset!r}; give --taxonomy")
        tax = builtin_taxonomy(name)
    else:
        raise DataError("per-level evaluation needs --taxonomy FILE for your own table")
    tax = tax.complete()
    if set(ts.classes) <= set(tax.classes(-1)):
        tax = tax.subtree(ts.classes)
    return ts.with_taxonomy(tax)


def hierarchical_model(name: str, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The model to build for ``--hierarchical``: deep models get cascade heads
    (``hierarchical=true``); any other is wrapped in the ``hierarchical`` per-level model."""
    from cropscope.models.registry import get_model_class

    if "hierarchical" in get_model_class(name).default_config():
        return name, {**config, "hierarchical": True}
    if name == "hierarchical":
        return name, config
    return "hierarchical", {"base": name, "base_config": config}
