"""LSTM-FCN (Karim, Majumdar, Darabi & Chen 2018, "LSTM Fully Convolutional Networks for
Time Series Classification"); sits offers it as ``sits_lstm_fcn``.

Two branches read the same series ``[B, C, T]`` (bands as channels, time along the length):

- a fully convolutional branch: three 1-D convolutions over time (128, 256 and 128 filters,
  kernels 8, 5 and 3, "same" padding), each followed by batch normalisation and ReLU, then
  the mean over time: ``[B, 128]``, whatever the number of steps;
- a recurrent branch: an LSTM of a few cells (8) and a strong dropout (0.8). With
  ``shuffle=True`` (the paper's "dimension shuffle", its default) the LSTM reads the bands
  as its steps and each band's whole series as one input vector of ``T`` values, so it
  needs the series length and runs ``C`` recurrent steps (one for a single-band series)
  instead of ``T``; with ``shuffle=False`` it reads the ``T`` steps of ``C`` bands and any
  length. Its last hidden state is ``[B, hidden]``.

The two are concatenated (``feature_dim`` = last filter count + LSTM cells) before the
linear head. The branches err differently from TempCNN's flattened dense layer: global
pooling makes the convolutions insensitive to where in the season a pattern falls, and the
LSTM sees the whole series at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from cropscope.errors import ModelError
from cropscope.models._torch import TorchClassifier
from cropscope.models.modules import ClassifierModule
from cropscope.models.networks import create_network
from cropscope.models.tempcnn import TempCNN

__all__ = ["LSTMFCN", "LSTMFCNModule"]

#: training options taken from TempCNN's defaults
_TRAINING = ("epochs", "batch_size", "lr_decay", "weight_decay", "val_fraction", "patience",
             "augment")


class LSTMFCNModule(ClassifierModule):
    """The network: input ``[B, C, T]``, output logits ``[B, K]``."""

    def __init__(
        self,
        n_bands: int,
        n_times: int,
        n_classes: int,
        filters: Sequence[int] = (128, 256, 128),
        kernels: Sequence[int] = (8, 5, 3),
        hidden: int = 8,
        lstm_dropout: float = 0.8,
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        filters, kernels = [int(f) for f in filters], [int(k) for k in kernels]
        if not filters or len(filters) != len(kernels):
            raise ModelError(f"filters and kernels need one entry per convolution, got "
                             f"{filters} and {kernels}")  # fmt: skip
        if min(filters + kernels) < 1 or hidden < 1:
            raise ModelError("filters, kernels and hidden must be positive")
        layers: list[nn.Module] = []
        width = n_bands
        for f, k in zip(filters, kernels, strict=True):
            # "same" length; for an even kernel the extra zero goes at the end, as torch's
            # padding="same" puts it (written out: torch warns and copies for even kernels)
            layers += [nn.ConstantPad1d(((k - 1) // 2, k // 2), 0.0), nn.Conv1d(width, f, k),
                       nn.BatchNorm1d(f), nn.ReLU(inplace=True)]  # fmt: skip
            width = f
        self.conv = nn.Sequential(*layers)
        self.shuffle = bool(shuffle)
        self.n_times = int(n_times)
        self.lstm = nn.LSTM(n_times if shuffle else n_bands, hidden, batch_first=True)
        self.lstm_drop = nn.Dropout(lstm_dropout)
        self.feature_dim = width + hidden
        self.head = nn.Linear(self.feature_dim, n_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        if self.shuffle and x.shape[-1] != self.n_times:
            raise ModelError(f"LSTM-FCN with shuffle=True reads series of {self.n_times} "
                             f"steps, got {x.shape[-1]}")  # fmt: skip
        pooled = self.conv(x).mean(dim=-1)  # [B, filters[-1]]
        steps = x if self.shuffle else x.transpose(1, 2)  # [B, C, T] or [B, T, C]
        _, (last, _) = self.lstm(steps)
        return torch.cat([pooled, self.lstm_drop(last[-1])], dim=1)


class LSTMFCN(TorchClassifier):
    """LSTM-FCN: a fully convolutional branch and an LSTM branch, concatenated."""

    input_layout: ClassVar[str] = "bands as channels [N, C, T]"

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        # TempCNN's training (decaying rate, 10 % validation, augmentation) at the paper's
        # Adam rate of 1e-3; the paper trains 2,000 epochs, the decay reaches its plateau in
        # far fewer on crop series (docs/models.md, "LSTM-FCN")
        tempcnn = TempCNN.default_config()
        return {
            **cls.common_config(),
            **{key: tempcnn[key] for key in _TRAINING},
            "lr": 1e-3,
            "filters": [128, 256, 128],
            "kernels": [8, 5, 3],
            "hidden": 8,
            "lstm_dropout": 0.8,
            "shuffle": True,
        }

    def build_module(self, n_bands: int, n_times: int, n_classes: int) -> nn.Module:
        cfg = self.config
        return create_network(
            "lstm-fcn", n_bands=n_bands, n_times=n_times, n_classes=n_classes,
            filters=[int(f) for f in cfg["filters"]], kernels=[int(k) for k in cfg["kernels"]],
            hidden=int(cfg["hidden"]), lstm_dropout=float(cfg["lstm_dropout"]),
            shuffle=bool(cfg["shuffle"]),
        )  # fmt: skip

    def to_input(self, x: np.ndarray) -> np.ndarray:
        return rearrange(x, "n t c -> n c t")
