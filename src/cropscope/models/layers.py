"""Small layers shared by the networks, written so that every network exports to ONNX.

:class:`AdaptiveAvgPool` is :class:`torch.nn.AdaptiveAvgPool1d` / ``2d`` for any sizes: ONNX
has no adaptive pooling whose output size does not divide the input size (e.g. a 5 x 5 patch
pooled to 3 x 3, or 5 spectral positions to 4), so such cases are computed as products with
constant averaging matrices over torch's own bins (start ``floor(i n / m)``, end
``ceil((i + 1) n / m)``); divisible sizes use the native operator.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec

import torch
import torch.nn.functional as F
from torch import Tensor, nn

P = ParamSpec("P")

__all__ = ["AdaptiveAvgPool", "adaptive_pool_matrix", "cached_tensor"]


def cached_tensor(func: Callable[P, Tensor]) -> Callable[P, Tensor]:
    """``functools.lru_cache`` for functions that build constant tensors (index tables,
    masks, pooling matrices), the tensors always made as ordinary tensors: a first call under
    ``torch.inference_mode()`` would otherwise cache an *inference* tensor, and every later
    training step that uses it fails ("Inference tensors cannot be saved for backward")."""

    @functools.wraps(func)
    def build(*args: P.args, **kwargs: P.kwargs) -> Tensor:
        with torch.inference_mode(False):
            return func(*args, **kwargs)

    return functools.lru_cache(maxsize=64)(build)  # type: ignore[return-value]


@cached_tensor
def adaptive_pool_matrix(n_in: int, n_out: int) -> Tensor:
    """``[n_out, n_in]`` matrix averaging each of adaptive pooling's bins (do not modify)."""
    matrix = torch.zeros(n_out, n_in, device="cpu")
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class AdaptiveAvgPool(nn.Module):
    """Adaptive average pooling of the last axis (``ndim=1``, input ``[..., L]``) or the last
    two (``ndim=2``, input ``[..., H, W]``) to ``output_size``; exports to ONNX."""

    def __init__(self, output_size: int | tuple[int, int], ndim: int = 1) -> None:
        super().__init__()
        if ndim not in (1, 2):
            raise ValueError(f"ndim must be 1 or 2, got {ndim}")
        sizes = (output_size,) * ndim if isinstance(output_size, int) else tuple(output_size)
        if len(sizes) != ndim:
            raise ValueError(f"output_size needs {ndim} values, got {output_size!r}")
        self.ndim = ndim
        self.output_size: tuple[int, ...] = tuple(int(s) for s in sizes)

    def _matrix(self, n_in: int, n_out: int, x: Tensor) -> Tensor:
        return adaptive_pool_matrix(n_in, n_out).to(device=x.device, dtype=x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        ins = tuple(int(n) for n in x.shape[-self.ndim:])
        if all(n % m == 0 for n, m in zip(ins, self.output_size, strict=True)):
            if self.ndim == 1:
                return F.adaptive_avg_pool1d(x, self.output_size)
            return F.adaptive_avg_pool2d(x, (self.output_size[0], self.output_size[1]))
        if self.ndim == 1:
            return x @ self._matrix(ins[0], self.output_size[0], x).T
        rows = self._matrix(ins[0], self.output_size[0], x)
        cols = self._matrix(ins[1], self.output_size[1], x)
        return rows @ x @ cols.T

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
