"""``--threads N`` on every command and group, ``$CROPSCOPE_THREADS``, bad values."""

from __future__ import annotations

import os
from collections.abc import Iterator

import click
import pytest

from cropscope import threads
from cropscope.cli.main import cli, main
from tests.cli.test_cli import assert_one_line_error, run_cli


def _walk(command: click.Command, path: str = "cropscope") -> Iterator[tuple[str, click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _walk(sub, f"{path} {name}")


def test_every_command_accepts_threads() -> None:
    commands = list(_walk(cli))
    assert len(commands) > 20  # the walk reaches the subcommands of the groups
    missing = [path for path, cmd in commands
               if not any(isinstance(p, click.Option) and "--threads" in p.opts
                          for p in cmd.params)]
    assert not missing, f"commands without --threads: {missing}"
    ctx = click.Context(cli)
    for _, cmd in commands:
        assert "--threads" in cmd.get_help(ctx)


def test_threads_applied_before_the_command(restore_threads: None,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    main(["models", "list", "--threads", "2"])
    assert threads.current_threads() == 2
    assert os.environ["OMP_NUM_THREADS"] == "2"
    main(["--threads", "1", "models", "list"])  # a group's value reaches its subcommands
    assert threads.current_threads() == 1
    main(["--threads", "1", "models", "--threads", "2", "list"])  # the nearest one wins
    assert threads.current_threads() == 2
    main(["models", "--threads", "1", "list", "--threads", "2"])
    assert threads.current_threads() == 2
    monkeypatch.setenv(threads.THREADS_ENV, "1")
    main(["models", "list"])
    assert threads.current_threads() == 1
    assert "tempcnn" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_bad_threads_option_is_one_error_line(value: str) -> None:
    proc = run_cli("models", "list", f"--threads={value}", check=False)
    assert proc.returncode == 2
    assert_one_line_error(proc, "--threads", value)
    assert proc.stdout == ""


def test_bad_threads_env_is_one_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(threads.THREADS_ENV, "1.5")
    proc = run_cli("datasets", "list", check=False)
    assert proc.returncode == 2
    assert_one_line_error(proc, threads.THREADS_ENV, "1.5")
