"""CropNet (Tong & Wang, "Invariant Features for Global Crop Type Classification").

A 2-D CNN over the single-channel image ``bands x time``: four ConvBlocks of 128 channels
(two 3x3 conv-BN-ReLU each, then channel dropout), the first with stride 2, global average
pooling and a linear head. Trained as in the paper: Adam (lr 1e-4), batch 256, 50 epochs,
class-balanced cross-entropy, best validation macro-F1 epoch kept, and the training subset
augmented with temporal shift/scale/warp (2 copies per sample); see cropnet.md §3-5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from einops import rearrange
from torch import Tensor, nn

from cropscope.errors import ModelError
from cropscope.models._torch import TorchClassifier
from cropscope.models.modules import ClassifierModule
from cropscope.models.networks import create_network

__all__ = ["ConvBlock", "CropNet", "CropNetModule"]


class ConvBlock(nn.Sequential):
    """(3x3 conv, no bias -> BN -> ReLU) x 2 -> Dropout2d; the first conv may have stride 2."""

    def __init__(self, c_in: int, c_out: int, downsample: bool, p_drop: float) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, stride=2 if downsample else 1, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Dropout2d(p_drop),
        )


class CropNetModule(ClassifierModule):
    """The network: input ``[B, 1, C, T]`` (bands x time image), output logits ``[B, K]``.

    One ConvBlock per entry of ``dropout`` (the paper: 0.2, 0.3, 0.3, 0.4); only the first
    downsamples.
    """

    def __init__(
        self, n_classes: int, channels: int = 128, dropout: Sequence[float] = (0.2, 0.3, 0.3, 0.4)
    ) -> None:
        super().__init__()
        blocks = [
            ConvBlock(1 if i == 0 else channels, channels, downsample=i == 0, p_drop=float(p))
            for i, p in enumerate(dropout)
        ]
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels
        self.head = nn.Linear(channels, n_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convs (fan_out) and head (fan_in), zero bias, BN at (1, 0)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x)).flatten(1)


class CropNet(TorchClassifier):
    """CropNet: 2-D CNN over the bands x time image, with temporal augmentation."""

    input_layout: ClassVar[str] = "bands x time image [N, 1, C, T]"

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        dropout = self.config["dropout"]
        if not isinstance(dropout, list | tuple) or not dropout:
            raise ModelError(f"dropout must be a non-empty list (one per block), got {dropout!r}")

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {
            **cls.common_config(),
            "epochs": 50,
            "batch_size": 256,
            "lr": 1e-4,
            "weight_decay": 0.0,
            "augment": True,
            "channels": 128,
            "dropout": [0.2, 0.3, 0.3, 0.4],
        }

    def build_module(self, n_bands: int, n_times: int, n_classes: int) -> nn.Module:
        return create_network("cropnet", n_classes=n_classes,
                              channels=int(self.config["channels"]),
                              dropout=self.config["dropout"])

    def to_input(self, x: np.ndarray) -> np.ndarray:
        return rearrange(x, "n t c -> n 1 c t")
