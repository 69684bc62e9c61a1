"""Spectral-spatial decoupled Vision Transformer: the EnMAP stream of H2Crop (h2crop.md §2.4).

Two parallel pre-norm ViT encoders over one hyperspectral patch ``[B, K, H, W]``:

- **spatial**: a ``p x p`` patch embedding (Conv2d ``K -> spatial_dim``, kernel = stride = p)
  gives ``(H/p)(W/p)`` tokens (raster order); fixed sinusoidal position encoding; blocks;
  the token grid → Conv3x3 → PixelShuffle back to ``H*upscale x W*upscale``.
- **spectral**: each band is a token: the band's ``g x g`` average-pooled map
  (``spectral_grid = g``) flattened to ``g*g`` values (linearly projected to
  ``spectral_dim`` unless that is ``None`` or already ``g*g``); sinusoidal encoding over the
  ``K`` band positions; blocks; Linear(token → ``H*W``) back to ``[B, K, H, W]`` → Conv3x3
  → PixelShuffle.

Blocks are timm-style pre-norm: ``x + MHSA(LN(x))``, ``x + MLP(LN(x))`` with LayerNorm
eps 1e-6, qkv bias, MLP ratio 4 and GELU; no class token, no layer scale, no final norm.
Branch outputs are concatenated and fused by Conv3x3 → ReLU → Conv3x3 (the reference's
"ori_feature"), optionally followed by the "HyperEmbedNeck" (Conv3x3 → BN → ReLU → Conv3x3).

:class:`SpectralSpatialTransformer` is the stream (feature map ``[B, out_dim, H*u, W*u]``)
for fusion models; :class:`SpectralTransformerNet` puts a centre-pixel (or mean) pooling and a
linear head on it; :class:`SpectralTransformer` is the registered classifier
``spectral-transformer`` on hyperspectral patches. ``REFERENCE_STREAM`` holds the H2Crop
sizes: ``SpectralSpatialTransformer(218, 64, **REFERENCE_STREAM)`` has the parameter counts
of h2crop.md §2.8 (spatial ViT 50.7 M, spectral ViT 8.1 M, fusion + neck 0.74 M).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from cropscope.errors import ModelError
from cropscope.models._patch import PatchClassifier
from cropscope.models.layers import AdaptiveAvgPool
from cropscope.models.modules import ClassifierModule
from cropscope.models.networks import create_network

__all__ = [
    "PRESETS",
    "REFERENCE_STREAM",
    "SpectralSpatialTransformer",
    "SpectralTransformer",
    "SpectralTransformerNet",
    "TransformerEncoder",
    "count_parameters",
    "sinusoid_table",
]

#: the H2Crop EnMAP stream (h2crop.md §2.4), for a 64 x 64 input of 218 bands
REFERENCE_STREAM: dict[str, Any] = {
    "spatial_dim": 768, "spatial_depth": 6, "spatial_heads": 12, "spatial_patch": 1,
    "spectral_grid": 16, "spectral_dim": None, "spectral_depth": 6, "spectral_heads": 8,
    "out_dim": 128, "upscale": 3, "neck": True, "mlp_ratio": 4.0, "dropout": 0.0,
}

#: classifier size presets (``preset`` option); explicit options override them
PRESETS: dict[str, dict[str, Any]] = {
    "small": {
        "patch_size": 5, "spatial_dim": 64, "spatial_depth": 2, "spatial_heads": 4,
        "spatial_patch": 1, "spectral_grid": 3, "spectral_dim": 64, "spectral_depth": 2,
        "spectral_heads": 4, "out_dim": 64, "upscale": 1, "neck": False, "mlp_ratio": 4.0,
        "dropout": 0.0,
    },
    # the reference widths, depths and heads on 33 x 33 patches (CPU-impractical to train)
    "reference": {"patch_size": 33, **REFERENCE_STREAM},
}
_ARCH_KEYS = tuple(PRESETS["small"])


def sinusoid_table(n_positions: int, dim: int) -> Tensor:
    """Fixed 1-D sinusoidal encoding ``[n_positions, dim]`` (VideoMAE style): angle
    ``pos / 10000^(2*floor(j/2)/dim)``, sine on even ``j``, cosine on odd ``j``."""
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


class Attention(nn.Module):
    """Multi-head self-attention with qkv bias (scaled dot-product attention)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ModelError(f"embedding dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + MHSA(LN(x))``, then ``x + MLP(LN(x))`` (``dropout``
    after the MLP layers only; 0 in the reference)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerEncoder(nn.Module):
    """Fixed sinusoidal position encoding over ``n_tokens`` + ``depth`` pre-norm blocks
    (no final norm)."""

    pos: Tensor

    def __init__(self, n_tokens: int, dim: int, depth: int, heads: int,
                 mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("pos", sinusoid_table(n_tokens, dim)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.pos
        for block in self.blocks:
            x = block(x)
        return x


def _conv3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1)


class SpectralSpatialTransformer(nn.Module):
    """The stream: ``[B, n_bands, image_size, image_size]`` → ``[B, out_dim, H*u, W*u]``.

    Options as in the module doc; ``image_size`` fixes the number of spatial tokens and the
    spectral back-projection, and must be divisible by ``spatial_patch``.
    """

    def __init__(
        self,
        n_bands: int,
        image_size: int,
        *,
        spatial_dim: int = 64,
        spatial_depth: int = 2,
        spatial_heads: int = 4,
        spatial_patch: int = 1,
        spectral_grid: int = 3,
        spectral_dim: int | None = 64,
        spectral_depth: int = 2,
        spectral_heads: int = 4,
        out_dim: int = 64,
        upscale: int = 1,
        neck: bool = False,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if image_size % spatial_patch:
            raise ModelError(f"image size {image_size} is not divisible by the spatial patch "
                             f"{spatial_patch}")
        self.n_bands, self.image_size, self.upscale = n_bands, image_size, upscale
        self.out_dim = out_dim
        grid = image_size // spatial_patch
        # spatial branch
        self.spatial_embed = nn.Conv2d(n_bands, spatial_dim, spatial_patch, stride=spatial_patch)
        self.spatial_encoder = TransformerEncoder(grid * grid, spatial_dim, spatial_depth,
                                                  spatial_heads, mlp_ratio, dropout)
        s = spatial_patch * upscale
        self.spatial_out = nn.Sequential(_conv3(spatial_dim, out_dim * s * s), nn.PixelShuffle(s))
        # spectral branch
        self.spectral_pool = AdaptiveAvgPool(spectral_grid, ndim=2)  # exports for any grid
        token = spectral_grid * spectral_grid
        dim = token if spectral_dim is None else int(spectral_dim)
        self.spectral_embed = nn.Identity() if dim == token else nn.Linear(token, dim)
        self.spectral_encoder = TransformerEncoder(n_bands, dim, spectral_depth, spectral_heads,
                                                   mlp_ratio, dropout)
        self.spectral_unembed = nn.Linear(dim, image_size * image_size)
        self.spectral_out = nn.Sequential(_conv3(n_bands, out_dim * upscale * upscale),
                                          nn.PixelShuffle(upscale))
        # fusion ("ori_feature") and optional neck
        self.fuse = nn.Sequential(_conv3(2 * out_dim, out_dim), nn.ReLU(inplace=True),
                                  _conv3(out_dim, out_dim))
        self.neck = (
            nn.Sequential(_conv3(out_dim, out_dim), nn.BatchNorm2d(out_dim), nn.ReLU(inplace=True),
                          _conv3(out_dim, out_dim))
            if neck else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        _, k, h, w = x.shape
        if k != self.n_bands or h != self.image_size or w != self.image_size:
            raise ModelError(
                f"expected input [B, {self.n_bands}, {self.image_size}, {self.image_size}], "
                f"got {list(x.shape)}"
            )
        tokens = rearrange(self.spatial_embed(x), "b d gh gw -> b (gh gw) d")
        gh = h // self.spatial_embed.stride[0]
        tokens = self.spatial_encoder(tokens)
        spatial = self.spatial_out(rearrange(tokens, "b (gh gw) d -> b d gh gw", gh=gh))
        bands = self.spectral_embed(rearrange(self.spectral_pool(x), "b k gh gw -> b k (gh gw)"))
        bands = self.spectral_unembed(self.spectral_encoder(bands))
        spectral = self.spectral_out(rearrange(bands, "b k (h w) -> b k h w", h=h))
        return self.neck(self.fuse(torch.cat([spatial, spectral], dim=1)))


class SpectralTransformerNet(ClassifierModule):
    """Stream + pooling of the centre pixel's cells (``pool="centre"``) or of the whole map
    (``"mean"``) + linear head: ``[B, K, h, w]`` → logits ``[B, n_classes]``."""

    def __init__(self, n_bands: int, patch_size: int, n_classes: int, pool: str = "centre",
                 **arch: Any) -> None:
        super().__init__()
        if pool not in {"centre", "mean"}:
            raise ModelError(f"pool must be 'centre' or 'mean', got {pool!r}")
        self.stream = SpectralSpatialTransformer(n_bands, patch_size, **arch)
        self.pool = pool
        self.feature_dim = self.stream.out_dim
        self.head = nn.Linear(self.feature_dim, n_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        fmap = self.stream(x)
        if self.pool == "mean":
            return fmap.mean(dim=(2, 3))
        u, c = self.stream.upscale, x.shape[-1] // 2
        return fmap[:, :, c * u : (c + 1) * u, c * u : (c + 1) * u].mean(dim=(2, 3))


class SpectralTransformer(PatchClassifier):
    """Spectral-spatial Transformer (H2Crop EnMAP stream) on hyperspectral patches."""

    input_layout: ClassVar[str] = "hyperspectral patches [N, K, h, w] (centre-pixel label)"

    def __init__(self, **config: Any) -> None:
        preset = config.get("preset", "small")
        if preset not in PRESETS:
            raise ModelError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        super().__init__(**{**PRESETS[preset], **config})

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {
            **cls.common_config(),
            "preset": "small",
            **PRESETS["small"],
            "pool": "centre",
            "epochs": 40,
            "batch_size": 64,
            "lr": 1e-3,
            "weight_decay": 1e-4,
            "val_fraction": 0.0,
            "augment": True,
        }

    def architecture(self) -> dict[str, Any]:
        """The stream options from the configuration."""
        arch = {k: self.config[k] for k in _ARCH_KEYS if k != "patch_size"}
        arch["neck"] = bool(arch["neck"])
        return arch

    def build_network(self, n_bands: int, patch_size: int, n_classes: int) -> nn.Module:
        return create_network("spectral-transformer", n_bands=n_bands, patch_size=patch_size,
                              n_classes=n_classes, pool=self.config["pool"],
                              **self.architecture())


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)

