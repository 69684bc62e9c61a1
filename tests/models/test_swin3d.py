"""The 3D Swin backbone (AgriFM encoder): sizes, token counts, windowed attention against a
brute-force reference, merging's padding, checkpointing, day-of-year encoding."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from cropscope.errors import ModelError
from cropscope.models.swin3d import (
    SWIN3D_PRESETS,
    PatchMerging3D,
    Swin3D,
    SwinBlock3D,
    doy_encoding,
    effective_window,
    shift_window_mask,
)

#: a few-parameter configuration for shape tests
SMALL = {"embed_dim": 8, "depths": (1, 1, 1, 1), "num_heads": (1, 2, 2, 4)}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- sizes -------------------------------------------------------------------------------


def test_base_parameter_count_matches_agrifm() -> None:
    model = Swin3D(10, "base", patch_size=(4, 2, 2))
    stem = count(model.patch_embed)
    assert stem == 20_608  # agrifm.md §2.9, S2 stem (4, 2, 2)
    assert count(model) - stem == 87_626_312  # backbone: 4 stages + 3 merges + final LN
    assert abs(count(model) - 87.6e6) < 0.5e6
    # time is averaged, not concatenated: merging has Video Swin's shapes
    assert sum(count(m) for m in model.merges) == 132_096 + 526_336 + 2_101_248
    assert count(Swin3D(10, "base", patch_size=(4, 4, 4)).patch_embed) == 82_048


def test_presets_and_concat_merging() -> None:
    assert set(SWIN3D_PRESETS) == {"tiny", "small", "base"}
    merge = PatchMerging3D(16, temporal=True, temporal_mode="concat")
    assert merge.reduction.weight.shape == (32, 128)
    assert PatchMerging3D(16, temporal=True).reduction.weight.shape == (32, 64)


@pytest.mark.parametrize(
    ("merge", "depths"),
    [((True, True, True), (8, 4, 2, 1)), ((False, False, False), (8, 8, 8, 8)),
     ((True, True, False), (8, 4, 2, 2))],
)
def test_token_counts_for_32_frames(merge: tuple[bool, ...], depths: tuple[int, ...]) -> None:
    model = Swin3D(3, None, **SMALL, temporal_merge=merge, window_size=(8, 3, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 32, 3, 32, 32))
    assert [o.shape[2] for o in outs] == list(depths)
    assert [o.shape[3:] for o in outs] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert [o.shape[1] for o in outs] == [8, 16, 32, 64]
    assert [tuple(o.shape[1:]) for o in outs] == model.output_shapes(32, 32, 32)


def test_odd_sizes_give_expected_shapes() -> None:
    model = Swin3D(2, None, **SMALL, window_size=(2, 3, 3), patch_size=(2, 2, 2)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 7, 2, 13, 11))
    shapes = [tuple(o.shape[1:]) for o in outs]
    assert shapes == [(8, 4, 7, 6), (16, 2, 4, 3), (32, 1, 2, 2), (64, 1, 1, 1)]
    assert shapes == model.output_shapes(7, 13, 11)
    assert all(torch.isfinite(o).all() for o in outs)
    with torch.no_grad():  # a single image ([B, C, H, W]) is one frame
        assert model(torch.randn(1, 2, 8, 8))[0].shape == (1, 8, 1, 4, 4)


# --- attention against brute force -------------------------------------------------------


def brute_mask(padded: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...]
               ) -> torch.Tensor:
    """``allowed [nW, N, N]`` from first principles: on the rolled grid, two tokens of a
    window may attend iff, on every axis, both or neither came around the wrap."""
    grids = [range(p // w) for p, w in zip(padded, window, strict=True)]
    windows = list(itertools.product(*grids))
    inner = list(itertools.product(*(range(w) for w in window)))
    allowed = torch.zeros(len(windows), len(inner), len(inner), dtype=torch.bool)
    for k, win in enumerate(windows):
        pos = [[win[a] * window[a] + t[a] for a in range(3)] for t in inner]
        wrapped = [tuple(s > 0 and r[a] >= padded[a] - s for a, s in enumerate(shift))
                   for r in pos]
        for i, j in itertools.product(range(len(inner)), repeat=2):
            allowed[k, i, j] = wrapped[i] == wrapped[j]
    return allowed


def brute_attention(block: SwinBlock3D, x: torch.Tensor) -> torch.Tensor:
    """The block's (shifted-)window attention as one dense attention over all tokens of the
    zero-padded, rolled grid: -inf between windows, -100 between regions, bias by
    relative position in the full table."""
    attn = block.attn
    _, d, h, w, c = x.shape
    window, shift = effective_window((d, h, w), block.window_size, block.shift_size)
    padded = tuple(n + (-n % wn) for n, wn in zip((d, h, w), window, strict=True))
    xp = F.pad(x, (0, 0, 0, padded[2] - w, 0, padded[1] - h, 0, padded[0] - d))
    coords = list(itertools.product(*(range(p) for p in padded)))  # original positions
    tokens = torch.stack([xp[0, t, i, j] for t, i, j in coords])
    rolled = [tuple((o - s) % p for o, s, p in zip(co, shift, padded, strict=True))
              for co in coords]
    tw = attn.window_size
    n, heads = len(coords), attn.num_heads
    bias = torch.full((heads, n, n), -math.inf)
    for a, b in itertools.product(range(n), repeat=2):
        ra, rb = rolled[a], rolled[b]
        if any(ra[k] // window[k] != rb[k] // window[k] for k in range(3)):
            continue
        rel = [ra[k] - rb[k] + tw[k] - 1 for k in range(3)]
        idx = (rel[0] * (2 * tw[1] - 1) + rel[1]) * (2 * tw[2] - 1) + rel[2]
        value = attn.relative_position_bias_table[idx]
        wrap_a = [s > 0 and ra[k] >= padded[k] - s for k, s in enumerate(shift)]
        wrap_b = [s > 0 and rb[k] >= padded[k] - s for k, s in enumerate(shift)]
        bias[:, a, b] = value + (0.0 if wrap_a == wrap_b else -100.0)
    q, k, v = attn.qkv(tokens).reshape(n, 3, heads, c // heads).permute(1, 2, 0, 3)
    scores = q @ k.transpose(-1, -2) / math.sqrt(c // heads) + bias
    out = attn.proj((scores.softmax(-1) @ v).permute(1, 0, 2).reshape(n, c))
    grid = out.reshape(*padded, c)
    return grid[None, :d, :h, :w]


@pytest.mark.parametrize(
    ("size", "window", "shift"),
    [((4, 6, 6), (2, 3, 3), False),   # plain windows
     ((4, 6, 6), (2, 3, 3), True),    # shifted windows, all axes
     ((2, 5, 7), (4, 3, 3), True),    # time clipped to 2, padding in space
     ((3, 3, 6), (4, 3, 4), True),    # time and height clipped, width padded
     ((2, 2, 5), (4, 3, 3), True)],   # height clipped below the table's window
)
def test_window_attention_equals_brute_force(size, window, shift) -> None:
    torch.manual_seed(0)
    block = SwinBlock3D(8, 2, window, shift=shift)
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_(0, 1.0)  # make the bias matter
        x = torch.randn(1, *size, 8)
        torch.testing.assert_close(block.attention(x), brute_attention(block, x),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("padded", "window", "shift"),
    [((4, 6, 6), (2, 3, 3), (1, 1, 1)), ((2, 9, 6), (2, 3, 3), (0, 1, 1)),
     ((8, 14, 14), (4, 7, 7), (2, 3, 3))],
)
def test_shift_mask_equals_brute_force(padded, window, shift) -> None:
    mask = shift_window_mask(padded, window, shift)
    assert torch.equal(mask == 0, brute_mask(padded, window, shift))
    assert set(mask.unique().tolist()) <= {0.0, float("-inf")}


def test_effective_window_clips() -> None:
    assert effective_window((2, 64, 64), (8, 7, 7), (4, 3, 3)) == ((2, 7, 7), (0, 3, 3))
    assert effective_window((8, 7, 30), (8, 7, 7), (4, 3, 3)) == ((8, 7, 7), (0, 0, 3))
    assert effective_window((9, 8, 8), (8, 7, 7), (4, 3, 3)) == ((8, 7, 7), (4, 3, 3))


# --- merging -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["mean", "concat"])
def test_merging_replicates_odd_sizes(mode: str) -> None:
    torch.manual_seed(0)
    merge = PatchMerging3D(4, temporal=True, temporal_mode=mode)
    x = torch.randn(2, 3, 5, 7, 4)
    # the same volume with its last frame, row and column written out twice
    full = torch.cat([x, x[:, -1:]], dim=1)
    full = torch.cat([full, full[:, :, -1:]], dim=2)
    full = torch.cat([full, full[:, :, :, -1:]], dim=3)
    with torch.no_grad():
        torch.testing.assert_close(merge(x), merge(full))
        assert merge(x).shape == (2, 2, 3, 4, 8)


def test_merging_keeps_constant_input_constant() -> None:
    # zero-frame averaging (the reference) would turn the last frame into 0.5 * 3 = 1.5
    merge = PatchMerging3D(4, temporal=True)
    for d in (1, 3):
        gathered = merge.gather(torch.full((1, d, 3, 3, 4), 3.0))
        assert gathered.shape[1] == (d + 1) // 2
        assert torch.equal(gathered, torch.full_like(gathered, 3.0))
    # a single frame through the whole backbone equals that frame repeated (with a zero
    # relative bias, attention to a duplicated frame is attention to the frame itself)
    model = Swin3D(2, None, **SMALL, window_size=(2, 3, 3), patch_size=(1, 2, 2)).eval()
    x = torch.randn(1, 1, 2, 8, 8)
    with torch.no_grad():
        for block in model.modules():
            if isinstance(block, SwinBlock3D):
                block.attn.relative_position_bias_table.zero_()
        one, two = model(x), model(x.repeat(1, 2, 1, 1, 1))
    for a, b in zip(one[1:], two[1:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_space_only_merging_keeps_time() -> None:
    merge = PatchMerging3D(4, temporal=False)
    assert merge(torch.randn(1, 3, 4, 4, 4)).shape == (1, 3, 2, 2, 8)


# --- training machinery ------------------------------------------------------------------


def test_checkpointing_gives_same_outputs_and_gradients() -> None:
    def run(use_checkpoint: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        torch.manual_seed(0)
        model = Swin3D(3, None, **SMALL, window_size=(2, 3, 3), drop_path_rate=0.3,
                       use_checkpoint=use_checkpoint).train()
        x = torch.randn(2, 8, 3, 16, 16, requires_grad=True)
        outs = model(x)
        sum((o * torch.linspace(0, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
        grads = [p.grad for p in model.parameters()] + [x.grad]
        return outs, grads

    plain, checked = run(False), run(True)
    for a, b in zip(plain[0] + plain[1], checked[0] + checked[1], strict=True):
        torch.testing.assert_close(a, b)


def test_tiny_preset_forward_backward() -> None:
    torch.manual_seed(0)
    model = Swin3D(4, "tiny").train()
    outs = model(torch.randn(2, 6, 4, 32, 32))
    assert [tuple(o.shape) for o in outs] == [
        (2, 96, 2, 16, 16), (2, 192, 1, 8, 8), (2, 384, 1, 4, 4), (2, 768, 1, 2, 2)]
    sum(o.square().mean() for o in outs).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_day_of_year_embedding() -> None:
    torch.manual_seed(0)
    model = Swin3D(3, None, **SMALL, window_size=(2, 3, 3), doy_embedding=True).eval()
    x = torch.randn(1, 6, 3, 8, 8)
    doy = torch.tensor([[10.0, 40, 70, 100, 130, 160]])
    with torch.no_grad():
        a, b = model(x, doy=doy), model(x, doy=doy + 30)
    assert a[0].shape == (1, 8, 2, 4, 4)
    assert not torch.allclose(a[0], b[0])
    enc = doy_encoding(torch.tensor([[0.0, 100.0]]), 6)
    assert enc.shape == (1, 2, 6)
    assert torch.equal(enc[0, 0], torch.tensor([0.0, 1, 0, 1, 0, 1]))
    with pytest.raises(ModelError, match="pass doy"):
        model(x)
    with pytest.raises(ModelError, match="doy must be"):
        model(x, doy=doy[:, :3])
    with pytest.raises(ModelError, match="doy_embedding=False"):
        Swin3D(3, None, **SMALL)(x, doy=doy)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"preset": "huge"}, "unknown Swin3D preset"),
     ({"preset": None}, "needs a preset"),
     ({"temporal_merge": (True, True)}, "temporal_merge needs 3"),
     ({"temporal_mode": "max"}, "temporal_mode"),
     ({"embed_dim": 10}, "not divisible"),
     ({"patch_size": (4, 2)}, "patch_size")],
)
def test_user_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        Swin3D(3, **{"preset": "tiny", **kwargs})


def test_wrong_input_shape() -> None:
    with pytest.raises(ModelError, match=r"expects \[B, T, 3, H, W\]"):
        Swin3D(3, None, **SMALL)(torch.randn(1, 4, 5, 8, 8))


def test_body_without_stem_and_meta_construction() -> None:
    body = Swin3D(3, None, **SMALL, stem=False)
    assert body.patch_embed is None
    with pytest.raises(ModelError, match="stem=False"):
        body(torch.randn(1, 4, 3, 8, 8))
    with torch.device("meta"):
        meta = Swin3D(3, None, **SMALL, window_size=(2, 3, 3))
    assert meta.stages[0].blocks[0].attn.relative_position_bias_table.is_meta
    # cached index/mask helpers stay on the CPU after a meta-device build
    real = Swin3D(3, None, **SMALL, window_size=(2, 3, 3)).eval()
    assert real.stages[0].blocks[0].attn.relative_position_index.device.type == "cpu"
    with torch.no_grad():
        assert real(torch.randn(1, 4, 3, 12, 12))[0].shape == (1, 8, 1, 6, 6)


def test_trains_after_a_forward_under_inference_mode() -> None:
    """Issue 20 item 11: the cached index/mask tensors made under ``torch.inference_mode()``
    were inference tensors, and training afterwards in the same process failed with
    "Inference tensors cannot be saved for backward"."""
    from cropscope.models.layers import adaptive_pool_matrix
    from cropscope.models.swin3d import relative_position_index

    for cached in (relative_position_index, shift_window_mask, adaptive_pool_matrix):
        cached.cache_clear()  # type: ignore[attr-defined]
    torch.manual_seed(0)
    model = Swin3D(4, **SMALL)  # type: ignore[arg-type]
    x = torch.randn(1, 5, 4, 20, 20)  # clipped and shifted windows: every cached table
    with torch.inference_mode():
        model.eval()(x)
        adaptive_pool_matrix(5, 3)
    model.train()
    sum(o.square().mean() for o in model(x)).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert not adaptive_pool_matrix(5, 3).is_inference()
