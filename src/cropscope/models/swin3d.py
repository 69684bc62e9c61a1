"""3D (video) Swin Transformer backbone for patch time series: the AgriFM encoder (agrifm.md §2).

Input ``[B, T, C, H, W]`` (a 4-D ``[B, C, H, W]`` is read as ``T = 1``); output the list of
per-stage feature maps ``[B, C_i, D_i, H_i, W_i]`` (the blocks' output of each stage, before
its patch merging; the last one after a final LayerNorm).

- **Stem**: Conv3d ``in_chans -> embed_dim`` with kernel = stride = ``patch_size`` ``(t, h, w)``
  (AgriFM's S2 config: (4, 2, 2); its released checkpoint: (4, 4, 4)); optional LayerNorm.
  ``T``, ``H``, ``W`` are padded at the end to patch multiples by repeating the last
  frame/row/column (the reference zero-pads).
- **Blocks** (Video Swin): pre-norm ``x + DropPath(W-MSA(LN(x)))``, ``x + DropPath(MLP(LN(x)))``;
  MLP ratio 4 with GELU; attention inside 3-D windows (default (8, 7, 7)) with a learnable
  relative-position bias table of ``(2Wt-1)(2Wh-1)(2Ww-1) x heads`` entries; odd blocks shift
  the windows cyclically by half a window and mask pairs from different regions (Swin's
  -100; here -inf, which gives the same float32 outputs without denormals, see MASK_VALUE).
  Along an axis whose extent is <= the window, the window becomes the extent and the shift 0
  (so with ``T <= 32`` and a temporal patch of 4, attention is global in time). Inputs are
  zero-padded to window multiples after the first norm and cropped back, as in Video Swin.
  Stochastic depth rises linearly from 0 to ``drop_path_rate``; ``use_checkpoint`` wraps each
  block in :func:`torch.utils.checkpoint.checkpoint`.
- **Patch merging**: 2 x 2 spatial neighbours concatenated (4C) → LayerNorm → Linear(4C → 2C,
  no bias). AgriFM's change, on by default per stage (``temporal_merge``): time is halved in
  the same step. ``temporal_mode="mean"`` (AgriFM, default) averages pairs of frames, so the
  parameter shapes are those of Video Swin (its weights load shape for shape);
  ``"concat"`` concatenates the 2 x 2 x 2 neighbours (8C → 2C). ``temporal_merge`` all False
  is the original Video Swin (time kept at every stage).
- **Odd sizes** in merging are padded by repeating the last frame/row/column. The reference
  zero-pads and then averages, which halves the surviving frame (a single-date input loses
  half its magnitude at every merge); here a constant input stays constant.
- **Day of year** (optional, off by default; AgriFM has no date encoding): the sinusoidal
  encoding of each temporal token's mean DOY (from ``doy [B, T]``) is added after the stem.
- **Relative-position index for clipped windows**: computed for the clipped window against
  the full table (the reference slices the first N x N entries of the full index, which is
  right only when time alone is clipped; both agree in that case).

**Speed** (issue 22; ``benchmarks/bench_agrifm_official.py``). Windows are cut from the
(padded) grid by one cached-index gather that also applies the shift, and put back (un-shifted,
cropped) by another; they are ordered so that windows sharing a shift mask are consecutive
(at most 8 masks), and attention runs per run of windows as 4-D
``scaled_dot_product_attention`` calls with a ``[1, heads, N, N]`` mask (bias + that run's
mask), which CPUs and GPUs serve with a fused kernel; 5-D calls and ``[nW, heads, N, N]``
masks are slow paths. In training (the bias table needs a gradient, which SDPA's fused
kernels do not give) the attention is written out. Without autograd the temporal merge
writes the frame mean straight into the merged layout, and residual adds reuse the branch
output. A traced or exported graph gets batch-generic 5-D calls. bfloat16 autocast for
inference: :func:`inference_precision`.

``SWIN3D_PRESETS`` holds tiny / small / base; ``Swin3D(10, "base")`` without the stem has the
87,626,312 parameters of agrifm.md §2.9 (the (4, 2, 2) S2 stem adds 20,608).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from cropscope.errors import ModelError
from cropscope.models.layers import cached_tensor

__all__ = [
    "SWIN3D_PRESETS",
    "DropPath",
    "Mlp",
    "PatchEmbed3D",
    "PatchMerging3D",
    "Swin3D",
    "SwinBlock3D",
    "SwinStage3D",
    "WindowAttention3D",
    "bf16_supported",
    "doy_encoding",
    "effective_window",
    "inference_precision",
    "relative_position_index",
    "set_official_compat",
    "shift_window_mask",
    "window_inverse",
    "window_order",
    "window_segments",
]

Size3 = tuple[int, int, int]

#: backbone sizes (Video Swin / AgriFM); explicit arguments of :class:`Swin3D` override them
SWIN3D_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"embed_dim": 96, "depths": (2, 2, 6, 2), "num_heads": (3, 6, 12, 24)},
    "small": {"embed_dim": 96, "depths": (2, 2, 18, 2), "num_heads": (3, 6, 12, 24)},
    "base": {"embed_dim": 128, "depths": (2, 2, 18, 2), "num_heads": (4, 8, 16, 32)},
}

#: additive mask value between tokens of different regions in a shifted window. Swin's
#: -100 gives such pairs a weight of ~e^-100 ≈ 4e-44: nothing at float32 precision (unless a
#: masked logit beats the window's others by > ~84), but a *denormal*, and CPU arithmetic on
#: denormals is slow (a training step of the AgriFM backbone was ~15 % slower than with
#: flush-to-zero, 1 thread); -inf gives exactly 0
MASK_VALUE = float("-inf")


def _triple(value: int | Sequence[int], name: str) -> Size3:
    vals = (value,) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(vals) != 3 or min(vals) < 1:
        raise ModelError(f"{name} must be a positive int or three positive ints (t, h, w), "
                         f"got {value!r}")
    return vals[0], vals[1], vals[2]


def effective_window(size: Size3, window: Size3, shift: Size3) -> tuple[Size3, Size3]:
    """Window and shift clipped to the input: an axis with ``size <= window`` gets the whole
    extent as window and no shift (Video Swin)."""
    w, s = list(window), list(shift)
    for i in range(3):
        if size[i] <= window[i]:
            w[i], s[i] = size[i], 0
    return (w[0], w[1], w[2]), (s[0], s[1], s[2])


@cached_tensor
def relative_position_index(window: Size3, table_window: Size3 | None = None,
                            device: torch.device | str = "cpu") -> Tensor:
    """``[N, N]`` index into a bias table built for ``table_window`` (default ``window``) of
    the relative positions of the ``N`` tokens of ``window`` (t-major order), on ``device``
    (cached per device, so a GPU model does not copy it at every forward)."""
    tw = window if table_window is None else table_window
    coords = torch.stack(torch.meshgrid(*(torch.arange(n, device="cpu") for n in window),
                                        indexing="ij"))
    coords = coords.flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]
    index = ((rel[0] + tw[0] - 1) * (2 * tw[1] - 1) * (2 * tw[2] - 1)
             + (rel[1] + tw[1] - 1) * (2 * tw[2] - 1) + rel[2] + tw[2] - 1)
    return index.to(device)


@cached_tensor
def shift_window_mask(padded: Size3, window: Size3, shift: Size3,
                      device: torch.device | str = "cpu") -> Tensor:
    """Additive mask ``[n_windows, N, N]`` of the shifted windows of a (cyclically rolled)
    grid of size ``padded``: 0 between tokens of the same region, :data:`MASK_VALUE` (-inf)
    otherwise (float32 on ``device``, cached per device). The blocks do not use it (they
    keep only the distinct masks, :func:`window_segments`); it serves a per-window ``mask``
    of :meth:`WindowAttention3D.forward` and the tests."""
    region = torch.zeros(padded, dtype=torch.long, device="cpu")
    count = 0
    slices = [((slice(0, -w), slice(-w, -s), slice(-s, None)) if s else (slice(None),))
              for w, s in zip(window, shift, strict=True)]
    for st in slices[0]:
        for sh in slices[1]:
            for sw in slices[2]:
                region[st, sh, sw] = count
                count += 1
    ids = rearrange(region, "(nd wd) (nh wh) (nw ww) -> (nd nh nw) (wd wh ww)",
                    wd=window[0], wh=window[1], ww=window[2])
    same = ids[:, :, None] == ids[:, None, :]
    return torch.where(same, 0.0, MASK_VALUE).to(device)


# The window indices below are built with numpy: a traced or exported graph (TorchScript,
# ONNX) then holds them as constants instead of the ops that made them (a stable sort has
# no ONNX form).


def _window_classes(padded: Size3, window: Size3, shift: Size3) -> np.ndarray:
    """Class ``[nW]`` of each window's shift mask: bit ``4 / 2 / 1`` set when the window is
    the last along a shifted t / h / w axis. A window's mask depends only on these flags (a
    last window holds two regions along that axis, any other one region), so windows of one
    class share one mask and there are at most 8 classes (one without a shift)."""
    grid = [p // w for p, w in zip(padded, window, strict=True)]
    idx = np.indices(grid).reshape(3, -1)
    classes = np.zeros(idx.shape[1], dtype=np.int64)
    for axis in range(3):
        last = (idx[axis] == grid[axis] - 1) if shift[axis] else np.zeros_like(classes, bool)
        classes = classes * 2 + last
    return classes


def _class_mask(window: Size3, shift: Size3, cls: int) -> Tensor | None:
    """The additive shift mask ``[N, N]`` of the windows of class ``cls`` (None: nothing
    masked): tokens attend within the same region only."""
    region = np.zeros(window, dtype=np.int64)
    for axis in range(3):
        if cls >> (2 - axis) & 1:
            shape = [1, 1, 1]
            shape[axis] = window[axis]
            second = np.arange(window[axis]) >= window[axis] - shift[axis]
            region = region * 2 + second.reshape(shape)
    ids = region.reshape(-1)
    if (ids == ids[0]).all():
        return None
    mask = np.where(ids[:, None] == ids[None, :], 0.0, MASK_VALUE).astype(np.float32)
    return torch.from_numpy(mask)


@cached_tensor
def window_order(padded: Size3, window: Size3, shift: Size3,
                 device: torch.device | str = "cpu") -> Tensor:
    """``[nW·N]`` flat index into a ``padded`` grid of the token at each (window, token)
    slot after a cyclic roll by ``-shift``, the windows sorted (stably) by their shift-mask
    class (see :func:`window_segments`): one ``index_select`` partitions and shifts the
    grid, instead of ``torch.roll`` (a copy per axis) and a permuting copy."""
    return torch.from_numpy(_window_order(padded, window, shift)).to(device)


def _window_order(padded: Size3, window: Size3, shift: Size3) -> np.ndarray:
    grid = np.arange(padded[0] * padded[1] * padded[2]).reshape(padded)
    if any(shift):
        grid = np.roll(grid, shift=tuple(-s for s in shift), axis=(0, 1, 2))
    (wd, wh, ww), (nd, nh, nw) = window, (p // w for p, w in zip(padded, window, strict=True))
    order = grid.reshape(nd, wd, nh, wh, nw, ww).transpose(0, 2, 4, 1, 3, 5)
    order = order.reshape(nd * nh * nw, wd * wh * ww)
    by_class = np.argsort(_window_classes(padded, window, shift), kind="stable")
    return np.ascontiguousarray(order[by_class].reshape(-1))


@cached_tensor
def window_inverse(size: Size3, padded: Size3, window: Size3, shift: Size3,
                   device: torch.device | str = "cpu") -> Tensor:
    """``[D·H·W]`` slot in the (window, token) order of :func:`window_order` of each token
    of the unpadded ``size`` grid: one ``index_select`` un-partitions, un-shifts and crops."""
    order = _window_order(padded, window, shift)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    crop = inverse.reshape(padded)[:size[0], :size[1], :size[2]]
    return torch.from_numpy(np.ascontiguousarray(crop.reshape(-1))).to(device)


#: runs of consecutive windows (in :func:`window_order`) sharing one shift mask: ``(count,
#: mask [N, N] or None)``, None where nothing is masked
Segments = tuple[tuple[int, Tensor | None], ...]


@functools.lru_cache(maxsize=64)
def window_segments(padded: Size3, window: Size3, shift: Size3,
                    device: torch.device | str = "cpu") -> Segments:
    """The windows of :func:`window_order` as runs sharing one shift mask (float32 on
    ``device``, made outside inference mode so later training can use them): attention
    then adds a ``[1, heads, N, N]`` mask per run instead of a ``[nW, heads, N, N]`` one."""
    classes, counts = np.unique(_window_classes(padded, window, shift), return_counts=True)
    with torch.inference_mode(False):
        runs = []
        for cls, count in zip(classes.tolist(), counts.tolist(), strict=True):
            mask = _class_mask(window, shift, cls)
            runs.append((int(count), None if mask is None else mask.to(device)))
        return tuple(runs)


def doy_encoding(doy: Tensor, dim: int) -> Tensor:
    """Sinusoidal encoding ``[..., dim]`` of real-valued day-of-year ``doy [...]`` (the
    formula of ``spectral_transformer.sinusoid_table``: ``doy / 10000^(2*floor(j/2)/dim)``,
    sine on even ``j``, cosine on odd ``j``)."""
    j = torch.arange(dim, device=doy.device)
    freq = torch.pow(10000.0, -2 * torch.div(j, 2, rounding_mode="floor").double() / dim)
    angle = doy.double()[..., None] * freq
    return torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle)).float()


#: precisions of :func:`inference_precision`
PRECISIONS = ("float32", "bfloat16", "auto")


def bf16_supported(device: torch.device | str) -> bool:
    """Whether bfloat16 autocast is worth it on ``device``: a GPU that supports bfloat16, or
    a CPU with native bfloat16 instructions (AVX512-BF16 or AMX; elsewhere oneDNN emulates
    bfloat16 and it is slower than float32)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def inference_precision(precision: str, device: torch.device | str
                        ) -> contextlib.AbstractContextManager[Any]:
    """Context for an inference forward pass at ``precision``: ``"float32"`` (the default
    everywhere: nothing changes), ``"bfloat16"`` (``torch.autocast`` with bfloat16 on the
    CPU or GPU; where :func:`bf16_supported` says no, float32 with a logged warning) or
    ``"auto"`` (bfloat16 where supported, else float32, silently). Outputs under bfloat16
    differ from float32 by ~1e-2 relative: use it for maps, not for parity checks."""
    if precision not in PRECISIONS:
        raise ModelError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    dev = torch.device(device)
    if precision == "float32":
        return contextlib.nullcontext()
    if not bf16_supported(dev):
        if precision == "bfloat16":
            logging.getLogger("cropscope").warning(
                "bfloat16 is not supported (natively) on %s: running in float32", dev)
        return contextlib.nullcontext()
    # no cast cache: every weight is used once per forward, so caching its bfloat16 copy
    # until the context ends only adds 2 bytes per parameter to the peak memory
    return torch.autocast(dev.type, dtype=torch.bfloat16, cache_enabled=False)


