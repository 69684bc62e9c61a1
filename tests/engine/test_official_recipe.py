"""cropscope's official recipes against the official training runs: the optimiser groups and
the learning rate of every one of the 1002 iterations that the official mmengine loops of
AgriFM and H2Crop logged in their checkpoints (../shared/data/official_reference)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cropscope.engine.recipe import official_recipe
from cropscope.engine.tasks import SegmentationTask
from cropscope.models.agrifm import AgriFM
from cropscope.models.checkpoint_reader import read_checkpoint
from cropscope.models.h2crop import H2CropNet
from tests.conftest import shared_folder

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def folder(real_data_dir: Path) -> Path:
    return shared_folder(real_data_dir, "official_reference")


def _small_network(folder: Path, network: str) -> torch.nn.Module:
    configs = json.loads((folder / "configs.json").read_text())
    if network == "agrifm":
        opts = {k: v for k, v in configs["agrifm_small"]["cropscope_equivalent"].items()
                if k != "note"}
        classes = opts.pop("num_classes")
        return AgriFM({"S2": 10}, classes, None, compat="official", num_frames=8, **opts)
    opts = {k: v for k, v in configs["h2crop_small"]["cropscope_equivalent"].items()
            if k != "note"}
    return H2CropNet(config="S2+H+P", s2_bands=10, hyper_bands=218, temporal="flatten",
                     compat="official", feature_size=[2, 2], **opts)


def _lr_trace(task: SegmentationTask, optimizer: Any, steps: int) -> np.ndarray:
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()  # no gradients: nothing moves, the schedule advances
            task.scheduler.step()
    return np.asarray(lrs)


@pytest.mark.parametrize("network", ["agrifm", "h2crop"])
def test_official_schedule_and_optimiser_reproduced(folder: Path, network: str) -> None:
    ckpt = read_checkpoint(folder / f"{network}_small_train_ckpt.pth")
    hub = ckpt.extra["message_hub"]
    logged = np.asarray(hub["log_scalars"]["train/lr"].state["_log_history"], dtype=float)
    iters = int(hub["runtime_info"]["max_iters"])
    assert len(logged) == iters == 1002
    net = _small_network(folder, network)
    # the official run: one epoch of 1002 iterations
    cfg = official_recipe(network, epochs=1, device="cpu")
    task = SegmentationTask(net, cfg, steps_per_epoch=iters)
    optimizer = task.configure_optimizers()
    ours = _lr_trace(task, optimizer, iters)
    np.testing.assert_allclose(ours, logged, rtol=1e-12, atol=0)
    # the final learning rate the official optimiser state holds
    official = ckpt.extra["optimizer"]
    group = official["param_groups"][0]
    assert ours[-1] == pytest.approx(group["lr"], rel=1e-12)
    # one AdamW group, weight decay on every parameter, the same hyper-parameters
    assert len(official["param_groups"]) == len(optimizer.param_groups) == 1
    mine = optimizer.param_groups[0]
    for key in ("weight_decay", "betas", "eps", "amsgrad", "initial_lr"):
        assert tuple(np.atleast_1d(mine[key])) == pytest.approx(
            tuple(np.atleast_1d(group[key]))), key
    # every parameter that had an optimiser state (a gradient) officially is decayed here
    assert len(mine["params"]) == len(official["state"])
    # the selection metric the official run logged is the one cropscope's recipe monitors
    assert cfg.monitor == "mfscore" and "val/mFscore" in hub["log_scalars"]


def test_cropscope_recipe_differs_only_where_documented(folder: Path) -> None:
    """cropscope's own H2Crop recipe: the same schedule once the run is longer than five
    warm-ups; norms and biases outside the weight decay."""
    from cropscope.training.h2crop import RECIPE_CHANGES, h2crop_recipe

    official = h2crop_recipe(official=True).to_dict()
    own = h2crop_recipe().to_dict()
    assert {k for k in own if own[k] != official[k]} == set(RECIPE_CHANGES)
    net = _small_network(folder, "h2crop")
    task = SegmentationTask(net, h2crop_recipe(epochs=1), steps_per_epoch=5000)
    optimizer = task.configure_optimizers()
    assert [g["weight_decay"] for g in optimizer.param_groups] == [5e-4, 0.0]
    ref = SegmentationTask(net, h2crop_recipe(official=True, epochs=1), steps_per_epoch=5000)
    ref_opt = ref.configure_optimizers()
    np.testing.assert_allclose(_lr_trace(task, optimizer, 5000),
                               _lr_trace(ref, ref_opt, 5000), rtol=1e-12)
