"""Per-level segmentation scores (H2Crop semantics), crop-change subsets and the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from cropscope.errors import EvaluationError
from cropscope.evaluation.levels import (
    LevelConfusions,
    evaluate_levels,
    format_levels_report,
    level_confusions,
    level_scores,
    levels_result,
    write_levels_report,
)

# truth x prediction; class 0 = background, class 2 never true but predicted once
CM = [[5, 1, 0],
      [2, 3, 1],
      [0, 0, 0]]


def test_level_scores_with_background_follow_the_reference() -> None:
    s = level_scores(CM)
    assert s["overall_accuracy"] == pytest.approx(8 / 12)
    assert s["n_pixels"] == 12
    assert s["iou"] == pytest.approx([5 / 8, 3 / 7, 0.0])  # absent but predicted: IoU 0
    assert s["miou"] == pytest.approx((5 / 8 + 3 / 7 + 0) / 3)
    assert s["recall"][:2] == pytest.approx([5 / 6, 0.5]) and math.isnan(s["recall"][2])
    assert s["precision"] == pytest.approx([5 / 7, 3 / 4, 0.0])
    assert s["f1"][:2] == pytest.approx([10 / 13, 0.6]) and math.isnan(s["f1"][2])
    assert s["macro_f1"] == pytest.approx((10 / 13 + 0.6) / 2)  # F1 of class 2 excluded


def test_level_scores_without_background() -> None:
    s = level_scores(CM, background=0, exclude_background=True)
    # background-truth pixels dropped; the 2 labelled pixels predicted as background count
    assert s["n_pixels"] == 6
    assert s["overall_accuracy"] == pytest.approx(3 / 6)
    assert s["iou"][1:] == pytest.approx([3 / 6, 0.0]) and math.isnan(s["iou"][0])
    assert s["miou"] == pytest.approx(0.25)
    assert s["f1"][1] == pytest.approx(2 / 3) and math.isnan(s["f1"][0])
    assert s["macro_f1"] == pytest.approx(2 / 3)
    # a class neither true nor predicted is left out of every mean
    s4 = level_scores(np.pad(CM, ((0, 1), (0, 1))))
    assert math.isnan(s4["iou"][3]) and s4["miou"] == pytest.approx(level_scores(CM)["miou"])
    with pytest.raises(EvaluationError, match="background"):
        level_scores(CM, background=None, exclude_background=True)
    with pytest.raises(EvaluationError, match="square"):
        level_scores([[1, 2]])


class OneHot(nn.Module):
    """Returns one-hot logits of the prediction stored in ``inputs["pred"]`` ([B, L, H, W])."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.sizes = sizes
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, inputs: dict[str, Tensor]) -> list[Tensor]:
        pred = inputs["pred"]
        return [nn.functional.one_hot(pred[:, i], k).permute(0, 3, 1, 2).float() + self.dummy
                for i, k in enumerate(self.sizes)]


SIZES = [3, 5]


