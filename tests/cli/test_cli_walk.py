"""Every ``cropscope`` command with bad arguments (issue 20): one ``error:`` line (or click's
``Error:`` usage line), exit code 2, never a traceback.

The commands are enumerated from the click groups, so a new command is walked too. Each is
called through :func:`cropscope.cli.main.main` (the console script's error handling) in this
process: a missing file, a folder where a file is expected, a damaged file, an empty file,
an output path under a file, ``--threads 0``; then bad option values (``--set epochs=0``,
``--set lr=abc``, ``--halo -1``, ``--scale nan``...) and faults of the system (a full disk,
a permission denied) on real inputs.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import traceback
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from cropscope.cli.main import cli, main
from tests.conftest import make_toy_set


def _leaves(command: click.Command, path: tuple[str, ...] = ()
            ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _leaves(sub, (*path, name))
    else:
        yield path, command


COMMANDS = dict(_leaves(cli))
#: commands whose positional argument is a folder they create (a missing path is fine there)
CREATES = {("h2crop", "generate"), ("h2crop", "from-enmap")}
#: values for required options that are not files
PLAIN = {"--model": "rf", "--n": "3", "--min-pixels": "3", "--lat": "1", "--lon": "1",
         "--coarsen": "2", "--label-column": "label", "--variable": "t2m",
         "--official": "x", "--network": "agrifm", "--taxonomy": "h2crop"}


def run_main(argv: list[str]) -> tuple[object, str]:
    """``cropscope ARGV`` in this process: (exit code, stderr). An exception that escapes
    ``main`` counts as a traceback."""
    err = io.StringIO()
    code: object = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            code = "traceback"
            err.write("Traceback (escaped main)\n" + traceback.format_exc())
        finally:  # main's log handler writes to this call's stderr: drop it
            logging.getLogger("cropscope").handlers.clear()
    return code, err.getvalue()


def assert_clean_failure(argv: list[str]) -> str:
    code, err = run_main(argv)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err, f"{argv}:\n{err}"
    assert code == 2, f"{argv}: exit {code}\n{err}"
    assert len(lines) == 1, f"{argv}:\n{err}"
    return lines[0]


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("bad")
    (base / "folder").mkdir()
    (base / "garbage.tif").write_bytes(bytes(range(256)) * 3)
    (base / "empty.csv").write_text("")
    return {"missing": str(base / "missing.tif"), "folder": str(base / "folder"),
            "garbage": str(base / "garbage.tif"), "empty": str(base / "empty.csv"),
            "out_under_file": str(base / "garbage.tif" / "out.tif")}


def _argv(path: tuple[str, ...], command: click.Command, filler: str, out: str) -> list[str]:
    argv = list(path)
    for param in command.params:
        if isinstance(param, click.Argument):
            argv.append(filler)
        elif isinstance(param, click.Option) and param.required:
            name = param.opts[0]
            if param.is_flag:
                argv.append(name)
            elif name == "--out":
                argv += [name, out]
            else:
                argv += [name, PLAIN.get(name, filler)]
    return argv


def _needs_input(command: click.Command) -> bool:
    return any(isinstance(p, click.Argument) or (isinstance(p, click.Option) and p.required
               and p.opts[0] not in PLAIN and p.opts[0] != "--out" and not p.is_flag)
               for p in command.params)


def test_the_walk_reaches_every_command() -> None:
    assert len(COMMANDS) >= 35
    assert {("train",), ("predict",), ("segment", "train"), ("h2crop", "train"),
            ("weather", "fit"), ("mosaic",), ("report",)} <= set(COMMANDS)


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_command_refuses_bad_files_cleanly(path: tuple[str, ...], bad: dict[str, str],
                                                restore_threads: None) -> None:
    command = COMMANDS[path]
    # a bad thread count: refused before anything runs
    assert_clean_failure([*_argv(path, command, bad["missing"], bad["out_under_file"]),
                          "--threads", "0"])
    if not _needs_input(command):
        return
    fillers = ["garbage", "empty"] if path in CREATES else \
        ["missing", "folder", "garbage", "empty"]
    for filler in fillers:
        assert_clean_failure([*_argv(path, command, bad[filler], bad["out_under_file"]),
                              "--threads", "1"])


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A table, a scene, a classifier run and a map made from them."""
    from cropscope.training.rundir import train_run
    from tests.mapping.test_job import N_TIMES, write_scene

    base = tmp_path_factory.mktemp("real")
    ts = make_toy_set(n_per_class=10, n_times=N_TIMES, bands=("B4", "B8"))
    table = base / "t.csv"
    ts.to_long().drop(columns="valid").to_csv(table, index=False)
    scene = write_scene(base / "scene")
    from tests.weather.conftest_helpers import make_uvz_dataset

    make_uvz_dataset(n_lat=9, n_lon=12).to_netcdf(base / "uvz.nc", engine="scipy")
    train_run(ts, "rf", base / "run", config={"n_estimators": 5, "n_jobs": 1}, holdout=0)
    code, err = run_main(["predict", "--model", str(base / "run"), "--input", str(scene),
                          "--out", str(base / "map" / "map.tif"), "--tile", "32",
                          "--threads", "1"])
    assert code == 0, err
    return {"table": str(table), "scene": str(scene), "run": str(base / "run"),
            "map": str(base / "map" / "map.tif"),
            "proba": str(base / "map" / "map_probabilities.tif"), "base": str(base),
            "weather": str(base / "uvz.nc")}


