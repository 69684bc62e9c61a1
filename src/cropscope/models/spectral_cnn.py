"""A 1-D CNN along the spectrum of a pixel (after Hu et al. 2015, "Deep convolutional neural
networks for hyperspectral image classification", modernised with batch norm).

The input is a pixel's spectrum: a :class:`~cropscope.data.TimeSeriesSet` with one time step
and one band per wavelength (``PatchSet.centre_set()`` for a scene); convolutions run along
the bands, time steps (if any) are input channels. ``n_conv`` blocks of
Conv1d(``kernel_size``) → BN → ReLU → MaxPool(2), the filters doubling after the first
block (up to ``4 * filters``), adaptive average pooling to ``pooled`` positions, a hidden
dense layer with dropout and a linear head.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from torch import Tensor, nn

from cropscope.models._torch import TorchClassifier
from cropscope.models.layers import AdaptiveAvgPool
from cropscope.models.modules import ClassifierModule
from cropscope.models.networks import create_network

__all__ = ["SpectralCNN", "SpectralCNNModule"]


class SpectralCNNModule(ClassifierModule):
    """Input ``[B, T, K]`` (time steps as channels, bands along the length) → logits."""

    def __init__(self, n_channels: int, n_classes: int, filters: int = 32, kernel_size: int = 7,
                 n_conv: int = 3, pooled: int = 8, hidden: int = 128,
                 dropout: float = 0.3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = n_channels
        for i in range(n_conv):
            c_out = filters * min(2**i, 4)
            layers += [nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False),
                       nn.BatchNorm1d(c_out), nn.ReLU(inplace=True),
                       nn.MaxPool1d(2, ceil_mode=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers, AdaptiveAvgPool(pooled), nn.Flatten(),
                                      nn.Linear(c_in * pooled, hidden), nn.BatchNorm1d(hidden),
                                      nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.feature_dim = hidden
        self.head = nn.Linear(hidden, n_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)


class SpectralCNN(TorchClassifier):
    """1-D spectral CNN on pixel spectra (bands along the convolution axis)."""

    #: what the scene evaluation feeds this model (centre-pixel spectra)
    input_kind: ClassVar[str] = "pixels"
    input_layout: ClassVar[str] = "spectrum [N, T, K] (time steps as channels)"

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {
            **cls.common_config(),
            "epochs": 60,
            "batch_size": 64,
            "lr": 2e-3,
            "weight_decay": 1e-4,
            "lr_decay": 0.97,
            "filters": 32,
            "kernel_size": 7,
            "n_conv": 3,
            "pooled": 8,
            "hidden": 128,
            "dropout": 0.3,
        }

    def build_module(self, n_bands: int, n_times: int, n_classes: int) -> nn.Module:
        c = self.config
        return create_network(
            "spectral-cnn", n_channels=n_times, n_classes=n_classes, filters=int(c["filters"]),
            kernel_size=int(c["kernel_size"]), n_conv=int(c["n_conv"]), pooled=int(c["pooled"]),
            hidden=int(c["hidden"]), dropout=float(c["dropout"]))

    def to_input(self, x: np.ndarray) -> np.ndarray:
        return x  # [N, T, C]: time steps are the channels, bands the length