def _dataset(n: int = 5, size: int = 6, seed: int = 0, priors: bool = True
             ) -> list[tuple[dict[str, Tensor], Tensor]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lab = np.stack([rng.integers(0, k, (size, size)) for k in SIZES])
        lab[:, 0, :2] = -1  # ignored pixels
        pred = np.stack([np.where(rng.random((size, size)) < 0.6, lab[i] % k,
                                  rng.integers(0, k, (size, size)))
                         for i, k in enumerate(SIZES)])
        prior = np.stack([np.where(rng.random((size, size)) < 0.5, lab[i],
                                   rng.integers(0, k, (size, size)))
                          for i, k in enumerate(SIZES)])
        prior[0] = lab[0]  # level 1 never changes: its "changed" subset is empty
        inputs = {"S2": torch.zeros(2, 1, size, size), "pred": torch.as_tensor(pred)}
        if priors:
            inputs["priors"] = torch.as_tensor(prior)
        out.append((inputs, torch.as_tensor(lab)))
    return out


def _direct(t: np.ndarray, p: np.ndarray, k: int, no_bg: bool) -> dict[str, float]:
    """OA, mIoU, macro-F1 straight from pixel arrays."""
    keep = t >= 0
    if no_bg:
        keep &= t != 0
    t, p = t[keep], p[keep]
    if not t.size:
        return {"overall_accuracy": math.nan, "miou": math.nan, "macro_f1": math.nan,
                "n_pixels": 0}
    ious, f1s = [], []
    for c in range(1 if no_bg else 0, k):
        inter, union = np.sum((t == c) & (p == c)), np.sum((t == c) | (p == c))
        if union:
            ious.append(inter / union)
        if (t == c).any():
            f1s.append(2 * inter / (np.sum(t == c) + np.sum(p == c)))
    return {"overall_accuracy": float(np.mean(t == p)), "miou": float(np.mean(ious)),
            "macro_f1": float(np.mean(f1s)), "n_pixels": int(t.size)}


def test_level_confusions_split_changed_and_unchanged_pixels() -> None:
    data = _dataset()
    conf = level_confusions(OneHot(SIZES), data, batch_size=2, device="cpu")
    assert conf.n_levels == 2 and conf.n_samples == 5
    assert conf.changed is not None and conf.unchanged is not None
    labels = np.stack([lab.numpy() for _, lab in data])
    preds = np.stack([x["pred"].numpy() for x, _ in data])
    priors = np.stack([x["priors"].numpy() for x, _ in data])
    for i, k in enumerate(SIZES):
        assert conf.all[i].shape == (k, k)
        assert np.array_equal(conf.changed[i] + conf.unchanged[i], conf.all[i])
        t, p = labels[:, i], preds[:, i]
        expect = np.zeros((k, k), dtype=np.int64)
        np.add.at(expect, (t[t >= 0], p[t >= 0]), 1)
        assert np.array_equal(conf.all[i], expect)
        changed = (priors[:, i] != t) & (t >= 0)
        assert conf.changed[i].sum() == changed.sum()
    assert conf.changed[0].sum() == 0 and conf.changed[1].sum() > 0

    plain = level_confusions(OneHot(SIZES), _dataset(priors=False), device="cpu")
    assert plain.changed is None and list(plain.subsets()) == ["all"]


def test_evaluate_levels_matches_numpy_and_writes_reports(tmp_path: Path) -> None:
    data = _dataset()
    res = evaluate_levels(OneHot(SIZES), data, batch_size=3, device="cpu",
                          level_names=["group", "crop"])
    assert res["subsets"] == ["all", "changed", "unchanged"] and res["n_samples"] == 5
    labels = np.stack([lab.numpy() for _, lab in data])
    preds = np.stack([x["pred"].numpy() for x, _ in data])
    priors = np.stack([x["priors"].numpy() for x, _ in data])
    for i, k in enumerate(SIZES):
        entry = res["levels"][i]
        assert entry["level"] == ["group", "crop"][i] and entry["n_classes"] == k
        t, p = labels[:, i], preds[:, i]
        same = priors[:, i] == t
        masks = {"all": np.ones_like(same), "changed": ~same, "unchanged": same}
        for subset, mask in masks.items():
            tt = np.where(mask, t, -1)
            n = 0
            for variant in ("with_background", "without_background"):
                got = entry[subset][variant]
                want = _direct(tt, p, k, variant == "without_background")
                assert got["n_pixels"] == want["n_pixels"]
                for key in ("overall_accuracy", "miou", "macro_f1"):
                    if math.isnan(want[key]):
                        assert got[key] is None
                    else:
                        assert got[key] == pytest.approx(want[key])
                n = n or got["n_pixels"]
            assert subset != "all" or n == int((t >= 0).sum())
        total = entry["all"]["with_background"]["n_pixels"]
        assert total == sum(entry[s]["with_background"]["n_pixels"]
                            for s in ("changed", "unchanged"))
    # the mean over levels skips a level whose subset is empty (level 1 never changes)
    for subset in res["subsets"]:
        for variant in ("with_background", "without_background"):
            vals = [lv[subset][variant]["macro_f1"] for lv in res["levels"]]
            vals = [v for v in vals if v is not None]
            assert res["mean"][subset][variant]["macro_f1"] == pytest.approx(np.mean(vals))
    assert res["levels"][0]["changed"]["with_background"]["overall_accuracy"] is None

    table = format_levels_report(res)
    assert "group" in table and "crop" in table and "mean" in table and "unchanged" in table
    files = write_levels_report(res, tmp_path / "rep")
    assert [f.name for f in files] == ["levels.json", "levels.csv"]
    text = files[0].read_text()
    assert "NaN" not in text and json.loads(text)["levels"][1]["level"] == "crop"
    csv = pd.read_csv(files[1])
    assert list(csv.columns) == ["level", "subset", "background", "overall_accuracy",
                                 "macro_f1", "miou", "n_pixels"]
    assert len(csv) == (2 + 1) * 3 * 2
    row = csv[(csv.level == "crop") & (csv.subset == "all") & (csv.background == "without")]
    assert row.macro_f1.iloc[0] == pytest.approx(
        res["levels"][1]["all"]["without_background"]["macro_f1"])


def test_single_level_model_without_background_variant() -> None:
    class Single(nn.Module):
        def forward(self, inputs: dict[str, Tensor]) -> Tensor:
            return nn.functional.one_hot(inputs["pred"][:, 1], 5).permute(0, 3, 1, 2).float()

    data = [({"pred": x["pred"]}, lab[1]) for x, lab in _dataset(3, priors=False)]
    res = evaluate_levels(Single(), data, device="cpu", background=None)
    assert res["subsets"] == ["all"] and len(res["levels"]) == 1
    assert list(res["levels"][0]["all"]) == ["with_background"]
    assert "with background" in format_levels_report(res)
    direct = levels_result(LevelConfusions(all=[np.array(CM)]), background=None)
    assert direct["mean"]["all"]["with_background"]["overall_accuracy"] == pytest.approx(8 / 12)
