"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from cropscope.errors import CropscopeError, DataError
from cropscope.threads import THREADS_ENV, set_threads

F = Callable[..., Any]

#: ``--seed``: numpy and scikit-learn take seeds in [0, 2**32 - 1]
SEED_TYPE = click.IntRange(0, 2**32 - 1)
#: sizes and counts that must be at least one (``--batch-size``)
POSITIVE_INT = click.IntRange(min=1)


def log(message: str) -> None:
    """Progress and information go to stderr, never stdout (stdout is for results)."""
    click.echo(message, err=True)


_THREADS_META = "cropscope.threads"
_THREADS_HELP = (f"CPU threads for torch, LightGBM, scikit-learn, OpenMP/BLAS and GDAL "
                 f"(default: ${THREADS_ENV}, else the cores not busy with other processes).")


def threads_option(command: F | click.Command) -> Any:
    """``--threads N`` on a command (a function before ``@click.command``, or a command).

    On a group the value is kept for its subcommands (``cropscope --threads 2 demo``); on a
    command :func:`cropscope.threads.set_threads` is applied before it runs (its own value
    first, then a group's, then ``$CROPSCOPE_THREADS``, then the load-aware default). A bad
    value is a :class:`~cropscope.errors.SettingsError` (one ``error:`` line).
    """
    if not isinstance(command, click.Command):
        return click.option("--threads", default=None, metavar="N",
                            help=_THREADS_HELP)(_with_threads(command, group=False))
    if any(p.name == "threads" for p in command.params):
        return command
    command.params.append(
        click.Option(["--threads"], default=None, metavar="N", help=_THREADS_HELP))
    if command.callback is not None:
        command.callback = _with_threads(command.callback,
                                         group=isinstance(command, click.Group))
    elif isinstance(command, click.Group):
        command.callback = _with_threads(lambda: None, group=True)
    return command


def _with_threads(func: F, group: bool) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, threads: str | None = None, **kwargs: Any) -> Any:
        meta = click.get_current_context().meta
        if threads is not None:
            meta[_THREADS_META] = threads
        if not group:
            set_threads(meta.get(_THREADS_META))
        return func(*args, **kwargs)

    return wrapper


def add_threads_option(command: click.Command) -> None:
    """:func:`threads_option` on ``command`` and, for a group, on every subcommand."""
    threads_option(command)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_threads_option(sub)


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
            loaded = json.loads(config_file.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise DataError(f"config file {config_file} is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"config file {config_file} is not valid JSON: {exc}") from None
        except RecursionError:
            raise DataError(f"config file {config_file} nests its JSON too deeply") from None
        if not isinstance(loaded, dict):
            raise DataError(f"config file {config_file} must hold a JSON object of options "
                            f"(KEY: VALUE), got {type(loaded).__name__}")
        config.update(loaded)
    for item in settings:
        if "=" not in item:
            raise DataError(f"--set expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        except RecursionError:
            raise DataError(f"--set {key.strip()}: the JSON value nests too deeply") from None
        config[key.strip()] = value
    return config


def option_overrides(settings: tuple[str, ...], **options: Any) -> dict[str, Any]:
    """``KEY=VALUE`` settings, then every named option the user gave (not None) on top."""
    config = parse_config(None, settings)
    config.update({k: v for k, v in options.items() if v is not None})
    return config


def comma_list(text: str | None) -> list[str] | None:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; ``None`` (or nothing listed) stays ``None``."""
    items = [t.strip() for t in text.split(",") if t.strip()] if text else []
    return items or None


def table_columns(id_col: str, time_col: str, label_col: str, bands: str | None
                  ) -> dict[str, Any]:
    """The :func:`table_options` as keyword arguments of :func:`cropscope.data.load_samples`
    (and the workflows that take its inputs)."""
    return {"id_col": id_col, "time_col": time_col, "label_col": label_col,
            "bands": comma_list(bands)}


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
                     help="Class hierarchy: a YAML/JSON/CSV file, a shipped name, or "
                          "'prefixes:2,4,6' (levels from the first 2, 4, 6 characters of "
                          "the class codes, e.g. WorldCereal EWOC codes; default: the one "
                          "shipped with --dataset)."),
        click.option("--decoding", type=click.Choice(["consistent", "independent"]),
                     default="consistent", show_default=True,
                     help="Per-level decoding: best root-to-leaf path, or argmax per level."),
        click.option("--background", default=None,
                     help="Class name left out of the *_no_background scores."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def scale_out_options(func: F) -> F:
    """``--devices``, ``--strategy`` and ``--num-nodes`` of the training engine, passed on
    as ``--set`` trainer options (the command's ``settings``)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, devices: int | None = None, strategy: str | None = None,
                num_nodes: int | None = None, **kwargs: Any) -> Any:
        extra = [f"{key}={json.dumps(value)}" for key, value in
                 (("devices", devices), ("strategy", strategy), ("num_nodes", num_nodes))
                 if value is not None]
        kwargs["settings"] = (*kwargs.get("settings", ()), *extra)
        return func(*args, **kwargs)

    options = [
        click.option("--devices", type=click.IntRange(min=1), default=None,
                     help="Processes/GPUs to train on (default 1)."),
        click.option("--strategy", default=None,
                     help="Lightning strategy, e.g. ddp (default: auto)."),
        click.option("--num-nodes", type=click.IntRange(min=1), default=None,
                     help="Machines to train on with --strategy ddp (default 1)."),
    ]
    out: Any = wrapper
    for option in reversed(options):
        out = option(out)
    return out


# ---------------------------------------------------------------------------- table reader
@contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Show each ``UserWarning`` at once as one ``warning: ...`` line on stderr (not
    Python's two-line format with a source line)."""
    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
             ) -> None:
        click.echo(f"warning: {message}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = show
        yield


def read_options(nodata: str | None, season_start: str | None, no_align: bool,
                 time_step: str | None, wide: str | None, drop_empty: bool = False
                 ) -> dict[str, Any]:
    """The table reader's options given on the command line (None: the reader's default)."""
    values = None
    if nodata is not None:
        try:
            values = [float(v) for v in comma_list(nodata) or []]
        except ValueError:
            raise DataError(f"--nodata takes numbers (comma-separated), got {nodata!r}") \
                from None
    return {"nodata": values, "season_start": season_start,
            "align": "none" if no_align else None, "step": time_step, "wide": wide,
            "drop_empty": True if drop_empty else None}


def reader_options(func: Any) -> Any:
    """Options of the table reader beyond the columns: nodata, seasons, grid, wide tables."""
    options = [
        click.option("--nodata", default=None, metavar="VALUES",
                     help="Table: band values meaning 'no observation' (e.g. 65535), "
                          "comma-separated."),
        click.option("--season-start", default=None, metavar="MM-DD",
                     help="Table: start of the season (crop calendar) used to align samples "
                          "of different years (default: the month most samples start in)."),
        click.option("--no-align", is_flag=True,
                     help="Table: keep calendar dates; do not align samples of different "
                          "seasons on one season."),
        click.option("--time-step", default=None, metavar="STEP",
                     help="Table: composite every sample onto one regular grid: 'monthly' or "
                          "days ('10D'); medians of the valid observations."),
        click.option("--wide", default=None, metavar="PATTERN",
                     help="Table: one row per sample; band/step columns named by the pattern, "
                          "e.g. 'OPTICAL-{band}-ts{t}-*' (comma-separated patterns)."),
        click.option("--drop-empty", is_flag=True,
                     help="Table: drop samples without any valid observation."),
    ]
    for option in reversed(options):
        func = option(func)
    return func
