"""The CropGlobe transfer protocol: label remapping, group splits, transfer evaluation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import DataError, EvaluationError
from cropscope.transfer import (
    CROPGLOBE_CLASSES,
    CROPGLOBE_TARGET_CLASSES,
    TransferSplit,
    align_target,
    compact_classes,
    drop_duplicates,
    evaluate_transfer,
    group_block_splits,
    parse_groups,
    remap_predictions,
    score_transfer,
    split_by_groups,
)
from cropscope.transfer.protocol import target_label_space
from tests.conftest import make_toy_set

ALL = list(CROPGLOBE_CLASSES)


def _remap(country: str, pred: list[str]) -> list[str]:
    space = target_label_space(country, ALL, CROPGLOBE_TARGET_CLASSES)
    return list(pred) if space is None else remap_predictions(pred, space).tolist()


def test_remap_follows_the_reference_rules() -> None:
    # AUS: anything but sugarcane or cotton becomes other
    assert _remap("AUS", ALL) == ["other"] * 4 + ["sugarcane", "cotton", "other"]
    # CHN: anything but corn, soybeans or rice becomes other
    assert _remap("CHN", ALL) == ["corn", "soybeans", "rice"] + ["other"] * 4
    # ARG: only wheat becomes other
    assert _remap("ARG", ALL) == ["corn", "soybeans", "rice", "other", "sugarcane", "cotton",
                                  "other"]
    # Europe and USA: no remapping
    for cc in ("FRA", "BEL", "NLD", "GBR", "USA"):
        assert _remap(cc, ALL) == ALL


def test_remap_needs_other_in_the_label_space() -> None:
    with pytest.raises(DataError, match="not in the target label space"):
        remap_predictions(["corn"], ["corn", "rice"])


def test_remapped_scores_count_other_as_correct() -> None:
    truth = ["other", "other", "cotton", "sugarcane"]
    pred = ["corn", "wheat", "cotton", "sugarcane"]  # corn/wheat do not exist in AUS
    plain = score_transfer(truth, pred, ALL)
    remapped = score_transfer(truth, pred, ALL, CROPGLOBE_TARGET_CLASSES["AUS"])
    assert plain["overall_accuracy"] == 0.5
    assert remapped["overall_accuracy"] == 1.0
    # macro-F1 over the classes present in the truth only
    assert remapped["macro_f1_classes"] == ["sugarcane", "cotton", "other"]
    assert remapped["macro_f1"] == 1.0


def test_source_label_space_and_target_filtering() -> None:
    src = TimeSeriesSet.from_labels(np.zeros((4, 2, 1)), ["b"], ["wheat", "corn", "wheat", "x"],
                                    classes=["corn", "rice", "wheat", "x"])
    compact = compact_classes(src)
    assert compact.classes == ["corn", "wheat", "x"]  # rice absent: dropped, order kept
    assert compact.label_names.tolist() == ["wheat", "corn", "wheat", "x"]
    tgt = TimeSeriesSet.from_labels(np.zeros((5, 2, 1)), ["b"],
                                    ["rice", "corn", "rice", "cotton", "wheat"])
    aligned, dropped = align_target(tgt, compact.classes)
    assert dropped == {"cotton": 1, "rice": 2}
    assert aligned.classes == compact.classes
    assert aligned.label_names.tolist() == ["corn", "wheat"]


def test_drop_duplicates_keeps_the_first_occurrence() -> None:
    values = np.array([[[1.0]], [[2.0]], [[1.0]], [[np.nan]], [[np.nan]]])
    ts = TimeSeriesSet.from_labels(values, ["b"], ["a", "b", "c", "a", "b"])
    out = drop_duplicates(ts)
    assert out.ids.tolist() == [0, 1, 3]
    assert out.label_names.tolist() == ["a", "b", "a"]


def _years(n: int = 60) -> TimeSeriesSet:
    ts = make_toy_set(n_per_class=n // 3)
    years = np.array([2000 + i % 6 for i in range(ts.n_samples)])
    return ts.replace(meta=pd.DataFrame({"year": years}))


def test_group_splits_are_disjoint() -> None:
    ts = _years()
    split = TransferSplit("year", parse_groups("2000-2002,2005", [2000 + i for i in range(6)]),
                          ("2003", "2004"))
    assert split.train_groups == ("2000", "2001", "2002", "2005")
    src, tgt = split_by_groups(ts, split)
    assert set(src.meta["year"]) == {2000, 2001, 2002, 2005}
    assert set(tgt.meta["year"]) == {2003, 2004}
    assert not set(src.ids) & set(tgt.ids)
    with pytest.raises(EvaluationError, match="disjoint"):
        TransferSplit("year", ("2000", "2001"), ("2001",))

    splits = group_block_splits(ts, "year", 3)
    assert len(splits) == 3
    seen = []
    for s in splits:
        assert not set(s.train_groups) & set(s.test_groups)
        assert set(s.train_groups) | set(s.test_groups) == {str(2000 + i) for i in range(6)}
        seen += list(s.test_groups)
    assert sorted(seen) == sorted(set(seen))  # every group is a target exactly once


def test_parse_groups_errors() -> None:
    with pytest.raises(DataError, match="not found"):
        parse_groups("1999,2000", [2000, 2001])
    assert parse_groups(["north"], ["north", "south"]) == ("north",)


def test_evaluate_transfer_over_seeds() -> None:
    ts = make_toy_set(n_per_class=30, seed=4)
    src = ts.subset(ts.meta["region"] == "north")
    tgt = ts.subset(ts.meta["region"] == "south")
    res = evaluate_transfer("rf", src, {"south": tgt}, seeds=(0, 1, 2),
                            config={"n_estimators": 15, "n_jobs": 1, "features": ["values"]})
    assert [r["seed"] for r in res.runs] == [0, 1, 2]
    oa = [r["overall_accuracy"] for r in res.runs]
    s = res.summary["south"]["overall_accuracy"]
    assert s["mean"] == pytest.approx(np.mean(oa)) and s["std"] == pytest.approx(np.std(oa))
    assert s["mean"] > 0.9
    again = evaluate_transfer("rf", src, tgt, seeds=(0, 1, 2),
                              config={"n_estimators": 15, "n_jobs": 1, "features": ["values"]})
    assert [r["overall_accuracy"] for r in again.runs] == oa
    assert np.asarray(res.confusion["south"]).sum() == 3 * tgt.n_samples


def test_evaluate_transfer_drops_classes_the_source_lacks() -> None:
    ts = make_toy_set(n_per_class=20, seed=5)
    src = ts.subset(ts.labels != 2)
    res = evaluate_transfer("rf", src, ts, seeds=(0,), config={"n_estimators": 10, "n_jobs": 1})
    assert res.classes == ["class_0", "class_1"]
    assert res.runs[0]["dropped"] == {"class_2": 20}
    assert res.runs[0]["n_target"] == 40
    with pytest.raises(DataError, match="no sample of a class"):
        evaluate_transfer("rf", src, ts.subset(ts.labels == 2), seeds=(0,))
