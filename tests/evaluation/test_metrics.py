from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from cropscope.errors import EvaluationError
from cropscope.evaluation import classification_metrics, format_metrics_table

CLASSES = ["wheat", "maize", "rice"]
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
Y_PRED = np.array([0, 1, 0, 1, 2, 2, 2, 0, 2, 1])


def test_matches_sklearn() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, CLASSES)
    assert m["overall_accuracy"] == pytest.approx(accuracy_score(Y_TRUE, Y_PRED))
    assert m["overall_accuracy"] == pytest.approx(0.7)
    assert m["macro_f1"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="weighted"))
    assert m["kappa"] == pytest.approx(cohen_kappa_score(Y_TRUE, Y_PRED))
    assert m["n_samples"] == 10
    assert m["classes"] == CLASSES
    p, r, f, s = precision_recall_fscore_support(Y_TRUE, Y_PRED)
    assert [row["class"] for row in m["per_class"]] == CLASSES
    for i, row in enumerate(m["per_class"]):
        assert row["precision"] == pytest.approx(p[i])
        assert row["recall"] == pytest.approx(r[i])
        assert row["f1"] == pytest.approx(f[i])
        assert row["support"] == s[i]
    assert m["confusion_matrix"] == confusion_matrix(Y_TRUE, Y_PRED).tolist()
    # rows are the truth: 3 wheat samples, 2 predicted wheat and 1 maize
    assert m["confusion_matrix"][0] == [2, 1, 0]


def test_kappa_by_hand() -> None:
    # confusion matrix [[20, 5], [10, 15]]: po = 35/50 = 0.7,
    # pe = (25*30 + 25*20) / 50**2 = 0.5, kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    y_true = np.array([0] * 25 + [1] * 25)
    y_pred = np.array([0] * 20 + [1] * 5 + [0] * 10 + [1] * 15)
    m = classification_metrics(y_true, y_pred, ["a", "b"])
    assert m["confusion_matrix"] == [[20, 5], [10, 15]]
    assert m["kappa"] == pytest.approx(0.4)
    assert m["overall_accuracy"] == pytest.approx(0.7)


def test_zero_division_is_zero_without_warnings() -> None:
    # "b" is never predicted, "c" is absent from both truth and prediction
    y_true, y_pred = [0, 0, 1], [0, 0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
        present = classification_metrics(y_true, y_pred, ["a", "b", "c"], labels_present_only=True)
    rows = {r["class"]: r for r in m["per_class"]}
    assert rows["a"]["precision"] == pytest.approx(2 / 3)
    assert rows["a"]["f1"] == pytest.approx(0.8)
    assert rows["b"] == {"class": "b", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert rows["c"] == {"class": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro_f1"] == pytest.approx(0.8 / 3)
    assert m["macro_f1_classes"] == ["a", "b", "c"]
    # transfer protocol: average only over classes present in the truth
    assert present["macro_f1"] == pytest.approx(0.4)
    assert present["macro_f1"] == pytest.approx(
        f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0)
    )
    assert present["macro_f1_classes"] == ["a", "b"]
    # the per-class rows and the confusion matrix still hold every class
    assert len(present["per_class"]) == 3
    assert np.array(present["confusion_matrix"]).shape == (3, 3)


def test_undefined_kappa_is_zero() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics([1, 1, 1], [1, 1, 1], ["a", "b"])
    assert m["overall_accuracy"] == 1.0
    assert m["kappa"] == 0.0


def test_plain_python_types() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, CLASSES)
    back = json.loads(json.dumps(m))  # no default= needed
    assert back == m
    assert type(m["overall_accuracy"]) is float and type(m["n_samples"]) is int
    assert type(m["confusion_matrix"][0][0]) is int
    assert type(m["per_class"][0]["support"]) is int


@pytest.mark.parametrize(
    ("y_true", "y_pred", "fragment"),
    [
        ([0, 1, 3], [0, 1, 1], "code 3"),
        ([0, -1], [0, 1], "code -1"),
        ([0, 1], [0, 1, 1], "2 true labels but 3 predictions"),
        ([], [], "no samples"),
        ([0.5, 1], [0, 1], "integer class codes"),
    ],
)
def test_bad_input_raises(y_true, y_pred, fragment) -> None:
    with pytest.raises(EvaluationError, match=fragment):
        classification_metrics(y_true, y_pred, ["a", "b"])


def test_format_table() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, CLASSES)
    text = format_metrics_table(m)
    lines = text.splitlines()
    assert lines[0].split() == ["class", "precision", "recall", "f1", "support"]
    wheat = next(line for line in lines if line.startswith("wheat"))
    assert wheat.split() == ["wheat", "0.6667", "0.6667", "0.6667", "3"]
    assert "overall accuracy" in text and "0.7000" in text
    assert "Cohen's kappa" in text and "samples" in text
    assert lines[-1].split()[-1] == "10"
