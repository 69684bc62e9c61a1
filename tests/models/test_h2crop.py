"""H2Crop dual-stream network: the four configurations, parameter counts against
h2crop.md §2.8, which inputs each configuration reads, the cascade, the parcel pooling."""

from __future__ import annotations

import pytest
import torch

from cropscope.errors import ModelError
from cropscope.models.h2crop import (
    H2CROP_CONFIGS,
    H2CROP_LEVEL_SIZES,
    H2CropNet,
    one_hot_priors,
    pool_by_parcel,
    temporal_merges,
)

LEVELS = (3, 4, 5, 7)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def inputs(b: int = 2, t: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"S2": torch.randn(b, t, 10, 24, 24, generator=g),
            "EnMAP": torch.randn(b, 12, 8, 8, generator=g),
            "priors": torch.randint(0, 3, (b, 4, 24, 24), generator=g)}


def small(config: str, **kw: object) -> H2CropNet:
    torch.manual_seed(0)
    return H2CropNet(LEVELS, config, months=6, hyper_bands=12, hyper_size=8, **kw).eval()


@pytest.mark.parametrize("config", list(H2CROP_CONFIGS))
def test_shapes_and_inputs_used(config: str) -> None:
    model = small(config)
    x = inputs()
    with torch.no_grad():
        out = model(x)
        other_hyper = model({**x, "EnMAP": torch.randn(2, 12, 8, 8)})
        other_prior = model({**x, "priors": (x["priors"] + 1) % 3})
    assert [tuple(o.shape) for o in out] == [(2, k, 24, 24) for k in LEVELS]
    uses_hyper, uses_priors = H2CROP_CONFIGS[config]
    assert model.config == config
    # an input changes the output exactly when the configuration uses it
    assert torch.allclose(out[-1], other_hyper[-1]) is not uses_hyper
    assert torch.allclose(out[-1], other_prior[-1]) is not uses_priors
    assert (model.hyper is not None) is uses_hyper


@pytest.mark.parametrize(("months", "s2_only", "with_hyper"), [(6, 115.0e6, 175.5e6),
                                                                (12, 121.8e6, 182.3e6)])
def test_reference_parameter_counts(months: int, s2_only: float, with_hyper: float) -> None:
    with torch.device("meta"):
        s2 = H2CropNet(config="S2", preset="reference", months=months)
        s2h = H2CropNet(config="S2+H", preset="reference", months=months)
        s2hp = H2CropNet(config="S2+H+P", preset="reference", months=months)
    assert count(s2) == pytest.approx(s2_only, rel=0.002)
    assert count(s2h) == pytest.approx(with_hyper, rel=0.002)
    if months == 6:  # the reference (h2crop.md §2.8): ~115 M and ~175.5 M, within 5 %
        assert count(s2) == pytest.approx(115e6, rel=0.05)
        assert count(s2h) == pytest.approx(175.5e6, rel=0.05)
        assert count(s2.s2.backbones) == pytest.approx(87.6e6, rel=0.001)
        assert count(s2.s2.decoder) == pytest.approx(26.8e6, rel=0.002)
        assert [count(m.heads) for m in (s2, s2h, s2hp)] == pytest.approx(
            [0.50e6, 1.54e6, 2.27e6], rel=0.01)
    # head input widths of h2crop.md §2.5's table (S2+H+P: 263, 300, 376, 441)
    widths = [h[0].in_channels for h in s2hp.heads.heads]
    assert widths == [256 + 7, 256 + 7 + 37, 256 + 37 + 83, 256 + 83 + 102]


def test_reference_decoder_widths_follow_the_months() -> None:
    with torch.device("meta"):
        jun = H2CropNet(config="S2", preset="reference", months=6)
        dec = H2CropNet(config="S2", preset="reference", months=12)
    # first conv of each up-step: deep + skip (h2crop.md §2.3: 1024+512, 512+512, 256+384)
    assert [s[0].in_channels for s in jun.s2.decoder.steps] == [1536, 1024, 640]
    assert [s[0].in_channels for s in dec.s2.decoder.steps] == [1024 + 1024, 512 + 768,
                                                                 256 + 768]
    assert jun.s2.decoder.out_dim == 128


def test_flatten_ties_the_months_attention_does_not() -> None:
    with torch.device("meta"):
        ref = H2CropNet(config="S2", preset="reference", months=6)
    assert ref.s2.temporal_mode == "flatten"
    model = small("S2")
    with torch.no_grad():
        for t in (6, 8, 12):
            assert model(inputs(t=t))[0].shape == (2, 3, 24, 24)
    flat = small("S2", temporal="flatten")
    with pytest.raises(ModelError, match="temporal tokens"):
        flat(inputs(t=12))


def test_temporal_merges_rule() -> None:
    assert temporal_merges(6) == temporal_merges(8) == (True, True, False)
    assert temporal_merges(10) == temporal_merges(12) == (True, True, True)
    with pytest.raises(ModelError):
        temporal_merges(0)


