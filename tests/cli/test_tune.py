"""``cropscope tune``: one JSON object, a run that ``predict`` uses, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.cli.test_cli import assert_one_line_error, run_cli

pytest.importorskip("optuna")

ARGS = ("--model", "logreg", "--trials", "2", "--cv", "2", "--inner-cv", "2", "--seed", "0",
        "--threads", "1")


def test_tune_json_resume_and_predict(toy_table: Path, tmp_path: Path) -> None:
    out = tmp_path / "tuned"
    proc = run_cli("tune", "--table", str(toy_table), *ARGS, "--out", str(out), "--json",
                   "--set", "max_iter=300")
    report = json.loads(proc.stdout)  # exactly one JSON document on stdout
    assert report["run_dir"] == str(out)
    assert {"mean", "std", "pooled", "folds"} <= set(report["nested"])
    assert len(report["nested"]["folds"]) == 2
    assert "optimistic" in report["inner_best"]["what"]
    assert report["final"]["config"]["max_iter"] == 300
    assert "max_iter" not in report["space"]
    assert "tuning" in proc.stderr  # the progress bar goes to stderr

    # the best configuration is a run: predict uses it
    preds = tmp_path / "preds.csv"
    run_cli("predict", "--model", str(out), "--input", str(toy_table), "--out", str(preds))
    assert len(pd.read_csv(preds)) == 45

    # the same command again resumes the finished studies: same figures
    again = json.loads(run_cli("tune", "--table", str(toy_table), *ARGS, "--out", str(out),
                               "--json", "--set", "max_iter=300").stdout)
    assert again["nested"] == report["nested"]

    # other data in the same folder: refused with one error line naming the way out
    df = pd.read_csv(toy_table)
    df.loc[0, "B4"] += 1.0
    changed = tmp_path / "changed.csv"
    df.to_csv(changed, index=False)
    proc = run_cli("tune", "--table", str(changed), *ARGS, "--out", str(out), "--json",
                   "--set", "max_iter=300", check=False)
    assert proc.returncode == 2
    assert_one_line_error(proc, "the data", "--no-resume")
    fresh = run_cli("tune", "--table", str(changed), *ARGS, "--out", str(out), "--json",
                    "--set", "max_iter=300", "--no-resume")
    assert json.loads(fresh.stdout)["final"]["n_trials"] == 2


@pytest.mark.parametrize(("extra", "needles"), [
    (("--model", "cropnet"), ("no built-in search space", "--space")),
    (("--model", "logreg", "--set", "C=0"), ("C",)),
])
def test_tune_errors_are_one_line(toy_table: Path, tmp_path: Path, extra: tuple[str, ...],
                                  needles: tuple[str, ...]) -> None:
    proc = run_cli("tune", "--table", str(toy_table), *extra, "--out", str(tmp_path / "t"),
                   check=False)
    assert_one_line_error(proc, *needles)


def test_tune_space_file_and_text_summary(toy_table: Path, tmp_path: Path) -> None:
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"C": {"type": "categorical", "choices": [0.01, 100.0]}}))
    proc = run_cli("tune", "--table", str(toy_table), *ARGS, "--out", str(tmp_path / "t"),
                   "--space", str(space))
    # the text summary labels the honest figure and the optimistic one apart
    assert "nested CV (2 outer folds" in proc.stdout and "optimistic" in proc.stdout
    best = json.loads((tmp_path / "t" / "tuning.json").read_text())["final"]["best_params"]
    assert best["C"] in (0.01, 100.0)
    space.write_text("[1, 2]")
    proc = run_cli("tune", "--table", str(toy_table), *ARGS, "--out", str(tmp_path / "u"),
                   "--space", str(space), check=False)
    assert_one_line_error(proc, "JSON object")


def test_trials_that_fail_leave_no_traceback(toy_table: Path, tmp_path: Path) -> None:
    """Every trial raises a user error (an unknown feature kind drawn from the space): the
    trials fail quietly, one Optuna line each, and the command ends in one error line."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"features": {"type": "categorical", "choices": [["nope"]]}}))
    proc = run_cli("--threads", "1", "tune", "--table", str(toy_table), "--model", "logreg",
                   "--space", str(space), "--trials", "2", "--cv", "2", "--out",
                   str(tmp_path / "t"), check=False)  # fmt: skip
    assert_one_line_error(proc, "no trial", "nope")
