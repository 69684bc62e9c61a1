"""Differentiable grid interpolation (bilinear, Keys bicubic) at continuous grid indices.

Gradients flow to the query positions, so autograd derivatives of an interpolated field
(and of a model built on it) with respect to latitude/longitude are exact.
"""

from __future__ import annotations

import torch

__all__ = ["keys_weights", "sample_grid"]


def keys_weights(t: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys cubic-convolution weights for the 4 taps at offsets -1, 0, 1, 2; ``t`` in [0, 1)."""
    d = torch.stack([t + 1, t, 1 - t, 2 - t], dim=-1).abs()
    near = (a + 2) * d**3 - (a + 3) * d**2 + 1
    far = a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def _taps(pos: torch.Tensor, n: int, periodic: bool, offsets: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    base = torch.floor(pos.detach())
    frac = pos - base
    idx = base.long()[:, None] + offsets[None]
    idx = torch.remainder(idx, n) if periodic else idx.clamp(0, n - 1)
    return idx, frac


def sample_grid(values: torch.Tensor, slice_idx: torch.Tensor, iy: torch.Tensor,
                ix: torch.Tensor, method: str = "bicubic", periodic_x: bool = True,
                ) -> torch.Tensor:
    """Interpolate ``values [S, V, ny, nx]`` at fractional indices → ``[N, V]``.

    ``iy``/``ix`` are continuous row/column indices; rows clamp at the edges (replicate),
    columns wrap when ``periodic_x``. ``method`` is ``bilinear`` or ``bicubic`` (Keys, a=-0.5).
    """
    _, _, ny, nx = values.shape
    if method == "bilinear":
        offsets = torch.arange(0, 2, device=values.device)
    elif method == "bicubic":
        offsets = torch.arange(-1, 3, device=values.device)
    else:
        raise ValueError(f"unknown interpolation method {method!r}")
    iy = iy.clamp(0, ny - 1)
    if not periodic_x:
        ix = ix.clamp(0, nx - 1)
    yi, ty = _taps(iy, ny, False, offsets)
    xi, tx = _taps(ix, nx, periodic_x, offsets)
    if method == "bilinear":
        wy = torch.stack([1 - ty, ty], -1)
        wx = torch.stack([1 - tx, tx], -1)
    else:
        wy, wx = keys_weights(ty), keys_weights(tx)
    vals = values[slice_idx[:, None, None], :, yi[:, :, None], xi[:, None, :]]  # [N, k, k, V]
    return torch.einsum("nabv,na,nb->nv", vals, wy.to(vals.dtype), wx.to(vals.dtype))
