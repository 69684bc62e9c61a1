"""A lightweight temporal attention encoder in the style of L-TAE (Garnot & Landrieu 2020,
"Lightweight Temporal Self-Attention for Classifying Satellite Image Time Series").

Each time step is embedded (linear + layer norm) and given a sinusoidal position code; the
channels are split into ``n_head`` groups, and each head pools the series over time with a
learnt *master query* (one query vector per head, no per-step queries: the attention is
O(T) rather than O(T²)). The pooled groups are concatenated and passed through an MLP; a
linear head classifies. Written from the paper's description; a compact re-implementation,
not the authors' code.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from cropscope.errors import ModelError
from cropscope.models._torch import TorchClassifier
from cropscope.models.modules import ClassifierModule
from cropscope.models.networks import create_network

__all__ = ["TemporalAttention", "TemporalAttentionModule", "sinusoidal_encoding"]


def sinusoidal_encoding(n_positions: int, dim: int, period: float = 1000.0) -> Tensor:
    """Transformer position code ``[n_positions, dim]`` (sin on even, cos on odd channels)."""
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(period) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    out = torch.zeros(n_positions, dim)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return out


class TemporalAttentionModule(ClassifierModule):
    """Input ``[B, T, C]``, output logits ``[B, K]``; ``forward_features`` gives ``[B, mlp]``."""

    position: Tensor

    def __init__(
        self,
        n_bands: int,
        n_times: int,
        n_classes: int,
        d_model: int = 128,
        n_head: int = 16,
        d_k: int = 8,
        mlp: int = 128,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if d_model % n_head or d_model % 2:
            raise ModelError(f"d_model ({d_model}) must be even and divisible by n_head ({n_head})")
        self.n_head, self.d_k = n_head, d_k
        self.embed = nn.Sequential(nn.Linear(n_bands, d_model), nn.LayerNorm(d_model))
        self.register_buffer("position", sinusoidal_encoding(n_times, d_model), persistent=False)
        self.key = nn.Linear(d_model, n_head * d_k)
        self.query = nn.Parameter(torch.randn(n_head, d_k) * d_k**-0.5)
        self.attn_drop = nn.Dropout(dropout)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp), nn.BatchNorm1d(mlp), nn.ReLU(inplace=True), nn.Dropout(dropout)
        )
        self.feature_dim = mlp
        self.head = nn.Linear(mlp, n_classes)

    def attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Pooled groups ``[B, d_model]`` and attention weights ``[B, n_head, T]``."""
        b, t, _ = x.shape
        h = self.embed(x) + self.position[:t]
        keys = self.key(h).view(b, t, self.n_head, self.d_k)
        scores = torch.einsum("bthd,hd->bht", keys, self.query) / math.sqrt(self.d_k)
        weights = torch.softmax(scores, dim=-1)
        values = h.view(b, t, self.n_head, -1)
        pooled = torch.einsum("bht,bthe->bhe", self.attn_drop(weights), values)
        return pooled.reshape(b, -1), weights

    def forward_features(self, x: Tensor) -> Tensor:
        return self.mlp(self.attention(x)[0])


class TemporalAttention(TorchClassifier):
    """Lightweight temporal attention encoder (L-TAE style): master-query attention pooling."""

    input_layout: ClassVar[str] = "time steps x bands [N, T, C]"

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {
            **cls.common_config(),
            "epochs": 60,
            "batch_size": 128,
            "lr": 2e-3,
            "lr_decay": 0.95,
            "weight_decay": 1e-4,
            "val_fraction": 0.1,
            "augment": True,
            "d_model": 128,
            "n_head": 16,
            "d_k": 8,
            "mlp": 128,
            "dropout": 0.2,
        }

    def build_module(self, n_bands: int, n_times: int, n_classes: int) -> nn.Module:
        cfg = self.config
        return create_network(
            "ltae", n_bands=n_bands, n_times=n_times, n_classes=n_classes,
            d_model=int(cfg["d_model"]), n_head=int(cfg["n_head"]),
            d_k=int(cfg["d_k"]), mlp=int(cfg["mlp"]), dropout=float(cfg["dropout"]),
        )

    def to_input(self, x: np.ndarray) -> np.ndarray:
        return x