def _pad_end_replicate(x: Tensor, dim: int, multiple: int) -> Tensor:
    """Pad ``x`` at the end of ``dim`` to a multiple of ``multiple`` by repeating its last
    slice."""
    extra = -x.shape[dim] % multiple
    if not extra:
        return x
    last = x.narrow(dim, x.shape[dim] - 1, 1)
    return torch.cat([x, *([last] * extra)], dim=dim)


def _pad_end_zeros(x: Tensor, dim: int, multiple: int) -> Tensor:
    """Pad ``x`` with zeros at the end of ``dim`` to a multiple of ``multiple``."""
    extra = -x.shape[dim] % multiple
    if not extra:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def set_official_compat(module: nn.Module, on: bool = True) -> nn.Module:
    """Switch every Swin3D part inside ``module`` to the reference code's conventions:
    clipped windows index the full window's relative-position index as ``[:N, :N]``, and odd
    sizes are zero-padded in the stem and the merges (instead of re-indexing the bias table
    for the clipped window and repeating the last frame/row/column)."""
    for sub in module.modules():
        if isinstance(sub, WindowAttention3D | PatchMerging3D | PatchEmbed3D):
            sub.official = bool(on)
    return module


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability ``p`` (training
    only), scaling kept samples by ``1 / (1 - p)``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)  # one pass over x (the scale folded into the mask)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Transformer MLP: Linear → GELU → Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention3D(nn.Module):
    """Multi-head self-attention within 3-D windows, with a learnable relative-position bias
    table built for ``window_size`` (smaller, clipped windows index into the same table)."""

    relative_position_index: Tensor  # a buffer

    def __init__(self, dim: int, num_heads: int, window_size: Size3, qkv_bias: bool = True
                 ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ModelError(f"embedding dim {dim} is not divisible by {num_heads} heads")
        self.num_heads, self.window_size = num_heads, window_size
        wt, wh, ww = window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wt - 1) * (2 * wh - 1) * (2 * ww - 1), num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size),
                             persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    #: official indexing of clipped windows: the full window's index cut to ``[:N, :N]``
    #: (as the reference code does; :func:`set_official_compat`)
    official: bool = False

    def position_bias(self, window: Size3) -> Tensor:
        """Relative-position bias ``[heads, N, N]`` for a (possibly clipped) window."""
        table = self.relative_position_bias_table
        if window == self.window_size:
            index = self.relative_position_index
        elif self.official:
            n = window[0] * window[1] * window[2]
            index = self.relative_position_index[:n, :n]
        else:
            index = relative_position_index(window, self.window_size, table.device)
        n = index.shape[0]
        # gathered from the head-major table, so the result is contiguous; index_select's
        # backward is an index_add (advanced indexing's a sorting index_put)
        heads = table.t().contiguous()
        return heads.index_select(1, index.reshape(-1)).view(-1, n, n)

    def forward(self, windows: Tensor, window: Size3, mask: Tensor | None = None,
                segments: Segments | None = None) -> Tensor:
        """``windows [B, nW, N, C]`` → same shape; ``mask [nW, N, N]`` additive (or None),
        or ``segments`` (:func:`window_segments`: runs of windows sharing one mask).

        The attention runs on 4-D ``[B·nW, heads, N, d]`` tensors (a 5-D call sends
        ``scaled_dot_product_attention`` to its slow unfused path) with an additive mask
        that broadcasts over the windows: ``[1, heads, N, N]`` (the bias, plus a run's
        shift mask) or, for a per-window ``mask``, ``[n, heads, N, N]`` for chunks of ``n``
        windows (at most :data:`MASK_CHUNK_BYTES` each)."""
        b, nw, n, c = windows.shape
        heads = self.num_heads
        qkv = self.qkv(windows).view(b * nw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self.position_bias(window).to(q.dtype)
        if segments is None:
            segments = ((nw, None),) if mask is None else None  # no mask: one run
        if segments is not None:
            out = _segmented_attention(q, k, v, bias, segments, b)
        else:
            assert mask is not None
            out = _masked_attention(q, k, v, bias, mask.to(q.dtype), b)
        return self.proj(out.reshape(b, nw, n, c))


#: largest combined (bias + shift) mask built at once for a per-window mask, in bytes
MASK_CHUNK_BYTES = 32 * 2**20


def _exporting() -> bool:
    """Whether a graph is being traced or exported (TorchScript, ONNX, torch.export): the
    batch size is then symbolic, so no Python loop over it and no ``out=`` writes."""
    return bool(torch.jit.is_tracing() or torch.jit.is_scripting()
                or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """``softmax(q kᵀ / √d + mask) v`` on 4-D tensors. When the mask needs a gradient (the
    bias table, in training) SDPA can only take its unfused path, which also checks every
    row for being fully masked; written out here instead (no row is ever fully masked).

    ``k`` and ``v`` are made contiguous first: ``matmul`` copies them anyway (they are
    strided views of the qkv output), except for a run of one window, where it would keep
    a view, and with it the whole qkv output of every window, alive for the backward."""
    if mask.requires_grad and torch.is_grad_enabled():
        k, v = k.contiguous(), v.contiguous()
        scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1)).add_(mask)
        return torch.matmul(scores.softmax(-1), v)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _attend_5d(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, nw: int) -> Tensor:
    """The export path: one 5-D call ``[B, nW, h, N, d]`` with ``mask [nW, h, N, N]`` for
    any batch size (SDPA's slow unfused path in eager mode); ``[B·nW, N, h, d]`` out."""
    q5, k5, v5 = (t.reshape(-1, nw, *t.shape[1:]) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q5, k5, v5, attn_mask=mask)
    return out.transpose(2, 3).reshape(-1, q.shape[2], q.shape[1], q.shape[3])


