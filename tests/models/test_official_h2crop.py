"""H2Crop against the official code (flyakon/H2Crop @ d5a861ba): official checkpoints load
1:1 into H2CropNet, and with ``compat="official"`` the stored logits of every level are
reproduced to max relative error <= 1e-5 (../shared/data/official_reference)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cropscope.models.h2crop import H2CropNet, h2crop_parameter_counts
from cropscope.models.h2crop_checkpoint import load_h2crop_checkpoint, remap_h2crop_state_dict
from tests.conftest import shared_folder

pytestmark = pytest.mark.realdata

CASES = [("S2HP_T6_48px_clipped", "S2+H+P", "h2crop_small_train_ckpt.pth", 175, 17),
         ("S2_T6_96px_clipped", "S2", "h2crop_small_S2only_state_dict.safetensors", 130, 5)]


@pytest.fixture(scope="module")
def folder(real_data_dir: Path) -> Path:
    return shared_folder(real_data_dir, "official_reference")


@pytest.fixture(scope="module")
def small(folder: Path) -> dict:
    """The small official configuration as H2CropNet options (configs.json's
    cropscope_equivalent, time flattened as the official stream), computing as the
    official code."""
    eq = json.loads((folder / "configs.json").read_text())["h2crop_small"]
    options = {k: v for k, v in eq["cropscope_equivalent"].items() if k != "note"}
    return {**options, "temporal": "flatten", "compat": "official"}


@pytest.mark.parametrize(("case", "config", "ckpt", "n_loaded", "n_dropped"), CASES)
def test_official_outputs_reproduced(folder: Path, small: dict, case: str, config: str,
                                     ckpt: str,
                                     n_loaded: int, n_dropped: int,
                                     restore_threads: None) -> None:
    from safetensors import safe_open

    torch.set_num_threads(1)
    with safe_open(str(folder / f"h2crop_case_{case}.safetensors"), "pt") as f:
        meta = f.metadata()
        stored = {k: f.get_tensor(k) for k in f.keys()}
    model = H2CropNet(config=config, s2_bands=10, hyper_bands=None if config == "S2" else 218,
                      feature_size=json.loads(meta["neck.feature_size"]), **small)
    report = load_h2crop_checkpoint(model, folder / ckpt)
    assert (len(report.loaded), len(report.ignored)) == (n_loaded, n_dropped)
    inputs = {"S2": stored["input.S2"].float()}
    if config != "S2":
        inputs["EnMAP"] = stored["input.EnMAP"].float()
        inputs["priors"] = torch.stack([stored[f"input.priors.level{k}"]
                                        for k in range(1, 5)], dim=1)
    model.eval()
    with torch.no_grad():
        outputs = model(inputs)
    errors = {}
    for k, out in enumerate(outputs, start=1):
        want = stored[f"logits.level{k}"]
        assert tuple(out.shape) == tuple(want.shape)
        errors[k] = float((out - want).abs().max() / want.abs().max())
    assert max(errors.values()) <= 1e-5, errors


def test_full_size_key_manifest_maps_one_to_one(folder: Path) -> None:
    spec = json.loads((folder / "h2crop_full_keys.json").read_text())
    with torch.device("meta"):
        model = H2CropNet(config="S2+H+P", preset="reference", months=6, compat="official")
        fake = {k: torch.empty(v) for k, v in spec["shapes"].items()}
    mapped, dropped = remap_h2crop_state_dict(fake)
    own = model.state_dict()
    assert sorted(own) == sorted(mapped) and len(own) == 542
    assert [k for k in own if tuple(own[k].shape) != tuple(mapped[k].shape)] == []
    assert set(spec["unused_timm_tensors"]) <= set(dropped)
    # parameters = the manifest's parameter total less the unused timm tensors
    counts = spec["param_counts"]
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == counts["total"] - counts["EnMAP_unused_timm"] == 176_230_910
    assert h2crop_parameter_counts("reference", 6, ["S2+H+P", "S2+H"]) == {
        "S2+H+P": 176_230_910, "S2+H": 175_502_544}


def test_a_wrong_configuration_is_reported(folder: Path, small: dict) -> None:
    from cropscope.errors import ModelError

    other = dict(small, decoder_dim=32)
    model = H2CropNet(config="S2+H+P", s2_bands=10, hyper_bands=218, **other)
    with pytest.raises(ModelError, match="shape mismatches"):
        load_h2crop_checkpoint(model, folder / "h2crop_small_state_dict.safetensors")


def test_s2_stream_starts_from_official_agrifm_weights(folder: Path) -> None:
    """As the official configurations' ``init_cfg``: the official AgriFM fine-tuning
    checkpoint's body initialises H2Crop's S2 encoder; AgriFM's (4, 2, 2) stem kernel does
    not fit H2Crop's (2, 4, 4) and keeps its initialisation; decoder and heads untouched."""
    from cropscope.errors import ModelError
    from cropscope.models.agrifm_checkpoint import remap_agrifm_state_dict
    from cropscope.models.checkpoint_reader import read_checkpoint
    from cropscope.models.h2crop_checkpoint import init_s2_from_agrifm

    eq = json.loads((folder / "configs.json").read_text())["agrifm_small"]
    body = {k: eq["cropscope_equivalent"][k] for k in ("embed_dim", "depths", "num_heads")}
    torch.manual_seed(0)
    model = H2CropNet(config="S2", s2_bands=10, levels=[4, 6, 8, 10], months=6,
                      backbone={"preset": None, **body}, patch_size=(2, 4, 4),
                      decoder_dim=32, temporal="flatten")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = folder / "agrifm_small_train_ckpt.pth"
    report = init_s2_from_agrifm(model, path)
    official = remap_agrifm_state_dict(read_checkpoint(path).state_dict)
    after = model.state_dict()
    encoder = [k for k in after if k.startswith(("s2.backbones.", "s2.stems."))]
    assert report.initialised == ["s2.stems.S2.proj.weight"]
    assert sorted(report.loaded) == sorted(k for k in encoder
                                           if k not in report.initialised)
    for key in report.loaded:
        assert torch.equal(after[key], official[key[len("s2."):]]), key
    for key in after:
        if key not in report.loaded:
            assert torch.equal(after[key], before[key]), key
    # a stream of another size is refused and left as it was
    other = H2CropNet(config="S2", s2_bands=10, levels=[4, 6, 8, 10], months=6)
    state = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ModelError, match="does not fit"):
        init_s2_from_agrifm(other, path)
    assert all(torch.equal(v, state[k]) for k, v in other.state_dict().items())
