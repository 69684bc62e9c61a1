"""The recipe options that make the official AgriFM / H2Crop recipes expressible: per-level
sum, loss over all pixels, weight decay on every parameter, uncapped warm-up, rotation
probability, the references' mFscore selecting the best epoch; and the official recipes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cropscope.data.readers.h5patches import ArrayPatchDataset
from cropscope.engine.recipe import (
    OFFICIAL_RECIPES,
    SegmentationConfig,
    SegmentationLoss,
    augment_batch,
    official_recipe,
    reference_fscore,
    segmentation_scores,
    warmup_length,
)
from cropscope.engine.segmentation import train_segmentation
from cropscope.engine.tasks import SegmentationTask
from cropscope.errors import ModelError
from tests.engine.test_segmentation import FAST, TinySeg, toy_samples


def _two_levels(seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    outs = [torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 5, 4, 4, generator=g)]
    y = torch.stack([torch.randint(0, 3, (2, 4, 4), generator=g),
                     torch.randint(0, 5, (2, 4, 4), generator=g)], 1)
    y[:, :, 0, :] = -1  # a row of ignored pixels on both levels
    return outs, y


def test_level_sum_and_mean_over_all_pixels() -> None:
    outs, y = _two_levels()
    per_level = [F.cross_entropy(o, y[:, i], ignore_index=-1) for i, o in enumerate(outs)]
    mean = SegmentationLoss(SegmentationConfig())(outs, y)
    total = SegmentationLoss(SegmentationConfig(level_reduction="sum"))(outs, y)
    assert float(mean) == pytest.approx(float(sum(per_level)) / 2, rel=1e-6)
    assert float(total) == pytest.approx(float(sum(per_level)), rel=1e-6)
    # over all pixels: the ignored row counts 0 in the numerator and 1 in the denominator
    every = SegmentationLoss(SegmentationConfig(loss_mean_over="all",
                                                level_reduction="sum"))(outs, y)
    labelled = [(y[:, i] != -1).float().mean() for i in range(2)]
    want = sum(float(c) * float(f) for c, f in zip(per_level, labelled, strict=True))
    assert float(every) == pytest.approx(want, rel=1e-6)
    assert float(every) == pytest.approx(0.75 * float(total), rel=1e-6)  # 3 of 4 rows


def test_decay_all_puts_every_parameter_in_one_group() -> None:
    net = TinySeg({"S2": 2}, levels=[2, 3])
    n = len(list(net.parameters()))
    own = SegmentationTask(net, SegmentationConfig(), steps_per_epoch=10).configure_optimizers()
    assert [g["weight_decay"] for g in own.param_groups] == [5e-4, 0.0]
    assert all(p.ndim > 1 for p in own.param_groups[0]["params"])
    assert all(p.ndim <= 1 for p in own.param_groups[1]["params"])
    ref = SegmentationTask(net, SegmentationConfig(decay_all=True),
                           steps_per_epoch=10).configure_optimizers()
    assert len(ref.param_groups) == 1 and len(ref.param_groups[0]["params"]) == n


def test_warmup_cap() -> None:
    assert warmup_length(100, 1000, 0.2) == 20
    assert warmup_length(100_000, 1000, 0.2) == 1000
    assert warmup_length(100, 1000, None) == 1000
    assert warmup_length(10, 3, 0.2) == 2


def test_rotation_probability() -> None:
    """rotate_p = 0.5 as the H2Crop reference's MapRotate: k uniform in 0-3 applied with
    probability 1/2, so the orientation is kept 5/8 of the time; flips stay at 1/2."""
    x = torch.arange(16.0).reshape(1, 1, 1, 4, 4).repeat(4000, 1, 1, 1, 1)
    y = torch.arange(16).reshape(1, 4, 4).repeat(4000, 1, 1)
    for rotate_p, kept in ((1.0, 0.25), (0.5, 0.625), (0.0, 1.0)):
        gen = torch.Generator().manual_seed(0)
        xs, ys = augment_batch({"S2": x}, y, gen, flip_p=0.0, rotate_p=rotate_p)
        assert torch.equal(xs["S2"][:, 0, 0].long(), ys)  # inputs and labels move together
        share = float((ys == y).all(-1).all(-1).float().mean())
        assert share == pytest.approx(kept, abs=0.03), rotate_p
    gen = torch.Generator().manual_seed(0)
    _, ys = augment_batch({"S2": x}, y, gen, flip_p=0.5, rotate_p=1.0)
    gen = torch.Generator().manual_seed(0)
    _, again = augment_batch({"S2": x}, y, gen)  # rotate_p = 1: the former draws exactly
    assert torch.equal(ys, again)


def test_reference_fscore_leaves_out_classes_absent_from_the_truth() -> None:
    # class 2 is predicted but never true: macro-F1 counts it as 0, mFscore leaves it out
    cm = np.array([[5, 0, 1], [1, 3, 0], [0, 0, 0]])
    p0, r0 = 5 / 6, 5 / 6
    p1, r1 = 1.0, 3 / 4
    want = np.mean([2 * p0 * r0 / (p0 + r0), 2 * p1 * r1 / (p1 + r1)]) * 100
    assert reference_fscore(cm) == pytest.approx(round(want, 2), abs=1e-9)
    assert segmentation_scores(cm)["macro_f1"] * 100 < reference_fscore(cm)
    # a true class never predicted scores 0 and counts
    assert reference_fscore(np.array([[4, 0], [2, 0]])) == pytest.approx(
        round(50 * 2 * (4 / 6) / (4 / 6 + 1), 2))
    assert math.isnan(reference_fscore(np.zeros((3, 3))))


def test_mfscore_selects_the_best_epoch_over_the_levels(tmp_path: Path) -> None:
    data = ArrayPatchDataset(toy_samples(4, levels=2))
    torch.manual_seed(0)
    res = train_segmentation(TinySeg({"S2": 2, "S1": 1}, levels=[2, 3]), data, data,
                             config={**FAST, "monitor": "mfscore", "select_on": "mean",
                                     "level_reduction": "sum"},
                             out_dir=tmp_path, progress=False)
    means = [h["val_mfscore_mean"] for h in res.history]
    fine = [h["val_mfscore"] for h in res.history]
    assert all(round(m, 2) == pytest.approx(m) for m in fine)  # the references' rounding
    # the first epoch reaching the maximum wins (rule "greater")
    assert res.best_epoch == means.index(max(means)) + 1


def test_official_recipes() -> None:
    agrifm = official_recipe("agrifm-official", epochs=2)
    assert agrifm.epochs == 2 and agrifm.decay_all and agrifm.warmup_cap is None
    assert (agrifm.loss_mean_over, agrifm.augment, agrifm.min_lr) == ("all", False, 1e-6)
    h2crop = official_recipe("h2crop")
    assert (h2crop.level_reduction, h2crop.rotate_p, h2crop.cutmix, h2crop.select_on) == (
        "sum", 0.5, 0.5, "mean")
    assert set(OFFICIAL_RECIPES) == {"agrifm", "h2crop"}
    with pytest.raises(ModelError, match="no official recipe"):
        official_recipe("tempcnn")


@pytest.mark.parametrize("bad", [{"level_reduction": "max"}, {"loss_mean_over": "some"},
                                 {"warmup_cap": 0.0}, {"rotate_p": 1.5}, {"flip_p": -0.1},
                                 {"monitor": "kappa"}, {"warmup_start": 2.0}])
def test_recipe_options_are_validated(bad: dict) -> None:
    with pytest.raises(ModelError):
        SegmentationConfig.from_dict(bad)