def _option_cases(r: dict[str, str]) -> list[tuple[list[str], str]]:
    out = str(Path(r["base"]) / "out")
    train = ["train", "--table", r["table"], "--out", out + "/run", "--holdout", "0"]
    cube = ["predict", "--model", r["run"], "--input", r["scene"], "--out",
            out + "/m/map.tif", "--tile", "32"]
    return [
        ([*train, "--model", "tempcnn", "--set", "epochs=0"], "epochs"),
        ([*train, "--model", "tempcnn", "--set", "lr=abc"], "lr"),
        ([*train, "--model", "tempcnn", "--set", "batch_size=2.5"], "batch_size"),
        ([*train, "--model", "tempcnn", "--set", "dropout=2"], "dropout"),
        ([*train, "--model", "tempcnn", "--set", "devices=abc"], "devices"),
        ([*train, "--model", "rf", "--set", "n_estimators=0"], "n_estimators"),
        ([*train, "--model", "rf", "--set", "features=values"], "features"),
        ([*train, "--model", "lightgbm", "--set", "learning_rate=abc"], "learning_rate"),
        ([*train, "--model", "rf", "--holdout", "1.5"], "holdout"),
        ([*train, "--model", "rf", "--threads", "abc"], "thread"),
        (["evaluate", "--table", r["table"], "--model", "tempcnn", "--cv", "2",
          "--set", "epochs=0"], "epochs"),
        (["evaluate", "--table", r["table"], "--model", "rf", "--cv", "1"], "folds"),
        (["segment", "train", r["base"], "--out", out + "/seg", "--set", "lr=abc"], ""),
        (["h2crop", "train", r["base"], "--out", out + "/h2", "--set", "lr=abc"], "lr"),
        (["h2crop", "train", r["base"], "--out", out + "/h2", "--epochs", "0"], "epochs"),
        (["weather", "fit", "--input", r["weather"], "--out", out + "/w", "--set", "lr=abc"],
         "lr"),
        (["weather", "fit", "--input", r["weather"], "--out", out + "/w", "--set", "steps=0"],
         "steps"),
        (["weather", "evaluate", "--input", r["weather"], "--coarsen", "2",
          "--set", "d_model=2.5"], "d_model"),
        ([*cube, "--halo", "-1"], "halo"),
        ([*cube, "--scale", "nan"], "scale"),
        ([*cube, "--scale", "0"], "scale"),
        ([*cube[:-2], "--tile", "0"], "tile"),
        ([*cube, "--workers", "0"], "workers"),
        ([*cube, "--batch-size", "0"], "--batch-size"),
        ([*cube[:-4], "--out", out + "/m/map.png"], ".tif"),  # issue 20 item 7
        (["report", "--map", r["proba"], "--out", out + "/r.html"], "class labels"),
        (["sieve", "--map", r["map"], "--min-pixels", "0", "--out", out + "/s.tif"], "2"),
        (["demo", "--out", r["table"]], "exists"),
        (["train", "--table", r["table"], "--model", "rf", "--out", r["table"]],
         "not a directory"),
    ]


