"""Per-level metrics, mIoU, background handling, hierarchical P/R/F1, CV with levels."""

from __future__ import annotations

import numpy as np
import pytest

from cropscope.errors import EvaluationError
from cropscope.evaluation import classification_metrics, cross_validate
from cropscope.evaluation.hierarchical import hierarchical_prf, hierarchy_report
from cropscope.models import create_model
from tests.conftest import make_toy_set
from tests.models.test_hierarchical import taxonomy


def test_miou_and_background() -> None:
    # truth 0 0 1 1 2, prediction 0 1 1 1 2: IoU = 1/2, 2/3, 1
    m = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 2], ["bg", "a", "b"],
                                background="bg")
    assert m["miou"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["miou_no_background"] == pytest.approx((2 / 3 + 1) / 2)
    f1_a = 2 * 2 / (2 * 2 + 1)
    assert m["macro_f1_no_background"] == pytest.approx((f1_a + 1) / 2)
    with pytest.raises(EvaluationError, match="background"):
        classification_metrics([0], [0], ["a"], background="bg")


def test_hierarchical_prf_gives_partial_credit() -> None:
    truth = np.array([[0, 0, 0], [0, 0, 0], [1, 2, -1]])
    pred = np.array([[0, 0, 0], [0, 1, 1], [1, 2, 2]])
    # hits: 3 + 1 + 2 = 6 over 3 + 3 + 2 known levels
    out = hierarchical_prf(truth, pred)
    assert out["hierarchical_precision"] == pytest.approx(6 / 8)
    assert out["hierarchical_recall"] == pytest.approx(6 / 8)


def test_report_levels_coarse_to_fine() -> None:
    tax = taxonomy()
    truth = np.array([[0, 0, 0], [0, 1, 1], [1, 2, 2]])
    independent = np.array([[0, 0, 0], [1, 1, 1], [1, 2, 2]])  # middle row contradicts
    rep = hierarchy_report(tax, truth, truth, independent)
    assert [lv["level"] for lv in rep["levels"]] == ["cover", "group", "class"]
    assert all(lv["overall_accuracy"] == 1.0 for lv in rep["levels"])
    assert rep["inconsistent_fraction"] == 0.0
    assert rep["independent_inconsistent_fraction"] == pytest.approx(1 / 3)


def test_cross_validate_reports_every_level() -> None:
    ts = make_toy_set(n_per_class=15, seed=4).with_taxonomy(taxonomy())
    result = cross_validate(lambda: create_model("rf", n_estimators=20), ts, cv=3, levels=True)
    out = result.to_dict()
    assert [lv["level"] for lv in out["levels"]] == ["cover", "group", "class"]
    assert out["levels"][-1]["overall_accuracy"] == pytest.approx(out["overall_accuracy"])
    assert 0 <= out["independent_inconsistent_fraction"] <= 1
    with pytest.raises(EvaluationError, match="class hierarchy"):
        cross_validate(lambda: create_model("rf"), make_toy_set(), cv=3, levels=True)
