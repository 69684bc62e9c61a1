"""Segmentation trainer: recipe, hierarchical loss, checkpoints and exact resume."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from cropscope.data.readers.h5patches import ArrayPatchDataset
from cropscope.engine.checkpoints import read_last, read_weights
from cropscope.engine.segmentation import (
    SegmentationConfig,
    augment_batch,
    confusion_matrix,
    cutmix_batch,
    evaluate_segmentation,
    lr_factor,
    segmentation_scores,
    train_segmentation,
)
from cropscope.errors import ModelError


class TinySeg(nn.Module):
    """Stand-in with the AgriFM forward contract: per-source temporal conv, mean over time,
    resize to the first source's grid, 1x1 head (one per level when ``levels`` is a list)."""

    def __init__(self, sources: Mapping[str, int], levels: int | list[int] = 3,
                 width: int = 8) -> None:
        super().__init__()
        self.names = list(sources)
        self.enc = nn.ModuleDict({k: nn.Conv3d(c, width, (1, 3, 3), padding=(0, 1, 1))
                                  for k, c in sources.items()})
        self.drop = nn.Dropout(0.2)
        sizes = levels if isinstance(levels, list) else [levels]
        self.heads = nn.ModuleList(nn.Conv2d(width * len(sources), k, 1) for k in sizes)
        self.multi = isinstance(levels, list)

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor | list[Tensor]:
        ref = inputs[self.names[0]]
        size = ref.shape[-2:]
        feats = []
        for k in self.names:
            f = torch.relu(self.enc[k](inputs[k].permute(0, 2, 1, 3, 4))).mean(2)
            feats.append(nn.functional.interpolate(f, size=size, mode="bilinear"))
        h = self.drop(torch.cat(feats, 1))
        outs = [head(h) for head in self.heads]
        return outs if self.multi else outs[0]


def toy_samples(n: int = 6, size: int = 8, seed: int = 0, levels: int = 1
                ) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Class = which third of the S2 band-0 range a pixel falls in (learnable per pixel);
    S1 on a half-resolution grid; a few ignore pixels."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s2 = rng.normal(0, 1, (3, 2, size, size)).astype(np.float32)
        s1 = rng.normal(0, 1, (2, 1, size // 2, size // 2)).astype(np.float32)
        m = s2[:, 0].mean(0)
        lab = np.digitize(m, [-0.3, 0.3]).astype(np.int64)
        lab[0, 0] = -1
        if levels == 2:
            lab = np.stack([(lab > 0).astype(np.int64), lab])
            lab[:, 0, 0] = -1
        out.append(({"S2": s2, "S1": s1}, lab))
    return out


FAST = {"epochs": 4, "batch_size": 2, "lr": 5e-2, "warmup_iters": 2, "device": "cpu",
        "seed": 3}


def test_lr_schedule_warms_up_then_decays() -> None:
    f = [lr_factor(i, 100, 10, 0.01, 0.001) for i in range(101)]
    assert f[0] == pytest.approx(0.01)
    # the peak is reached on the last warm-up iteration (mmengine's LinearLR)
    assert f[5] == pytest.approx(0.01 + 0.99 * 5 / 9)
    assert f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert all(a < b for a, b in itertools.pairwise(f[:10]))
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))
    assert f[100] == pytest.approx(0.001)


