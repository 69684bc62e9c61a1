"""``cropscope transfer evaluate`` and ``cropscope transfer study``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cropscope.cli.main import main
from tests.conftest import make_toy_set


@pytest.fixture
def year_table(tmp_path):
    ts = make_toy_set(n_per_class=15, seed=2)
    ts = ts.replace(meta=pd.DataFrame({"year": [2000 + i % 3 for i in range(ts.n_samples)]}))
    return ts.to_parquet(tmp_path / "samples.parquet")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_transfer_evaluate_json(capsys, year_table, tmp_path) -> None:
    code, out, _ = _run(capsys, "transfer", "evaluate", "--table", str(year_table),
                        "--group", "year", "--train", "2000-2001", "--test", "2002",
                        "--model", "rf", "--set", "n_estimators=10", "--set", "n_jobs=1",
                        "--seeds", "0,1", "--json", "--out", str(tmp_path / "ev"))
    assert code == 0
    data = json.loads(out)  # exactly one JSON object
    assert data["summary"]["2002"]["overall_accuracy"]["mean"] > 0.8
    assert len(data["runs"]) == 2
    assert (tmp_path / "ev" / "runs.csv").is_file()


def test_transfer_evaluate_user_errors(capsys, year_table) -> None:
    code, _, err = _run(capsys, "transfer", "evaluate", "--table", str(year_table),
                        "--group", "year", "--train", "2000", "--test", "2000",
                        "--model", "rf")
    assert code == 2 and err.startswith("error:") and "disjoint" in err
    code, _, err = _run(capsys, "transfer", "evaluate", "--table", str(year_table),
                        "--group", "region", "--train", "a", "--test", "b", "--model", "rf")
    assert code == 2 and "no metadata column 'region'" in err


def test_transfer_study_cli(capsys, year_table, tmp_path) -> None:
    out_dir = tmp_path / "study"
    code, out, err = _run(capsys, "transfer", "study", "--table", str(year_table),
                          "--group", "year", "--train", "2000,2001", "--test", "2002",
                          "--features", "raw,harmonic", "--models", "rf", "--aug", "off",
                          "--seeds", "0", "--jobs", "1", "--no-plot", "--json",
                          "--out", str(out_dir))
    assert code == 0, err
    data = json.loads(out)
    assert {r["feature"] for r in data["table"]} == {"raw", "harmonic"}
    assert (out_dir / "study.md").is_file()
    runs = pd.read_csv(out_dir / "runs.csv")
    assert np.all(runs["n_target"] == 15)


def test_transfer_evaluate_cropglobe_files(capsys, tmp_path) -> None:
    from cropscope.data.readers.cropglobe import write_cropglobe_file

    rng = np.random.default_rng(0)
    for cc, codes in (("USA", np.repeat([0, 1, 4, 5, 6], 12)), ("CHN", np.repeat([0, 1, 6], 8))):
        fea = rng.normal(0, 0.02, (len(codes), 10, 43)) + codes[:, None, None] / 6
        write_cropglobe_file(tmp_path, "median", cc, fea, codes)
    code, out, err = _run(capsys, "transfer", "evaluate", "--cropglobe", str(tmp_path),
                          "--source", "USA", "--targets", "CHN", "--model", "rf",
                          "--set", "n_estimators=10", "--set", "n_jobs=1", "--seeds", "0",
                          "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["config"]["other"] == "other" and data["config"]["dedupe"] is True
    assert data["runs"][0]["macro_f1_classes"] == ["corn", "soybeans", "other"]
    assert data["summary"]["CHN"]["overall_accuracy"]["mean"] > 0.9
