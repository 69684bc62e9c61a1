"""Options a user can get wrong end in one ``error:`` line, not a traceback (each case was
found by feeding the commands bad input)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_cli import assert_one_line_error, run_cli


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999"])
def test_seed_out_of_numpy_range(toy_table: Path, tmp_path: Path, seed: str) -> None:
    for args in (["evaluate", "--table", str(toy_table), "--model", "logreg"],
                 ["train", "--table", str(toy_table), "--model", "logreg", "--out",
                  str(tmp_path / "run")]):  # fmt: skip
        proc = run_cli("--threads", "1", *args, "--seed", seed, check=False)
        assert_one_line_error(proc, "--seed")
    assert not (tmp_path / "run").exists()


def test_deeply_nested_json_options(toy_table: Path, tmp_path: Path) -> None:
    deep = "[" * 20_000 + "]" * 20_000  # (one argument is at most 128 KiB)
    proc = run_cli("--threads", "1", "evaluate", "--table", str(toy_table), "--model", "rf",
                   "--set", f"C={deep}", check=False)  # fmt: skip
    assert_one_line_error(proc, "--set C", "nests too deeply")
    config = tmp_path / "deep.json"
    config.write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    proc = run_cli("--threads", "1", "evaluate", "--table", str(toy_table), "--model", "rf",
                   "--config", str(config), check=False)  # fmt: skip
    assert_one_line_error(proc, "deep.json", "too deeply")


def test_unknown_training_strategy(toy_table: Path, tmp_path: Path) -> None:
    proc = run_cli("--threads", "1", "train", "--table", str(toy_table), "--model", "tempcnn",
                   "--set", "epochs=1", "--set", "strategy=nope", "--out", str(tmp_path / "r"),
                   check=False)  # fmt: skip
    assert_one_line_error(proc, "unknown training strategy 'nope'", "ddp")


def test_thread_count_of_a_tree_model(toy_table: Path) -> None:
    for value in ('"x"', "0", "1.5"):
        proc = run_cli("--threads", "1", "evaluate", "--table", str(toy_table), "--model", "rf",
                       "--set", f"n_jobs={value}", "--cv", "2", check=False)  # fmt: skip
        assert_one_line_error(proc, "n_jobs")


def test_zero_batch_size(toy_table: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_cli("--threads", "1", "train", "--table", str(toy_table), "--model", "logreg",
            "--out", str(run))  # fmt: skip
    proc = run_cli("--threads", "1", "predict", "--model", str(run), "--input", str(toy_table),
                   "--out", str(tmp_path / "p.csv"), "--batch-size", "0", check=False)  # fmt: skip
    assert_one_line_error(proc, "--batch-size")
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("content", [b"", b"hi\n", b"MATLAB 5.0 MAT-file" + b"\0" * 10])
def test_matlab_file_that_is_not_one(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "scene.mat"
    path.write_bytes(content)
    proc = run_cli("hsi", "info", str(path), check=False)
    assert_one_line_error(proc, "scene.mat")


@pytest.mark.parametrize("text", ["2", "0", "nan", "0.8,maize=1.5", "-0.1"])
def test_expected_users_accuracy_outside_0_1(text: str) -> None:
    import click

    from cropscope.cli.assessment import _expected

    with pytest.raises(click.BadParameter, match=r"in \(0, 1\]"):
        _expected(text)
    assert _expected("0.85,water=0.6") == (0.85, {"water": 0.6})
