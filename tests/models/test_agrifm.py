"""AgriFM network: shapes for one and several sources, odd T and sizes, hierarchical heads,
gradients, time handling, parameter counts against agrifm.md §2.9."""

from __future__ import annotations

import pytest
import torch

from cropscope.errors import ModelError
from cropscope.models.agrifm import AGRIFM_SOURCES, AgriFM, TemporalPool

#: a few-parameter backbone for shape tests
SMALL = {"preset": None, "embed_dim": 8, "depths": (1, 1, 1, 1), "num_heads": (1, 2, 2, 4),
         "decoder_dim": 16}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_sources_table() -> None:
    assert AGRIFM_SOURCES["S2"]["in_chans"] == 10
    assert AGRIFM_SOURCES["S2"]["patch_size"] == (4, 2, 2)
    assert AGRIFM_SOURCES["HLS"]["in_chans"] == AGRIFM_SOURCES["L30"]["in_chans"] == 6
    assert AGRIFM_SOURCES["MODIS"]["in_chans"] == 7


@pytest.mark.parametrize("shape", [(2, 12, 10, 32, 32), (1, 1, 10, 33, 29), (1, 5, 10, 30, 17),
                                   (2, 3, 10, 7, 7)])
def test_single_source_shapes(shape: tuple[int, ...]) -> None:
    model = AgriFM({"S2": 10}, 4, **SMALL).eval()
    with torch.no_grad():
        out = model(torch.randn(*shape))
        feats = model.forward_features({"S2": torch.randn(*shape)})
    assert out.shape == (shape[0], 4, shape[3], shape[4])
    assert feats.shape == (shape[0], 16, shape[3], shape[4])


def test_four_d_input_is_one_date() -> None:
    model = AgriFM({"S2": 10}, 2, **SMALL).eval()
    x = torch.randn(1, 10, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x[:, None]))


def test_two_sources_on_different_grids() -> None:
    model = AgriFM({"S2": 10, "MODIS": 7}, 3, **SMALL).eval()
    inputs = {"S2": torch.randn(2, 12, 10, 32, 32), "MODIS": torch.randn(2, 6, 7, 8, 8)}
    with torch.no_grad():
        out = model(inputs)
        # the output follows the first source's grid, whatever the dict order
        swapped = model({"MODIS": inputs["MODIS"], "S2": inputs["S2"]})
        changed = model({"S2": inputs["S2"], "MODIS": torch.randn(2, 6, 7, 8, 8)})
    assert out.shape == (2, 3, 32, 32)
    torch.testing.assert_close(out, swapped)
    assert not torch.allclose(out, changed)  # the second source is used
    assert model.patch_sizes == {"S2": (4, 2, 2), "MODIS": (4, 2, 2)}
    per_source = AgriFM({"S2": 10, "MODIS": 7}, 3, patch_size={"S2": (4, 4, 4)}, **SMALL)
    assert per_source.patch_sizes == {"S2": (4, 4, 4), "MODIS": (4, 1, 1)}


def test_hierarchical_levels() -> None:
    model = AgriFM({"S2": 10, "L30": 6}, [2, 5, 9], **SMALL).eval()
    inputs = {"S2": torch.randn(2, 7, 10, 20, 24), "L30": torch.randn(2, 3, 6, 9, 11)}
    with torch.no_grad():
        out = model(inputs)
    assert isinstance(out, list)
    assert [o.shape for o in out] == [(2, 2, 20, 24), (2, 5, 20, 24), (2, 9, 20, 24)]
    # level k reads level k-1's logits
    assert model.head.cascade.heads[1][0].in_features == 8 + 2


def test_gradients_reach_every_stem_and_backbone() -> None:
    model = AgriFM({"S2": 10, "MODIS": 7}, [2, 3], **SMALL)
    out = model({"S2": torch.randn(2, 5, 10, 16, 16), "MODIS": torch.randn(2, 4, 7, 6, 6)})
    sum(o.square().mean() for o in out).backward()
    for name in ("S2", "MODIS"):
        assert model.stems[name].proj.weight.grad is not None
        assert model.stems[name].proj.weight.grad.abs().sum() > 0
        body = model.backbones[name]
        assert body.stages[-1].blocks[0].mlp.fc2.weight.grad.abs().sum() > 0


def test_shared_backbone() -> None:
    shared = AgriFM({"S2": 10, "HLS": 6}, 2, shared_backbone=True, **SMALL)
    separate = AgriFM({"S2": 10, "HLS": 6}, 2, **SMALL)
    assert shared.backbones is None and separate.backbone is None
    assert count(separate) - count(shared) == count(separate.backbones["HLS"])
    out = shared({"S2": torch.randn(2, 4, 10, 16, 16), "HLS": torch.randn(2, 4, 6, 8, 8)})
    assert out.shape == (2, 2, 16, 16)