def test_fine_loss_trains_coarse_heads_and_both_streams() -> None:
    model = small("S2+H+P").train()
    out = model(inputs())
    out[-1].sum().backward()
    coarse = model.heads.heads[0][0].weight.grad
    assert coarse is not None and coarse.abs().sum() > 0  # logits are not detached
    assert model.hyper is not None
    assert model.hyper.spatial_embed.weight.grad.abs().sum() > 0
    assert model.s2.stems["S2"].proj.weight.grad.abs().sum() > 0


def test_clear_errors() -> None:
    model = small("S2+H+P")
    x = inputs()
    with pytest.raises(ModelError, match="EnMAP"):
        model({"S2": x["S2"], "priors": x["priors"]})
    with pytest.raises(ModelError, match="priors"):
        model({"S2": x["S2"], "EnMAP": x["EnMAP"]})
    with pytest.raises(ModelError, match="S2"):
        model({"EnMAP": x["EnMAP"]})
    with pytest.raises(ModelError, match="configuration"):
        H2CropNet(LEVELS, "S2+X")
    with pytest.raises(ModelError, match="preset"):
        H2CropNet(LEVELS, "S2", preset="huge")
    with pytest.raises(ModelError, match="option"):
        H2CropNet(LEVELS, "S2", decoder_width=3)
    assert H2CropNet(config="S2", hyper_bands=None).levels == list(H2CROP_LEVEL_SIZES)


def test_one_hot_priors() -> None:
    p = torch.tensor([[[[0, 2]], [[1, 255]]]])  # [1, 2 levels, 1, 2]
    hot = one_hot_priors(p, [3, 2])
    assert hot.shape == (1, 5, 1, 2)
    torch.testing.assert_close(hot[0, :, 0, 0], torch.tensor([1.0, 0, 0, 0, 1]))
    torch.testing.assert_close(hot[0, :, 0, 1], torch.tensor([0.0, 0, 1, 0, 0]))  # 255: none
    with pytest.raises(ModelError):
        one_hot_priors(p, [3])


def test_pool_by_parcel_and_parcel_prediction() -> None:
    proba = torch.rand(2, 3, 4, 4)
    parcels = torch.full((2, 4, 4), -1)
    parcels[0, :2, :2] = 5
    parcels[0, 2:, :] = 7
    parcels[1, :, :3] = 5  # the same id in another sample is another parcel
    keys, mean = pool_by_parcel(proba, parcels)
    assert keys.tolist() == [[0, 5], [0, 7], [1, 5]]
    torch.testing.assert_close(mean[1], proba[0, :, 2:, :].mean((1, 2)))
    torch.testing.assert_close(mean[2], proba[1, :, :, :3].mean((1, 2)))
    parcels = parcels.repeat_interleave(6, 1).repeat_interleave(6, 2)  # onto the 24 px grid
    model = small("S2")
    x = inputs()
    maps, tables = model.predict_parcels(x, parcels)
    with torch.no_grad():
        fine = model(x)[-1].softmax(1)
    _, expected = pool_by_parcel(fine, parcels)
    torch.testing.assert_close(tables[-1], expected)
    fine_map = maps[-1]
    assert (fine_map[parcels < 0] == -1).all()
    for (b, pid), row in zip(keys.tolist(), expected, strict=True):
        assert (fine_map[b][parcels[b] == pid] == int(row.argmax())).all()


def test_s2_stream_loads_agrifm_weights_except_the_stem() -> None:
    """h2crop.md §2.2: the S2 encoder starts from AgriFM; AgriFM's (4, 2, 2) stem does not fit
    H2Crop's (2, 4, 4), so it alone is skipped (non-strict), as in the reference."""
    from cropscope.models.agrifm import AgriFM
    from cropscope.models.agrifm_checkpoint import load_agrifm_checkpoint
    from cropscope.models.h2crop import H2CROP_PRESETS

    body = dict(H2CROP_PRESETS["tiny"]["backbone"])
    body.pop("preset")
    torch.manual_seed(1)
    agrifm = AgriFM({"S2": 10}, 5, None, patch_size=(4, 2, 2), **body)
    # a pretrained encoder: stems and Swin bodies only (AgriFM.pth has no decoder)
    encoder = {k: v for k, v in agrifm.state_dict().items()
               if k.startswith(("stems.", "backbones."))}
    model = small("S2")
    report = load_agrifm_checkpoint(model.s2, encoder, strict=False)
    assert [k for k, _, _ in report.mismatched] == ["stems.S2.proj.weight"]
    block = "backbones.S2.stages.0.blocks.0.attn.qkv.weight"
    assert block in report.loaded
    torch.testing.assert_close(model.s2.state_dict()[block], encoder[block])
    assert not report.missing and not report.unexpected
    with pytest.raises(ModelError, match="shape mismatch"):
        load_agrifm_checkpoint(model.s2, encoder)