def test_bad_option_values_are_one_error_line(real: dict[str, str],
                                              restore_threads: None) -> None:
    for argv, needle in _option_cases(real):
        line = assert_clean_failure([*argv, "--threads", "1"] if "--threads" not in argv
                                    else argv)
        assert needle in line, (argv, line)
    assert not (Path(real["base"]) / "out" / "m" / "map.tif").exists()
    assert not (Path(real["base"]) / "out" / "run").exists()


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "disk full"),
                                        (errno.EACCES, "permission denied"),
                                        (errno.EROFS, "read-only")])
def test_system_faults_are_one_error_line_and_leave_nothing(
        real: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        restore_threads: None, code: int, words: str) -> None:
    """A full disk, a permission denied or a read-only folder at the moment a result is put
    in place (every cropscope writer ends with ``os.replace``): one line, nothing left."""
    real_replace = os.replace

    def failing(src: object, dst: object) -> None:
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(os, "replace", failing)
    commands = [
        (["train", "--table", real["table"], "--model", "rf", "--out", str(tmp_path / "run"),
          "--set", "n_estimators=3"], tmp_path / "run"),
        (["predict", "--model", real["run"], "--input", real["table"],
          "--out", str(tmp_path / "p.csv")], tmp_path / "p.csv"),
        (["predict", "--model", real["run"], "--input", real["scene"],
          "--out", str(tmp_path / "m" / "map.tif"), "--tile", "32"], tmp_path / "m" / "map.tif"),
    ]
    for argv, output in commands:
        line = assert_clean_failure([*argv, "--threads", "1"])
        assert words in line, line
        assert not output.exists(), output
    monkeypatch.setattr(os, "replace", real_replace)


def test_a_one_pixel_scene_maps_and_post_processes(real: dict[str, str], tmp_path: Path,
                                                   restore_threads: None) -> None:
    """Issue 20 item 10: a 1 x 1 scene ended in a GDAL error (no overview of one pixel) and
    sieving it in another. Every map command works on it or says why not in one line."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    scene = tmp_path / "one"
    scene.mkdir()
    for k in range(6):
        with rasterio.open(scene / f"x_2020-0{k + 1}-05.tif", "w", driver="GTiff", width=1,
                           height=1, count=2, dtype="float32", crs="EPSG:32633",
                           transform=from_origin(0, 0, 10, 10)) as dst:
            dst.write(np.full((2, 1, 1), 0.2 + 0.05 * k, dtype="float32"))
            dst.set_band_description(1, "B4")
            dst.set_band_description(2, "B8")
    out = tmp_path / "m" / "map.tif"
    proba = out.with_name("map_probabilities.tif")
    commands = [
        ["predict", "--model", real["run"], "--input", str(scene), "--out", str(out)],
        ["smooth", "--probabilities", str(proba), "--out", str(out.with_name("s.tif"))],
        ["sieve", "--map", str(out), "--min-pixels", "2", "--out", str(out.with_name("v.tif"))],
        ["propose-samples", "--probabilities", str(proba), "--n", "1",
         "--out", str(out.with_name("p.gpkg"))],
        ["report", "--map", str(out), "--out", str(out.with_name("r.html"))],
        ["mosaic", str(out), "--out", str(out.with_name("mo.tif"))],
        ["sample-design", "--map", str(out), "--n", "10", "--out", str(out.with_name("d.gpkg"))],
    ]
    for argv in commands:
        code, err = run_main([*argv, "--threads", "1"])
        assert "Traceback" not in err, err
        if code != 0:
            assert_clean_failure([*argv, "--threads", "1"])
    with rasterio.open(out) as src:
        assert src.shape == (1, 1) and src.read(1)[0, 0] != 255
