"""The ``cropscope`` command line."""

from __future__ import annotations

import sys
import warnings

import click

from cropscope import __version__
from cropscope.allocator import keep_freed_memory
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
        cube,
        datasets,
        demo,
        evaluate,
        h2crop,
        hsi,
        models,
        postprocess,
        predict,
        quality,
        samples,
        segment,
        taxonomy,
        train,
        transfer,
        tune,
        weather,
    )

    cli.add_command(datasets.datasets)
    cli.add_command(cube.cube)
    cli.add_command(models.models)
    cli.add_command(train.train)
    cli.add_command(evaluate.evaluate)
    cli.add_command(tune.tune)
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
    cli.add_command(samples.samples)
    cli.add_command(quality.quality)
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


def describe_os_error(exc: OSError) -> str:
    """One line for an error of the file system or the operating system: what happened (in
    words for the common cases) and the file it happened to."""
    import errno

    reasons = {
        errno.ENOSPC: "no space left on the device (disk full)",
        errno.EDQUOT: "disk quota exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "read-only file system",
        errno.ENOENT: "no such file or directory",
        errno.ENOTDIR: "not a directory",
        errno.EISDIR: "is a directory, a file was expected",
        errno.EEXIST: "already exists",
        errno.EIO: "input/output error",
    }
    reason = reasons.get(exc.errno) if exc.errno is not None else None
    if reason is None:
        reason = (exc.strerror or str(exc) or type(exc).__name__).strip()
    where = exc.filename if exc.filename is not None else None
    text = f"{reason}: {where}" if where is not None else reason
    if exc.filename2 is not None:
        text += f" -> {exc.filename2}"
    return " ".join(text.split())  # one line


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors (:class:`~cropscope.errors.CropscopeError`,
    errors of the file system such as a full disk or a read-only folder, and running out of
    memory) become one ``error:`` line on stderr and exit code 2."""
    warnings.filterwarnings("ignore", category=UserWarning, module="rdata")
    _log_to_stderr()
    # this process is the command's own: freed memory is kept for reuse (map jobs' windows)
    keep_freed_memory()
    try:
        cli.main(args=argv, prog_name="cropscope", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # click's own checks: one error line as well
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"error: {' '.join(exc.format_message().split())}{hint}", err=True)
        sys.exit(exc.exit_code)
    except CropscopeError as exc:
        fail(exc)
    except OSError as exc:  # disk full, permission denied, read-only folder, unreadable file
        click.echo(f"error: {describe_os_error(exc)}", err=True)
        sys.exit(2)
    except MemoryError:
        click.echo("error: out of memory (the input is too large for this machine; "
                   "$CROPSCOPE_MEMORY_LIMIT bounds what an input may ask for)", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
