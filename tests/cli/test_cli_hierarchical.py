"""``cropscope evaluate --hierarchical/--levels`` and ``cropscope taxonomy``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli import assert_one_line_error, run_cli

TAXONOMY = """name: toy
levels: [cover, group, class]
tree:
  crop:
    cereal: [class_0]
    oilseed: [class_1]
  other:
    other: [class_2]
"""


@pytest.fixture
def tax_file(tmp_path) -> Path:
    path = tmp_path / "tax.yaml"
    path.write_text(TAXONOMY)
    return path


@pytest.mark.parametrize("model", ["rf", "tempcnn"])
def test_hierarchical_json_lists_levels(toy_table: Path, tax_file: Path, model: str) -> None:
    settings = ["--set", "n_estimators=20"] if model == "rf" else [
        "--set", "epochs=5", "--set", "batch_size=16"]
    proc = run_cli("evaluate", "--table", str(toy_table), "--model", model, "--hierarchical",
                   "--taxonomy", str(tax_file), "--cv", "3", "--json", *settings)
    out = json.loads(proc.stdout)
    assert [lv["level"] for lv in out["levels"]] == ["cover", "group", "class"]
    assert {"overall_accuracy", "macro_f1", "miou"} <= set(out["levels"][0])
    assert out["inconsistent_fraction"] == 0.0
    assert "independent_inconsistent_fraction" in out
    expected = "hierarchical" if model == "rf" else "tempcnn"
    assert out["config"]["model"] == expected


def test_levels_without_taxonomy_is_a_clear_error(toy_table: Path) -> None:
    proc = run_cli("evaluate", "--table", str(toy_table), "--model", "rf", "--levels",
                   "--cv", "3", check=False)
    assert_one_line_error(proc, "--taxonomy")


def test_taxonomy_commands(tax_file: Path) -> None:
    shown = run_cli("taxonomy", "show", str(tax_file), "--json")
    assert json.loads(shown.stdout)["levels"] == ["cover", "group", "class"]
    assert "sits-matogrosso" in run_cli("taxonomy", "list").stdout


@pytest.mark.realdata
def test_crosswalk_command(real_data_dir, tmp_path) -> None:
    proc = run_cli("taxonomy", "crosswalk", "fr_2018", "--json", "--out",
                   str(tmp_path / "fr.csv"))
    out = json.loads(proc.stdout)
    assert out["mapped"] + out["unmapped"] == out["rows"] == 282
    assert (tmp_path / "fr.csv").stat().st_size > 1000


def test_train_hierarchical_then_predict_every_level(toy_table: Path, tax_file: Path,
                                                     tmp_path) -> None:
    import pandas as pd

    run = tmp_path / "run"
    run_cli("train", "--table", str(toy_table), "--model", "rf", "--hierarchical",
            "--taxonomy", str(tax_file), "--out", str(run), "--set", "n_estimators=20")
    out = tmp_path / "pred.csv"
    run_cli("predict", "--model", str(run), "--input", str(toy_table), "--out", str(out))
    pred = pd.read_csv(out)
    assert {"prediction@cover", "prediction@group", "prediction@class"} <= set(pred.columns)
    assert (pred["prediction@class"] == pred["prediction"]).all()
    crop = pred["prediction@class"].isin(["class_0", "class_1"])
    assert (pred.loc[crop, "prediction@cover"] == "crop").all()