def test_any_t_with_pooled_time_and_flatten_checks_t() -> None:
    model = AgriFM({"S2": 10}, 2, **SMALL).eval()
    with torch.no_grad():
        for t in (1, 3, 8, 13):
            assert model(torch.randn(1, t, 10, 16, 16)).shape == (1, 2, 16, 16)
    flat = AgriFM({"S2": 10}, 2, temporal="flatten", num_frames=12, **SMALL).eval()
    # widths C_i * D_i with D = 3, 2, 1 (skips) and 1 (deepest): agrifm.md §2.8
    assert [p.out_channels for p in flat.temporal["S2"]] == [8 * 3, 16 * 2, 32 * 1, 64 * 1]
    with torch.no_grad():
        assert flat(torch.randn(1, 12, 10, 16, 16)).shape == (1, 2, 16, 16)
        with pytest.raises(ModelError, match="temporal='flatten'"):
            flat(torch.randn(1, 16, 10, 16, 16))
    with pytest.raises(ModelError, match="num_frames"):
        AgriFM({"S2": 10}, 2, temporal="flatten", **SMALL)


def test_attention_pool_starts_as_mean() -> None:
    x = torch.randn(2, 4, 3, 5, 5)
    torch.testing.assert_close(TemporalPool(4)(x), x.mean(dim=2))
    assert TemporalPool(4, "flatten", 3)(x).shape == (2, 12, 5, 5)


def test_input_errors() -> None:
    model = AgriFM({"S2": 10, "MODIS": 7}, 2, **SMALL)
    with pytest.raises(ModelError, match="missing input sources"):
        model({"S2": torch.randn(1, 4, 10, 16, 16)})
    with pytest.raises(ModelError, match="pass a dict"):
        model(torch.randn(1, 4, 10, 16, 16))
    with pytest.raises(ModelError, match="expects"):
        model({"S2": torch.randn(1, 4, 9, 16, 16), "MODIS": torch.randn(1, 4, 7, 4, 4)})
    with pytest.raises(ModelError, match="positive"):
        AgriFM({"S2": 10}, [], **SMALL)


def test_parameter_counts_on_meta() -> None:
    with torch.device("meta"):
        ref = AgriFM({"S2": 10}, 2, "base", temporal="flatten", num_frames=32)
        ours = AgriFM({"S2": 10}, 2, "base")
    # agrifm.md §2.9: backbone, (4, 2, 2) stem, T = 32 neck, K = 2 head, total
    assert count(ref.backbones["S2"]) == 87_626_312
    assert count(ref.stems) == 20_608
    assert abs(count(ref.backbones["S2"]) + count(ref.stems) - 87.6e6) < 0.5e6
    assert count(ref.decoder) == 103_825_408
    assert count(ref.head) == 4_720_130
    assert count(ref) == 196_192_458
    # pooled time: skips of width 128/256/512 instead of 1024 each
    assert count(ours) == 176_140_366
    assert count(ours.temporal) == 128 + 256 + 512 + 1024 + 4


def test_decoder_source_subsets() -> None:
    """The official neck's in_feature_key / in_fusion_key_list: MODIS seeds the decoder and
    joins only the coarsest up-step; the steps are sized for the sources they read."""
    full = AgriFM({"S2": 10, "MODIS": 7}, 3, **SMALL)
    model = AgriFM({"S2": 10, "MODIS": 7}, 3, seed_sources=["S2", "MODIS"],
                   fusion_sources=[["S2", "MODIS"], ["S2"], ["S2"]], **SMALL).eval()
    assert model.fusion_sources == [["S2", "MODIS"], ["S2"], ["S2"]]
    in_full = [step[0].in_channels for step in full.decoder.steps]
    in_sub = [step[0].in_channels for step in model.decoder.steps]
    assert in_sub[0] == in_full[0] and in_sub[1] < in_full[1] and in_sub[2] < in_full[2]
    inputs = {"S2": torch.randn(1, 8, 10, 32, 32), "MODIS": torch.randn(1, 8, 7, 8, 8)}
    with torch.no_grad():
        assert model(inputs).shape == (1, 3, 32, 32)
    # S2 alone seeds and feeds every step: the MODIS input no longer changes the output
    s2_only = AgriFM({"S2": 10, "MODIS": 7}, 3, seed_sources=["S2"],
                     fusion_sources=[["S2"]] * 3, **SMALL).eval()
    with torch.no_grad():
        a = s2_only(inputs)
        b = s2_only({**inputs, "MODIS": torch.randn(1, 8, 7, 8, 8)})
    torch.testing.assert_close(a, b)
    for bad in ({"seed_sources": ["L30"]}, {"fusion_sources": [["S2"]]},
                {"fusion_sources": [["S2"], [], ["S2"]]},
                {"fusion_sources": [["S2", "S2"], ["S2"], ["S2"]]}):
        with pytest.raises(ModelError, match="sources"):
            AgriFM({"S2": 10, "MODIS": 7}, 3, **SMALL, **bad)