def test_scores_from_confusion_matrix() -> None:
    pred = torch.tensor([[0, 1, 1, 2]])
    target = torch.tensor([[0, 1, -1, 1]])
    cm = confusion_matrix(pred, target, 3, -1)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    s = segmentation_scores(cm)
    assert s["overall_accuracy"] == pytest.approx(2 / 3)
    # IoU: class0 1, class1 1/2, class2 0 (predicted, never true)
    assert s["miou"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert s["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_augment_keeps_sources_and_label_aligned() -> None:
    s2 = torch.arange(2 * 1 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 1, 4, 4)
    s1 = s2[..., ::2, ::2].clone()
    lab = s2[:, 0, 0].long()
    gen = torch.Generator().manual_seed(0)
    changed = False
    for _ in range(8):
        x, y = augment_batch({"S2": s2, "S1": s1}, lab, gen)
        assert torch.equal(x["S2"][:, 0, 0].long(), y)
        # the coarse grid moved with the fine one: its values are a subset of the fine ones
        for b in range(2):
            assert set(x["S1"][b].flatten().tolist()) <= set(x["S2"][b].flatten().tolist())
        changed |= not torch.equal(y, lab)
    assert changed


def test_training_learns_and_writes_checkpoints(tmp_path: Path) -> None:
    train = ArrayPatchDataset(toy_samples(6, seed=0))
    val = ArrayPatchDataset(toy_samples(2, seed=1))
    torch.manual_seed(0)  # the initial weights do not depend on the tests run before
    model = TinySeg({"S2": 2, "S1": 1})
    before = evaluate_segmentation(model, val, device="cpu")
    res = train_segmentation(model, train, val, config={**FAST, "epochs": 8},
                             out_dir=tmp_path, progress=False)
    assert res.epochs_done == 8 and len(res.history) == 8
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    after = evaluate_segmentation(model, val, device="cpu")
    assert after["loss"] < before["loss"]
    assert after["overall_accuracy"] > 0.6
    for key in ("val_loss", "val_overall_accuracy", "val_miou", "val_macro_f1"):
        assert math.isfinite(res.history[-1][key])
    hist = json.loads((tmp_path / "history.json").read_text())
    assert len(hist["history"]) == 8 and hist["best_epoch"] == res.best_epoch
    last = read_last(tmp_path)
    assert {"model", "optimizer", "scheduler", "scaler", "epoch", "rng", "config"} <= set(last)
    assert last["epoch"] == 8
    assert (tmp_path / "last.safetensors").is_file() and (tmp_path / "last.json").is_file()
    best, meta = read_weights(tmp_path / "best.safetensors")
    assert meta["epoch"] == res.best_epoch and set(best) == set(model.state_dict())
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.pt"))


def _weights(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    data = ArrayPatchDataset(toy_samples(5, seed=2))
    torch.manual_seed(0)
    a = TinySeg({"S2": 2, "S1": 1})
    init = _weights(a)
    train_segmentation(a, data, config=FAST, out_dir=tmp_path / "a", progress=False)

    b = TinySeg({"S2": 2, "S1": 1})
    b.load_state_dict(init)
    r1 = train_segmentation(b, data, config=FAST, out_dir=tmp_path / "b", progress=False,
                            stop_after=2)
    assert r1.epochs_done == 2
    c = TinySeg({"S2": 2, "S1": 1})  # a fresh process would rebuild the model
    torch.manual_seed(123)  # global RNG disturbed in between
    r2 = train_segmentation(c, data, config=FAST, out_dir=tmp_path / "b", progress=False)
    assert r2.resumed_from == 2 and r2.epochs_done == 4 and len(r2.history) == 4
    wa, wc = _weights(a), _weights(c)
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    # and resuming a finished run trains nothing more
    r3 = train_segmentation(c, data, config=FAST, out_dir=tmp_path / "b", progress=False)
    assert r3.epochs_done == 4 and all(torch.equal(wa[k], c.state_dict()[k]) for k in wa)


def test_resume_refuses_changed_config(tmp_path: Path) -> None:
    data = ArrayPatchDataset(toy_samples(4))
    train_segmentation(TinySeg({"S2": 2, "S1": 1}), data, config={**FAST, "epochs": 1},
                       out_dir=tmp_path, progress=False)
    with pytest.raises(ModelError, match="lr"):
        train_segmentation(TinySeg({"S2": 2, "S1": 1}), data,
                           config={**FAST, "lr": 1e-3}, out_dir=tmp_path, progress=False)


def test_hierarchical_levels_and_level_weights() -> None:
    data = ArrayPatchDataset(toy_samples(4, levels=2))
    model = TinySeg({"S2": 2, "S1": 1}, levels=[2, 3])
    res = train_segmentation(model, data, data, config={**FAST, "level_weights": [0.5, 1.0]},
                             progress=False)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    scores = evaluate_segmentation(model, data, device="cpu")
    assert len(scores["iou"]) == 3  # the finest level is scored
    with pytest.raises(ModelError, match="levels"):
        train_segmentation(TinySeg({"S2": 2, "S1": 1}, levels=[2, 3]),
                           ArrayPatchDataset(toy_samples(2)), config=FAST, progress=False)


def test_best_epoch_on_the_mean_over_levels(tmp_path: Path) -> None:
    data = ArrayPatchDataset(toy_samples(4, levels=2))
    torch.manual_seed(0)
    model = TinySeg({"S2": 2, "S1": 1}, levels=[2, 3])
    res = train_segmentation(model, data, data, config={**FAST, "select_on": "mean"},
                             out_dir=tmp_path, progress=False)
    means = [h["val_macro_f1_mean"] for h in res.history]
    assert res.best_score == max(means) and res.best_epoch == means.index(max(means)) + 1
    assert all(math.isfinite(h["val_macro_f1"]) for h in res.history)  # the finest level
    with pytest.raises(ModelError, match="select_on"):
        SegmentationConfig.from_dict({"select_on": "coarsest"})


def test_class_weights_change_the_loss() -> None:
    data = ArrayPatchDataset(toy_samples(2))
    losses = []
    for weights in (None, [1.0, 1.0, 10.0]):
        torch.manual_seed(0)
        model = TinySeg({"S2": 2, "S1": 1})
        res = train_segmentation(model, data, config={**FAST, "epochs": 1, "lr": 1e-9,
                                                      "class_weights": weights,
                                                      "augment": False}, progress=False)
        losses.append(res.history[0]["loss"])
    assert losses[0] != pytest.approx(losses[1])


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ModelError, match="unknown"):
        SegmentationConfig.from_dict({"epoch": 3})
    assert SegmentationConfig().lr == 6e-5


def test_checkpoint_every_and_no_best_without_validation(tmp_path: Path) -> None:
    data = ArrayPatchDataset(toy_samples(2))
    res = train_segmentation(TinySeg({"S2": 2, "S1": 1}), data,
                             config={**FAST, "epochs": 3, "checkpoint_every": 2},
                             out_dir=tmp_path, progress=False, stop_after=1)
    assert res.epochs_done == 1
    # the last epoch of a call is always saved, even off the checkpoint interval
    assert read_last(tmp_path)["epoch"] == 1
    assert not (tmp_path / "best.safetensors").exists()
    assert len(json.loads((tmp_path / "history.json").read_text())["history"]) == 1


# --- CutMix ("CropCutup") -------------------------------------------------------------------

def _constant_batch(n: int = 4, size: int = 12) -> tuple[dict[str, Tensor], Tensor]:
    """Sample b holds the value b everywhere, in every input and on every level."""
    ids = torch.arange(n)
    s2 = ids.float().view(n, 1, 1, 1, 1).expand(n, 3, 2, size, size).clone()
    enmap = ids.float().view(n, 1, 1, 1).expand(n, 5, size // 3, size // 3).clone()
    priors = ids.view(n, 1, 1, 1).expand(n, 2, size, size).clone()
    labels = ids.view(n, 1, 1, 1).expand(n, 2, size, size).clone()
    return {"S2": s2, "EnMAP": enmap, "priors": priors}, labels


def _box(mask: Tensor) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of a mask that must be a filled rectangle (None when empty)."""
    if not mask.any():
        return None
    rows = mask.any(1).nonzero().flatten()
    cols = mask.any(0).nonzero().flatten()
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    assert mask[y0:y1, x0:x1].all() and int(mask.sum()) == (y1 - y0) * (x1 - x0)
    return y0, y1, x0, x1


def test_cutmix_pastes_the_same_footprint_into_every_input_and_level() -> None:
    x, y = _constant_batch()
    orig = ({k: v.clone() for k, v in x.items()}, y.clone())
    gen = torch.Generator().manual_seed(5)
    seen_partial = False
    for _ in range(10):
        mx, my = cutmix_batch(x, y, gen, p=1.0, ratio=(0.5, 0.9))
        assert torch.equal(x["S2"], orig[0]["S2"]) and torch.equal(y, orig[1])  # not in place
        assert mx["priors"].dtype == torch.int64 and my.dtype == y.dtype
        for b in range(len(y)):
            mask = my[b, 0] != b
            box = _box(mask)
            assert box is not None  # p=1 and distinct samples: every sample changed
            y0, y1, x0, x1 = box
            side = y1 - y0
            assert 6 <= side <= 10 and x1 - x0 == side  # floor(r * 12) with r in [0.5, 0.9]
            partner = int(my[b, 0, y0, x0])
            assert partner != b
            # all levels of the label and the priors: the same box from the same partner
            for grid in (my[b], mx["priors"][b]):
                assert torch.equal(grid != b, mask.expand_as(grid))
                assert (grid[:, y0:y1, x0:x1] == partner).all()
            # S2: every time step and band
            s2 = mx["S2"][b]
            assert torch.equal(s2 != b, mask.expand_as(s2))
            assert (s2[..., y0:y1, x0:x1] == partner).all()
            # EnMAP on the 1/3 grid: the box scaled and rounded half up, same partner
            en = mx["EnMAP"][b]
            cbox = _box(en[0] != b)
            expect = tuple((2 * v + 3) // 6 for v in box)
            if expect[0] == expect[1] or expect[2] == expect[3]:
                assert cbox is None
                continue
            assert cbox == expect
            assert torch.equal(en != b, (en[0] != b).expand_as(en))
            assert (en[:, cbox[0]:cbox[1], cbox[2]:cbox[3]] == partner).all()
            # the coarse box covers the fine one's footprint to within one fine pixel
            assert all(abs(3 * c - f) <= 1 for c, f in zip(cbox, box, strict=True))
            seen_partial |= side < 12
    assert seen_partial


def test_cutmix_copies_the_partner_content() -> None:
    g = torch.Generator().manual_seed(0)
    s2 = torch.randn(3, 2, 1, 9, 9, generator=g)
    lab = torch.randint(0, 5, (3, 9, 9), generator=g)
    mx, my = cutmix_batch({"S2": s2}, lab, torch.Generator().manual_seed(1), p=1.0)
    for b in range(3):
        changed = (mx["S2"][b] != s2[b]).any(0).any(0)
        box = _box(changed)
        assert box is not None
        y0, y1, x0, x1 = box
        partners = [j for j in range(3) if j != b and torch.equal(
            mx["S2"][b, ..., y0:y1, x0:x1], s2[j, ..., y0:y1, x0:x1])]
        assert len(partners) == 1
        assert torch.equal(my[b, y0:y1, x0:x1], lab[partners[0], y0:y1, x0:x1])


def test_cutmix_identity_cases_and_determinism() -> None:
    x, y = _constant_batch()
    mx, my = cutmix_batch(x, y, torch.Generator().manual_seed(0), p=0.0)
    assert all(torch.equal(mx[k], x[k]) for k in x) and torch.equal(my, y)
    one = ({k: v[:1] for k, v in x.items()}, y[:1])
    mx, my = cutmix_batch(*one, torch.Generator().manual_seed(0), p=1.0)
    assert all(torch.equal(mx[k], one[0][k]) for k in x) and torch.equal(my, one[1])

    runs = [cutmix_batch(x, y, torch.Generator().manual_seed(7), p=0.5) for _ in range(2)]
    assert torch.equal(runs[0][1], runs[1][1])
    assert all(torch.equal(runs[0][0][k], runs[1][0][k]) for k in x)
    other = cutmix_batch(x, y, torch.Generator().manual_seed(8), p=0.5)
    assert not torch.equal(other[1], runs[0][1]) or not torch.equal(runs[0][1], y)
    with pytest.raises(ModelError, match="probability"):
        cutmix_batch(x, y, torch.Generator(), p=1.5)


def test_cutmix_config_validation_and_round_trip() -> None:
    cfg = SegmentationConfig.from_dict({"cutmix": 0.5, "cutmix_ratio": [0.25, 0.75]})
    assert cfg.cutmix_ratio == (0.25, 0.75)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["cutmix_ratio"] == [0.25, 0.75]
    assert SegmentationConfig.from_dict(d) == cfg
    assert SegmentationConfig().cutmix == 0.0
    for bad in ({"cutmix": -0.1}, {"cutmix": 1.1}, {"cutmix_ratio": [0.0, 0.5]},
                {"cutmix_ratio": [0.8, 0.5]}, {"cutmix_ratio": [0.5, 1.2]},
                {"cutmix_ratio": [0.5]}):
        with pytest.raises(ModelError, match="cutmix"):
            SegmentationConfig.from_dict(bad)


def test_cutmix_training_runs_and_resumes_exactly(tmp_path: Path) -> None:
    data = ArrayPatchDataset(toy_samples(4, seed=4))
    cfg = {**FAST, "epochs": 2, "cutmix": 1.0, "cutmix_ratio": [0.5, 0.9]}
    torch.manual_seed(0)
    a = TinySeg({"S2": 2, "S1": 1})
    init = _weights(a)
    res = train_segmentation(a, data, config=cfg, out_dir=tmp_path / "a", progress=False)
    assert res.epochs_done == 2 and all(math.isfinite(h["loss"]) for h in res.history)
    saved = json.loads((tmp_path / "a" / "history.json").read_text())["config"]
    assert saved["cutmix"] == 1.0 and saved["cutmix_ratio"] == [0.5, 0.9]

    b = TinySeg({"S2": 2, "S1": 1})
    b.load_state_dict(init)
    train_segmentation(b, data, config=cfg, out_dir=tmp_path / "b", progress=False,
                       stop_after=1)
    c = TinySeg({"S2": 2, "S1": 1})
    torch.manual_seed(99)
    r2 = train_segmentation(c, data, config=cfg, out_dir=tmp_path / "b", progress=False)
    assert r2.resumed_from == 1 and r2.epochs_done == 2
    wa, wc = _weights(a), _weights(c)
    assert all(torch.equal(wa[k], wc[k]) for k in wa)

    # CutMix really changes training (same seed, cutmix off)
    d = TinySeg({"S2": 2, "S1": 1})
    d.load_state_dict(init)
    train_segmentation(d, data, config={**cfg, "cutmix": 0.0}, progress=False)
    assert any(not torch.equal(wa[k], v) for k, v in d.state_dict().items())
