"""TempCNN (Pelletier, Webb & Petitjean 2019, "Temporal Convolutional Neural Network for the
Classification of Satellite Image Time Series").

Three 1-D convolutions over time (bands as channels), each followed by batch normalisation,
ReLU and dropout; then a dense layer with the same, and a linear head.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from einops import rearrange
from torch import Tensor, nn

from cropscope.models._torch import TorchClassifier
from cropscope.models.modules import ClassifierModule
from cropscope.models.networks import create_network

__all__ = ["TempCNN", "TempCNNModule"]


class TempCNNModule(ClassifierModule):
    """The network: input ``[B, C, T]``, output logits ``[B, K]``."""

    def __init__(
        self,
        n_bands: int,
        n_times: int,
        n_classes: int,
        filters: int = 64,
        kernel_size: int = 5,
        n_conv: int = 3,
        hidden: int = 256,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_conv):
            layers += [
                nn.Conv1d(n_bands if i == 0 else filters, filters, kernel_size, padding="same"),
                nn.BatchNorm1d(filters),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
            ]
        self.conv = nn.Sequential(*layers)
        self.dense = nn.Sequential(
            nn.Flatten(),
            nn.Linear(filters * n_times, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.feature_dim = hidden
        self.head = nn.Linear(hidden, n_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.dense(self.conv(x))


class TempCNN(TorchClassifier):
    """TempCNN: 1-D temporal convolutions over bands as channels."""

    input_layout: ClassVar[str] = "bands as channels [N, C, T]"

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        # Tuned on the sits Mato Grosso set (5-fold CV, see docs/models.md): a decaying
        # learning rate and CropNet temporal augmentation; the best epoch is chosen on the
        # macro-F1 of a 10 % validation split (set val_fraction=0 to train on every sample).
        return {
            **cls.common_config(),
            "epochs": 60,
            "batch_size": 128,
            "lr": 2e-3,
            "lr_decay": 0.95,
            "weight_decay": 1e-6,
            "val_fraction": 0.1,
            "patience": None,
            "augment": True,
            "filters": 64,
            "kernel_size": 5,
            "n_conv": 3,
            "hidden": 256,
            "dropout": 0.2,
        }

    def build_module(self, n_bands: int, n_times: int, n_classes: int) -> nn.Module:
        cfg = self.config
        return create_network(
            "tempcnn",
            n_bands=n_bands,
            n_times=n_times,
            n_classes=n_classes,
            filters=int(cfg["filters"]),
            kernel_size=int(cfg["kernel_size"]),
            n_conv=int(cfg["n_conv"]),
            hidden=int(cfg["hidden"]),
            dropout=float(cfg["dropout"]),
        )

    def to_input(self, x: np.ndarray) -> np.ndarray:
        return rearrange(x, "n t c -> n c t")
