"""Loading the published AgriFM checkpoint format: key mapping, backbone-only loading,
per-source and shared bodies, file formats, clear errors on corrupted checkpoints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cropscope.errors import ModelError
from cropscope.models.agrifm import AgriFM
from cropscope.models.agrifm_checkpoint import (
    load_agrifm_checkpoint,
    read_state_dict,
    remap_agrifm_state_dict,
)

SMALL = {"preset": None, "embed_dim": 8, "depths": (1, 2, 1, 1), "num_heads": (1, 2, 2, 4),
         "decoder_dim": 16}


def to_published(key: str) -> str | None:
    """The published name of one of this model's encoder keys, written independently of the
    module under test (agrifm.md §4.4 and Video Swin's names); None for decoder keys."""
    rules = [
        (r"^stems\.(\w+)\.proj\.weight$", r"encoder.\1_patch_emd.weights"),
        (r"^stems\.(\w+)\.proj\.bias$", r"encoder.\1_patch_emd.bias"),
        (r"^backbones?(?:\.\w+)?\.stages\.(\d+)\.blocks\.(\d+)\.",
         r"encoder.backbone.layers.\1.blocks.\2."),
        (r"^backbones?(?:\.\w+)?\.merges\.(\d+)\.", r"encoder.backbone.layers.\1.downsample."),
        (r"^backbones?(?:\.\w+)?\.norm\.", "encoder.backbone.norm."),
    ]
    for pattern, repl in rules:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def published_state(model: AgriFM) -> dict[str, torch.Tensor]:
    """A released-style state dict (shared backbone, S2 stem) from ``model``'s S2 encoder,
    plus HLSL30/Modis stems and the relative_position_index buffers Video Swin saves."""
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith("backbones.") and not key.startswith("backbones.S2."):
            continue
        name = to_published(key)
        if name is not None:
            out[name] = value.clone()
            if name.endswith("attn.relative_position_bias_table"):
                out[name.replace("bias_table", "index")] = torch.zeros(4, 4, dtype=torch.long)
    dim = model.dims[0]
    out["encoder.HLSL30_patch_emd.weights"] = torch.randn(dim, 6, 4, 4, 4)
    out["encoder.HLSL30_patch_emd.bias"] = torch.randn(dim)
    out["encoder.Modis_patch_emd.weights"] = torch.randn(dim, 7, 4, 4, 4)
    out["encoder.Modis_patch_emd.bias"] = torch.randn(dim)
    return out


def test_published_base_names_and_shapes_fit() -> None:
    """The full released layout (base, (4, 4, 4) S2 stem) maps onto the model key for key."""
    with torch.device("meta"):
        source = AgriFM({"S2": 10}, 2, "base", patch_size=(4, 4, 4))
        state = published_state(source)
        target = AgriFM({"S2": 10}, 2, "base", patch_size={"S2": (4, 4, 4)})
    assert state["encoder.S2_patch_emd.weights"].shape == (128, 10, 4, 4, 4)
    assert state["encoder.backbone.layers.2.blocks.17.attn.relative_position_bias_table"
                 ].shape == (2535, 16)
    assert state["encoder.backbone.layers.2.downsample.reduction.weight"].shape == (1024, 2048)
    assert state["encoder.backbone.norm.weight"].shape == (1024,)
    report = load_agrifm_checkpoint(target, state)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert report.backbone_only
    assert all(k.startswith(("decoder.", "head.", "temporal.")) for k in report.initialised)
    assert report.ignored == sorted(f"stems.{s}.proj.{p}" for s in ("HLS", "MODIS")
                                    for p in ("weight", "bias"))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("shared", [False, True])
def test_load_from_file(tmp_path: Path, suffix: str, shared: bool) -> None:
    torch.manual_seed(0)
    source = AgriFM({"S2": 10}, 2, patch_size=(4, 4, 4), **SMALL)
    state = published_state(source)
    path = tmp_path / f"agrifm{suffix}"
    if suffix == ".pth":
        torch.save({"meta": {"epoch": 3}, "state_dict": state}, path)
    else:
        save_file(state, str(path))
    model = AgriFM({"S2": 10, "L30": 6}, 3, patch_size={"S2": (4, 4, 4), "L30": (4, 4, 4)},
                   shared_backbone=shared, **SMALL)
    head_before = model.head.cls.weight.clone()
    report = load_agrifm_checkpoint(model, path)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert report.ignored == ["stems.MODIS.proj.bias", "stems.MODIS.proj.weight"]
    key = "encoder.backbone.layers.1.blocks.1.attn.qkv.weight"
    bodies = [model.backbone] if shared else [model.backbones["S2"], model.backbones["L30"]]
    for body in bodies:  # the shared checkpoint body goes into every per-source body
        assert torch.equal(body.stages[1].blocks[1].attn.qkv.weight, state[key])
        assert torch.equal(body.merges[0].reduction.weight,
                           state["encoder.backbone.layers.0.downsample.reduction.weight"])
        assert torch.equal(body.norm.bias, state["encoder.backbone.norm.bias"])
    assert torch.equal(model.stems["S2"].proj.weight, state["encoder.S2_patch_emd.weights"])
    assert torch.equal(model.stems["L30"].proj.bias, state["encoder.HLSL30_patch_emd.bias"])
    assert torch.equal(model.head.cls.weight, head_before)  # decoder left as initialised


def test_own_state_dict_roundtrip(tmp_path: Path) -> None:
    model = AgriFM({"S2": 10}, [2, 3], **SMALL).eval()
    path = tmp_path / "own.pt"
    torch.save({"model": model.state_dict()}, path)
    other = AgriFM({"S2": 10}, [2, 3], **SMALL).eval()
    report = load_agrifm_checkpoint(other, path)
    assert not report.backbone_only and report.missing == []
    x = torch.randn(1, 4, 10, 16, 16)
    with torch.no_grad():
        for a, b in zip(model(x), other(x), strict=True):
            torch.testing.assert_close(a, b)


def test_partial_decoder_is_missing() -> None:
    model = AgriFM({"S2": 10}, 2, **SMALL)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    with pytest.raises(ModelError, match=r"missing keys \(head\."):
        load_agrifm_checkpoint(model, state)


def test_corrupted_checkpoints_give_clear_errors(tmp_path: Path) -> None:
    source = AgriFM({"S2": 10}, 2, patch_size=(4, 4, 4), **SMALL)
    state = published_state(source)
    model = AgriFM({"S2": 10}, 2, patch_size=(4, 4, 4), **SMALL)

    extra = dict(state, **{"encoder.backbone.layers.9.blocks.0.norm1.weight": torch.ones(8)})
    with pytest.raises(ModelError, match=r"unexpected keys \(backbones\.S2\.stages\.9"):
        load_agrifm_checkpoint(model, extra)
    unknown = dict(state, **{"optimizer.lr": torch.ones(1)})
    with pytest.raises(ModelError, match=r"no AgriFM mapping: optimizer\.lr"):
        load_agrifm_checkpoint(model, unknown)
    missing = {k: v for k, v in state.items() if "layers.3.blocks.0.mlp" not in k}
    with pytest.raises(ModelError, match="4 missing keys"):
        load_agrifm_checkpoint(model, missing)
    # the (4, 4, 4) released stem into a (4, 2, 2) model: shape error with a hint
    narrow = AgriFM({"S2": 10}, 2, **SMALL)
    with pytest.raises(ModelError, match=r"stems\.S2\.proj\.weight.*patch_size=\{'S2': "
                                         r"\(4, 4, 4\)\}"):
        load_agrifm_checkpoint(narrow, state)
    report = load_agrifm_checkpoint(narrow, state, strict=False)
    assert [k for k, _, _ in report.mismatched] == ["stems.S2.proj.weight"]
    assert "stems.S2.proj.bias" in report.loaded
    # a file that is not a state dict
    bad = tmp_path / "bad.pth"
    torch.save([1, 2, 3], bad)
    with pytest.raises(ModelError, match="state dict"):
        read_state_dict(bad)
    with pytest.raises(ModelError, match="no checkpoint file"):
        read_state_dict(tmp_path / "absent.pth")


def test_remap_strips_module_prefix_and_index() -> None:
    state = {"module.encoder.backbone.layers.0.blocks.1.attn.proj.weight": torch.ones(1),
             "encoder.backbone.layers.0.blocks.1.attn.relative_position_index": torch.ones(1),
             "encoder.Modis_patch_emd.weights": torch.ones(1),
             "neck.out.0.weight": torch.ones(1)}
    assert sorted(remap_agrifm_state_dict(state)) == [
        "backbone.stages.0.blocks.1.attn.proj.weight", "decoder.out.0.weight",
        "stems.MODIS.proj.weight"]