def _join(parts: list[Tensor]) -> Tensor:
    """Attention outputs ``[n, h, N, d]`` → one ``[Σn, N, h, d]`` contiguous tensor (the
    head transpose and the concatenation in one copy)."""
    if len(parts) == 1:
        return parts[0].transpose(1, 2).contiguous()
    return torch.cat([p.transpose(1, 2) for p in parts])


def _segmented_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, segments: Segments,
                         batch: int) -> Tensor:
    """Attention of ``q, k, v [B·nW, h, N, d]`` whose windows (the same for every batch
    element) come in runs sharing one mask: one call per run, mask ``[1, h, N, N]``."""
    masks = [(count, (bias if m is None else bias + m.to(bias.dtype))[None])
             for count, m in segments]
    nw = sum(count for count, _ in segments)
    if _exporting():
        return _attend_5d(q, k, v, torch.cat([m.expand(count, -1, -1, -1)
                                              for count, m in masks]), nw)
    parts = []
    for i in range(batch):
        start = i * nw
        for count, mask in masks:
            rows = slice(start, start + count)
            parts.append(_attend(q[rows], k[rows], v[rows], mask))
            start += count
    return _join(parts)


def _masked_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor,
                      batch: int) -> Tensor:
    """Attention of ``q, k, v [B·nW, h, N, d]`` with ``bias [h, N, N] + mask [nW, N, N]``
    (one mask per window, the same for every batch element): the combined mask of a chunk
    of windows is built once and serves that chunk of every batch element."""
    nw = mask.shape[0]
    if _exporting():
        return _attend_5d(q, k, v, bias[None] + mask[:, None], nw)
    per_window = bias.numel() * bias.element_size()
    step = max(1, min(nw, MASK_CHUNK_BYTES // max(per_window, 1)))
    parts: list[list[Tensor]] = [[] for _ in range(batch)]
    for start in range(0, nw, step):
        stop = min(start + step, nw)
        combined = bias[None] + mask[start:stop, None]
        for i in range(batch):
            rows = slice(i * nw + start, i * nw + stop)
            parts[i].append(_attend(q[rows], k[rows], v[rows], combined))
    return _join([t for chunks in parts for t in chunks])


class SwinBlock3D(nn.Module):
    """Video Swin block on ``[B, D, H, W, C]`` (pre-norm; shifted windows when ``shift``)."""

    def __init__(self, dim: int, num_heads: int, window_size: Size3, shift: bool = False,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        self.window_size = window_size
        half = (window_size[0] // 2, window_size[1] // 2, window_size[2] // 2)
        self.shift_size: Size3 = half if shift else (0, 0, 0)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, num_heads, window_size, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def attention(self, x: Tensor) -> Tensor:
        """(Shifted-)window attention of an already normalised ``[B, D, H, W, C]``.

        Zero-padded to window multiples, then partitioned into windows (rolled by half a
        window when shifted; windows sorted by shift-mask class) by one cached-index
        gather, and gathered back (un-rolled and cropped) the same way: 2 copies where
        roll / partition / reverse / crop made 4-8."""
        b, c = x.shape[0], x.shape[4]
        d, h, w = (int(n) for n in x.shape[1:4])  # index constants (tensors when exporting)
        window, shift = effective_window((d, h, w), self.window_size, self.shift_size)
        pads = [-n % wn for n, wn in zip((d, h, w), window, strict=True)]
        if any(pads):
            x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
        padded: Size3 = (d + pads[0], h + pads[1], w + pads[2])
        n = window[0] * window[1] * window[2]
        flat = x.reshape(b, -1, c)
        windows = flat.index_select(1, window_order(padded, window, shift, x.device))
        out = self.attn(windows.view(b, -1, n, c), window,
                        segments=window_segments(padded, window, shift, x.device))
        back = window_inverse((d, h, w), padded, window, shift, x.device)
        return out.reshape(b, -1, c).index_select(1, back).view(b, d, h, w, c)

    def forward(self, x: Tensor) -> Tensor:
        x = _residual(x, self.drop_path(self.attention(self.norm1(x))))
        return _residual(x, self.drop_path(self.mlp(self.norm2(x))))


def _residual(x: Tensor, branch: Tensor) -> Tensor:
    """``x + branch``, written into ``branch`` (a fresh output of the block's attention, MLP
    or drop-path, which autograd does not keep) when that gives the same dtype and shape:
    no new allocation per residual add."""
    if branch.dtype == x.dtype and branch.shape == x.shape and branch.data_ptr() != x.data_ptr():
        return branch.add_(x)
    return x + branch


class SwinStage3D(nn.Module):
    """``depth`` Swin blocks, alternating plain and shifted windows."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: Size3,
                 drop_paths: Sequence[float], mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 use_checkpoint: bool = False) -> None:
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinBlock3D(dim, num_heads, window_size, shift=i % 2 == 1, mlp_ratio=mlp_ratio,
                        qkv_bias=qkv_bias, drop_path=drop_paths[i])
            for i in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class PatchMerging3D(nn.Module):
    """``[B, D, H, W, C]`` → ``[B, D', H/2, W/2, 2C]`` (``D' = D/2`` when ``temporal``);
    odd sizes are padded by repeating the last frame/row/column."""

    def __init__(self, dim: int, temporal: bool = True, temporal_mode: str = "mean") -> None:
        super().__init__()
        if temporal_mode not in {"mean", "concat"}:
            raise ModelError(f"temporal_mode must be 'mean' or 'concat', got {temporal_mode!r}")
        self.temporal, self.temporal_mode = temporal, temporal_mode
        n_in = 8 * dim if temporal and temporal_mode == "concat" else 4 * dim
        self.norm = nn.LayerNorm(n_in)
        self.reduction = nn.Linear(n_in, 2 * dim, bias=False)

    #: zero padding of odd sizes, as the reference code (:func:`set_official_compat`)
    official: bool = False

    def gather(self, x: Tensor) -> Tensor:
        """The neighbours concatenated on channels, before the norm."""
        pad = _pad_end_zeros if self.official else _pad_end_replicate
        x = pad(pad(x, 2, 2), 3, 2)
        if not self.temporal:
            return rearrange(x, "b d (h i) (w j) c -> b d h w (j i c)", i=2, j=2)
        x = pad(x, 1, 2)
        autograd = torch.is_grad_enabled() and x.requires_grad
        if self.temporal_mode == "mean" and not (autograd or _exporting()):
            # without autograd: the frame pairs' sum written straight into the (j i c)
            # layout, then halved in place (2 passes instead of sum, divide and permute)
            b, d, h, w, c = x.shape
            shape = (b, d // 2, h // 2, 2, w // 2, 2, c)
            out = x.new_empty(b, d // 2, h // 2, w // 2, 2, 2, c)
            torch.add(x[:, 0::2].reshape(shape), x[:, 1::2].reshape(shape),
                      out=out.permute(0, 1, 2, 5, 3, 4, 6))
            return out.view(b, d // 2, h // 2, w // 2, 4 * c).mul_(0.5)
        if self.temporal_mode == "mean":
            x = rearrange(x, "b (d k) h w c -> b d k h w c", k=2).mean(dim=2)
            return rearrange(x, "b d (h i) (w j) c -> b d h w (j i c)", i=2, j=2)
        return rearrange(x, "b (d k) (h i) (w j) c -> b d h w (k j i c)", k=2, i=2, j=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.reduction(self.norm(self.gather(x)))


class PatchEmbed3D(nn.Module):
    """``[B, C, T, H, W]`` → ``[B, embed_dim, D, H', W']`` by a Conv3d with kernel = stride =
    ``patch_size`` (sizes padded at the end to patch multiples by replication)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: Size3, norm: bool = False
                 ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    #: zero padding to patch multiples, as the reference code (:func:`set_official_compat`)
    official: bool = False

    def forward(self, x: Tensor) -> Tensor:
        pt, ph, pw = self.patch_size
        pads = (0, -x.shape[4] % pw, 0, -x.shape[3] % ph, 0, -x.shape[2] % pt)
        if any(pads):
            x = F.pad(x, pads) if self.official else F.pad(x, pads, mode="replicate")
        x = self.proj(x)
        if self.norm is not None:
            x = rearrange(self.norm(rearrange(x, "b c d h w -> b d h w c")),
                          "b d h w c -> b c d h w")
        return x


class Swin3D(nn.Module):
    """The 3D Swin backbone: ``forward(x [B, T, C, H, W], doy=None)`` → per-stage maps
    ``[B, C_i, D_i, H_i, W_i]`` (see the module doc).

    ``preset`` (``"tiny" | "small" | "base"``, or None) gives ``embed_dim``, ``depths`` and
    ``num_heads``; explicit values override it. ``temporal_merge`` has one flag per merge
    (``len(depths) - 1``). ``stem=False`` builds the body without its patch embedding (the
    AgriFM layout: stems live per source outside the backbone); such a body is driven by
    its ``stages``/``merges``/``norm`` directly and :meth:`forward` raises.
    """

    def __init__(
        self,
        in_chans: int,
        preset: str | None = "base",
        *,
        embed_dim: int | None = None,
        depths: Sequence[int] | None = None,
        num_heads: Sequence[int] | None = None,
        patch_size: int | Sequence[int] = (4, 2, 2),
        window_size: int | Sequence[int] = (8, 7, 7),
        temporal_merge: Sequence[bool] = (True, True, True),
        temporal_mode: str = "mean",
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.2,
        patch_norm: bool = False,
        doy_embedding: bool = False,
        use_checkpoint: bool = False,
        stem: bool = True,
    ) -> None:
        super().__init__()
        base: dict[str, Any] = {}
        if preset is not None:
            if preset not in SWIN3D_PRESETS:
                raise ModelError(f"unknown Swin3D preset {preset!r}; choose one of "
                                 f"{sorted(SWIN3D_PRESETS)} or None")
            base = SWIN3D_PRESETS[preset]
        embed_dim = base.get("embed_dim") if embed_dim is None else embed_dim
        depths = base.get("depths") if depths is None else depths
        num_heads = base.get("num_heads") if num_heads is None else num_heads
        if embed_dim is None or depths is None or num_heads is None:
            raise ModelError("Swin3D needs a preset or all of embed_dim, depths and num_heads")
        depths, num_heads = tuple(int(d) for d in depths), tuple(int(h) for h in num_heads)
        if len(depths) != len(num_heads) or not depths or min(depths) < 1:
            raise ModelError(f"depths {depths} and num_heads {num_heads} must be non-empty, "
                             "positive and of the same length")
        temporal_merge = tuple(bool(t) for t in temporal_merge)
        if len(temporal_merge) != len(depths) - 1:
            raise ModelError(f"temporal_merge needs {len(depths) - 1} flags (one per merge), "
                             f"got {len(temporal_merge)}")
        if in_chans < 1:
            raise ModelError(f"in_chans must be positive, got {in_chans}")
        self.in_chans = int(in_chans)
        self.patch_size = _triple(patch_size, "patch_size")
        self.window_size = _triple(window_size, "window_size")
        self.temporal_merge = temporal_merge
        self.dims = tuple(int(embed_dim) * 2**i for i in range(len(depths)))
        self.depths, self.num_heads = depths, num_heads

        self.patch_embed: PatchEmbed3D | None = (
            PatchEmbed3D(in_chans, int(embed_dim), self.patch_size, patch_norm) if stem else None)
        self.doy_embedding = bool(doy_embedding)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        for i, (dim, depth, heads) in enumerate(zip(self.dims, depths, num_heads, strict=True)):
            start = sum(depths[:i])
            self.stages.append(SwinStage3D(dim, depth, heads, self.window_size,
                                           rates[start:start + depth], mlp_ratio, qkv_bias,
                                           use_checkpoint))
            if i < len(depths) - 1:
                self.merges.append(PatchMerging3D(dim, temporal_merge[i], temporal_mode))
        self.norm = nn.LayerNorm(self.dims[-1])
        self.apply(_init_weights)

    def _swin_stages(self) -> list[SwinStage3D]:
        return [stage for stage in self.stages if isinstance(stage, SwinStage3D)]

    @property
    def use_checkpoint(self) -> bool:
        return all(stage.use_checkpoint for stage in self._swin_stages())

    @use_checkpoint.setter
    def use_checkpoint(self, value: bool) -> None:
        for stage in self._swin_stages():
            stage.use_checkpoint = bool(value)

    def output_shapes(self, t: int, h: int, w: int) -> list[tuple[int, int, int, int]]:
        """``(C_i, D_i, H_i, W_i)`` of each stage's output for an input of ``t x h x w``."""
        ceil = [-(-n // p) for n, p in zip((t, h, w), self.patch_size, strict=True)]
        d, hh, ww = ceil
        shapes = []
        for i, dim in enumerate(self.dims):
            shapes.append((dim, d, hh, ww))
            if i < len(self.merges):
                d = -(-d // 2) if self.temporal_merge[i] else d
                hh, ww = -(-hh // 2), -(-ww // 2)
        return shapes

    def forward(self, x: Tensor, doy: Tensor | None = None) -> list[Tensor]:
        if x.ndim == 4:
            x = x[:, None]
        if x.ndim != 5 or x.shape[2] != self.in_chans:
            raise ModelError(f"Swin3D expects [B, T, {self.in_chans}, H, W] (or [B, C, H, W]), "
                             f"got {list(x.shape)}")
        if self.patch_embed is None:
            raise ModelError("this Swin3D was built with stem=False and has no patch embedding")
        x = self.patch_embed(rearrange(x, "b t c h w -> b c t h w"))
        if self.doy_embedding:
            x = x + self._doy_term(doy, x)
        elif doy is not None:
            raise ModelError("doy was given but this Swin3D has doy_embedding=False")
        x = rearrange(x, "b c d h w -> b d h w c")
        outputs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            last = i == len(self.stages) - 1
            outputs.append(rearrange(self.norm(x) if last else x, "b d h w c -> b c d h w"))
            if not last:
                x = self.merges[i](x)
        return outputs

    def _doy_term(self, doy: Tensor | None, x: Tensor) -> Tensor:
        """Encoding of the mean DOY of each temporal token, ``[B, C, D, 1, 1]``."""
        b, c, d = x.shape[:3]
        t_in = d * self.patch_size[0]
        if doy is None:
            raise ModelError("this Swin3D has doy_embedding=True: pass doy [B, T]")
        if doy.ndim != 2 or doy.shape[0] != b or not 0 < doy.shape[1] <= t_in \
                or -(-doy.shape[1] // self.patch_size[0]) != d:
            raise ModelError(f"doy must be [B, T] = [{b}, T] matching the input, got "
                             f"{list(doy.shape)}")
        doy = _pad_end_replicate(doy.to(x.device, torch.float64), 1, self.patch_size[0])
        token_doy = rearrange(doy, "b (d k) -> b d k", k=self.patch_size[0]).mean(dim=2)
        return rearrange(doy_encoding(token_doy, c).to(x.dtype), "b d c -> b c d 1 1")


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
