"""The fast paths of the 3D Swin backbone (issue 22 item 5) against plain formulations: the
cached-index window partition against roll + rearrange, the per-run shift masks against the
per-window mask, the written-out training attention against SDPA, the no-autograd merging
against the autograd one, batches against single samples, the -inf mask against Swin's
-100, and the bfloat16 inference option."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from cropscope.errors import ModelError
from cropscope.models import swin3d
from cropscope.models.agrifm import AgriFM
from cropscope.models.swin3d import (
    PatchMerging3D,
    Swin3D,
    SwinBlock3D,
    WindowAttention3D,
    effective_window,
    inference_precision,
    shift_window_mask,
    window_inverse,
    window_order,
    window_segments,
)

SMALL = {"embed_dim": 8, "depths": (2, 2, 1, 1), "num_heads": (1, 2, 2, 4)}

#: (padded grid, window, shift): plain, shifted on two and on three axes, clipped time
GRIDS = [((4, 6, 6), (2, 3, 3), (0, 0, 0)), ((2, 9, 6), (2, 3, 3), (0, 1, 1)),
         ((4, 6, 9), (2, 3, 3), (1, 1, 1)), ((8, 14, 14), (4, 7, 7), (2, 3, 3))]


def partition_by_roll(x: torch.Tensor, window: tuple[int, ...], shift: tuple[int, ...]
                      ) -> torch.Tensor:
    """``[B, D, H, W, C]`` → ``[B, nW, N, C]`` the textbook way (Video Swin)."""
    if any(shift):
        x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
    return rearrange(x, "b (nd wd) (nh wh) (nw ww) c -> b (nd nh nw) (wd wh ww) c",
                     wd=window[0], wh=window[1], ww=window[2])


@pytest.mark.parametrize(("padded", "window", "shift"), GRIDS)
def test_window_order_is_roll_and_partition_up_to_window_order(padded, window, shift) -> None:
    x = torch.randn(2, *padded, 3)
    n = window[0] * window[1] * window[2]
    ours = x.reshape(2, -1, 3).index_select(1, window_order(padded, window, shift))
    ours = ours.view(2, -1, n, 3)
    plain = partition_by_roll(x, window, shift)
    # the same windows, each intact, sorted by shift-mask class: find each one in `plain`
    assert ours.shape == plain.shape
    flat_plain = plain[0].flatten(1)
    found = [int(torch.nonzero((flat_plain == w.flatten()).all(1))[0]) for w in ours[0]]
    assert sorted(found) == list(range(plain.shape[1]))
    torch.testing.assert_close(ours, plain[:, found], rtol=0, atol=0)
    # the masks of the runs are those of the windows they hold
    mask = shift_window_mask(padded, window, shift)
    start = 0
    segments = window_segments(padded, window, shift)
    assert sum(count for count, _ in segments) == plain.shape[1]
    assert len(segments) <= 8
    for count, run_mask in segments:
        for k in found[start:start + count]:
            want = mask[k] if any(shift) else torch.zeros(n, n)
            if run_mask is None:
                assert not want.any()
            else:
                assert torch.equal(run_mask, want)
        start += count


@pytest.mark.parametrize(("size", "window", "shift"),
                         [((4, 6, 6), (2, 3, 3), (0, 1, 1)), ((3, 5, 7), (2, 3, 3), (1, 1, 1)),
                          ((2, 4, 4), (2, 3, 3), (0, 0, 0))])
def test_window_inverse_unshifts_and_crops(size, window, shift) -> None:
    padded = tuple(n + (-n % w) for n, w in zip(size, window, strict=True))
    x = torch.randn(1, *size, 2)
    xp = F.pad(x, (0, 0, 0, padded[2] - size[2], 0, padded[1] - size[1],
                   0, padded[0] - size[0]))
    windows = xp.reshape(1, -1, 2).index_select(1, window_order(padded, window, shift))
    back = windows.index_select(1, window_inverse(size, padded, window, shift))
    assert torch.equal(back.view(1, *size, 2), x)


def test_runs_of_windows_equal_the_per_window_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    padded, window, shift = (4, 6, 9), (2, 3, 3), (1, 1, 1)
    attn = WindowAttention3D(8, 2, window)
    with torch.no_grad():
        attn.relative_position_bias_table.normal_(0, 1.0)
        x = torch.randn(3, *padded, 8)
        order = window_order(padded, window, shift)
        windows = x.reshape(3, -1, 8).index_select(1, order).view(3, -1, 18, 8)
        by_runs = attn(windows, window, segments=window_segments(padded, window, shift))
        # the same windows in the textbook order, with one mask per window
        plain = partition_by_roll(x, window, shift)
        per_window = attn(plain, window, shift_window_mask(padded, window, shift))
        # chunked combined masks (a chunk smaller than the windows of one sample)
        monkeypatch.setattr(swin3d, "MASK_CHUNK_BYTES", 5 * 2 * 18 * 18 * 4)
        chunked = attn(plain, window, shift_window_mask(padded, window, shift))
        one_by_one = torch.cat([attn(plain[i:i + 1], window,
                                     shift_window_mask(padded, window, shift))
                                for i in range(3)])
    back = window_inverse(padded, padded, window, shift)
    grid = by_runs.reshape(3, -1, 8).index_select(1, back).view(3, *padded, 8)
    torch.testing.assert_close(partition_by_roll(grid, window, shift), per_window,
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked, per_window, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(one_by_one, per_window, rtol=1e-5, atol=1e-6)


def test_minus_inf_mask_equals_swins_minus_100() -> None:
    torch.manual_seed(0)
    padded, window, shift = (2, 6, 6), (2, 3, 3), (0, 1, 1)
    attn = WindowAttention3D(8, 2, window)
    mask = shift_window_mask(padded, window, shift)
    assert torch.isinf(mask).any() and set(mask.unique().tolist()) == {0.0, float("-inf")}
    windows = partition_by_roll(torch.randn(2, *padded, 8), window, shift)
    with torch.no_grad():
        ours = attn(windows, window, mask)
        swin = attn(windows, window, mask.clamp(min=-100.0))
    torch.testing.assert_close(ours, swin, rtol=1e-6, atol=1e-7)


def test_training_attention_matches_sdpa_and_gives_bias_gradients() -> None:
    """With a trainable bias the attention is written out (SDPA would take its unfused
    path); with a frozen one SDPA's fused kernel runs: outputs and gradients agree."""
    torch.manual_seed(0)
    block = SwinBlock3D(8, 2, (2, 3, 3), shift=True)
    x = torch.randn(2, 4, 6, 6, 8)

    def run(trainable: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        block.zero_grad(set_to_none=True)
        block.attn.relative_position_bias_table.requires_grad_(trainable)
        out = block(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out, [block.attn.qkv.weight.grad, block.attn.proj.weight.grad]

    written, fused = run(True), run(False)
    torch.testing.assert_close(written[0], fused[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(written[1], fused[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    block.attn.relative_position_bias_table.requires_grad_(True)
    block.zero_grad(set_to_none=True)
    block(x).square().mean().backward()
    grad = block.attn.relative_position_bias_table.grad
    assert grad is not None and grad.abs().sum() > 0


def test_batch_equals_samples_one_by_one() -> None:
    torch.manual_seed(0)
    model = Swin3D(3, None, **SMALL, window_size=(2, 3, 3)).eval()
    x = torch.randn(3, 5, 3, 14, 10)  # padding, shifts and clipping at every stage
    with torch.no_grad():
        batch = model(x)
        single = [model(x[i:i + 1]) for i in range(3)]
    for level, out in enumerate(batch):
        torch.testing.assert_close(out, torch.cat([s[level] for s in single]),
                                   rtol=1e-5, atol=1e-6)


def test_no_grad_forward_equals_autograd_forward() -> None:
    """The in-place residual adds, the no-autograd merging and the fused attention give
    what the autograd path (written-out attention) gives, to float32 rounding."""
    torch.manual_seed(0)
    model = Swin3D(3, None, **SMALL, window_size=(2, 3, 3)).eval()
    x = torch.randn(2, 7, 3, 13, 11)
    with torch.no_grad():
        fast = model(x)
    slow = model(x.requires_grad_())
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 4, 6, 8, 5), (1, 3, 5, 7, 5), (1, 1, 2, 2, 3)])
def test_merging_without_autograd_is_bitwise_the_autograd_one(shape) -> None:
    torch.manual_seed(0)
    merge = PatchMerging3D(shape[-1], temporal=True)
    x = torch.randn(*shape)
    with torch.no_grad():
        fast = merge.gather(x)
    slow = merge.gather(x.clone().requires_grad_())
    assert torch.equal(fast, slow.detach())


def test_cached_windows_survive_inference_mode_then_training() -> None:
    for cached in (window_order, window_inverse, window_segments, shift_window_mask):
        cached.cache_clear()  # type: ignore[attr-defined]
    torch.manual_seed(0)
    model = Swin3D(3, None, **SMALL, window_size=(2, 3, 3))
    x = torch.randn(1, 6, 3, 14, 14)
    with torch.inference_mode():
        model.eval()(x)
    model.train()
    sum(o.square().mean() for o in model(x)).backward()
    assert all(p.grad is not None for p in model.parameters())
    window, shift = effective_window((2, 7, 7), (2, 3, 3), (1, 1, 1))
    assert not window_order((2, 9, 9), window, shift).is_inference()


# --- precision --------------------------------------------------------------------------


def test_inference_precision_options(monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    with inference_precision("float32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ModelError, match="precision"):
        inference_precision("fp8", "cpu")
    monkeypatch.setattr(swin3d, "bf16_supported", lambda device: False)
    with caplog.at_level(logging.WARNING, logger="cropscope"):
        with inference_precision("bfloat16", "cpu"):
            assert not torch.is_autocast_enabled("cpu")
    assert "float32" in caplog.text
    caplog.clear()
    with inference_precision("auto", "cpu"):  # silently float32
        assert not torch.is_autocast_enabled("cpu")
    assert not caplog.text
    monkeypatch.setattr(swin3d, "bf16_supported", lambda device: True)
    for precision in ("bfloat16", "auto"):
        with inference_precision(precision, "cpu"):
            assert torch.is_autocast_enabled("cpu")
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_bf16_supported_answers_for_every_device() -> None:
    assert isinstance(swin3d.bf16_supported("cpu"), bool)
    assert swin3d.bf16_supported("meta") is False
    if not torch.cuda.is_available():
        assert swin3d.bf16_supported("cuda") is False


def test_agrifm_predict(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = AgriFM({"S2": 4}, [2, 3], None, embed_dim=8, depths=(1, 1, 1, 1),
                   num_heads=(1, 2, 2, 4), window_size=(2, 3, 3)).train()
    x = torch.randn(1, 6, 4, 24, 24)
    out = model.predict({"S2": x})
    assert model.training  # the mode is restored
    model.eval()
    with torch.no_grad():
        want = model({"S2": x})
    assert isinstance(out, list) and len(out) == 2
    for a, b in zip(out, want, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b)
    monkeypatch.setattr(swin3d, "bf16_supported", lambda device: True)
    low = model.predict(x, precision="bfloat16")
    for a, b in zip(low, want, strict=True):
        assert a.dtype == torch.float32
        assert float((a - b).abs().max() / b.abs().max()) < 0.1
        assert not torch.equal(a, b)  # it did run in bfloat16
