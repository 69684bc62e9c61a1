from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import EvaluationError
from cropscope.evaluation import (
    cross_validate,
    evaluate_predictions,
    plot_confusion_matrix,
    plot_per_class_f1,
    write_report,
)
from tests.evaluation.test_crossval import RESULT_KEYS, CentroidClassifier

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> tuple[int, ...]:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    img = imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert img.shape[0] > 100 and img.shape[1] > 100
    return img.shape


def test_cross_validation_report(tmp_path, toy_set: TimeSeriesSet) -> None:
    res = cross_validate(CentroidClassifier, toy_set, cv=2, group="region")
    files = write_report(res, tmp_path / "run" / "eval")
    out = tmp_path / "run" / "eval"
    expected = {
        "metrics.json",
        "per_class.csv",
        "confusion_matrix.csv",
        "predictions.csv",
        "folds.csv",
        "confusion_matrix.png",
        "per_class_f1.png",
    }
    assert set(files) == expected
    assert all(files[name] == out / name and files[name].is_file() for name in expected)
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)  # no temp files left

    metrics = json.loads((out / "metrics.json").read_text())
    for key in RESULT_KEYS:
        assert key in metrics
    assert metrics["n_samples"] == 60
    assert metrics["overall_accuracy"] == pytest.approx(res.overall_accuracy)

    per_class = pd.read_csv(out / "per_class.csv")
    assert per_class.columns.tolist() == ["class", "precision", "recall", "f1", "support"]
    assert per_class["class"].tolist() == toy_set.classes
    assert per_class["support"].tolist() == [20, 20, 20]

    cm = pd.read_csv(out / "confusion_matrix.csv", index_col=0)
    assert cm.index.tolist() == toy_set.classes and cm.columns.tolist() == toy_set.classes
    assert cm.to_numpy().tolist() == res.metrics["confusion_matrix"]

    folds = pd.read_csv(out / "folds.csv")
    assert folds["fold"].tolist() == [1, 2]
    assert sorted(folds["test_groups"]) == ["north", "south"]
    assert folds["n_test"].sum() == 60
    assert {"overall_accuracy", "macro_f1", "weighted_f1", "kappa"} <= set(folds.columns)

    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == 60 and set(preds.columns) == {"id", "fold", "true", "predicted", "correct"}
    assert preds["correct"].mean() == pytest.approx(res.overall_accuracy)

    _check_png(out / "confusion_matrix.png")
    _check_png(out / "per_class_f1.png")


def test_report_without_folds(tmp_path) -> None:
    res = evaluate_predictions([0, 1, 1, 2], [0, 1, 0, 2], ["a", "b", "c"])
    files = write_report(res, tmp_path, plots=False)
    assert set(files) == {
        "metrics.json",
        "per_class.csv",
        "confusion_matrix.csv",
        "predictions.csv",
    }
    metrics = json.loads(files["metrics.json"].read_text())
    assert metrics["folds"] == [] and metrics["summary"] == {}
    assert metrics["overall_accuracy"] == pytest.approx(0.75)


def test_rewriting_a_report_replaces_files(tmp_path) -> None:
    write_report(evaluate_predictions([0, 1], [0, 0], ["a", "b"]), tmp_path, plots=False)
    write_report(evaluate_predictions([0, 1], [0, 1], ["a", "b"]), tmp_path, plots=False)
    assert json.loads((tmp_path / "metrics.json").read_text())["overall_accuracy"] == 1.0


def test_plot_helpers(tmp_path) -> None:
    cm = np.array([[5, 1, 0], [0, 0, 0], [2, 0, 7]])  # the middle class has no samples
    path = plot_confusion_matrix(cm, ["a", "b", "c"], tmp_path / "cm.png", "title")
    assert path == tmp_path / "cm.png"
    _check_png(path)
    rows = [{"class": c, "f1": f, "support": s} for c, f, s in [("a", 0.8, 6), ("b", 0.0, 0)]]
    _check_png(plot_per_class_f1(rows, tmp_path / "f1.png"))
    with pytest.raises(EvaluationError, match="shape"):
        plot_confusion_matrix(cm, ["a", "b"], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_many_classes_plot(tmp_path) -> None:
    rng = np.random.default_rng(0)
    k = 45
    classes = [f"crop_type_{i:02d}" for i in range(k)]
    cm = rng.integers(0, 20, (k, k))
    shape = _check_png(plot_confusion_matrix(cm, classes, tmp_path / "cm.png"))
    assert shape[0] > 1000  # figure grows with the number of classes


def test_import_does_not_load_matplotlib() -> None:
    code = "import sys, cropscope.evaluation; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
