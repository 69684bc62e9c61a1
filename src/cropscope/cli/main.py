"""The ``cropscope`` command line."""

from __future__ import annotations

import os
import sys
import warnings

import click

from cropscope import __version__
from cropscope.cli._common import add_threads_option, fail
from cropscope.errors import CropscopeError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="cropscope")
def cli() -> None:
    """cropscope: crop-type mapping from satellite image time series.

    Results go to stdout (or files); progress and logs go to stderr.
    """


def _register() -> None:
    from cropscope.cli import (
        assessment,
        datasets,
        demo,
        evaluate,
        h2crop,
        hsi,
        models,
        postprocess,
        predict,
        segment,
        taxonomy,
        train,
        transfer,
        weather,
    )

    cli.add_command(datasets.datasets)
    cli.add_command(models.models)
    cli.add_command(train.train)
    cli.add_command(evaluate.evaluate)
    cli.add_command(predict.predict)
    cli.add_command(demo.demo)
    cli.add_command(weather.weather)
    cli.add_command(hsi.hsi)
    cli.add_command(taxonomy.taxonomy)
    cli.add_command(transfer.transfer)
    cli.add_command(segment.segment)
    cli.add_command(h2crop.h2crop)
    cli.add_command(assessment.sample_design)
    cli.add_command(assessment.accuracy)
    cli.add_command(postprocess.smooth)
    cli.add_command(postprocess.propose_samples)
    for command in (postprocess.sieve, postprocess.reclassify, postprocess.rollup,
                    postprocess.mosaic):
        cli.add_command(command)
    cli.add_command(assessment.report)
    # --threads N on every command and group, applied before the command runs
    add_threads_option(cli)


_register()


def _log_to_stderr() -> None:
    """The library logs progress to the ``cropscope`` logger: show it on stderr."""
    import logging

    logger = logging.getLogger("cropscope")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one line on stderr, exit code 2."""
    warnings.filterwarnings("ignore", category=UserWarning, module="rdata")
    _log_to_stderr()
    # GDAL's block cache defaults to 5 % of RAM per process; windowed map reads touch each
    # block once, so a small cache keeps map jobs' memory bounded (user settings win)
    os.environ.setdefault("GDAL_CACHEMAX", "256")
    try:
        cli.main(args=argv, prog_name="cropscope", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CropscopeError as exc:
        fail(exc)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
