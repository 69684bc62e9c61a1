"""InceptionTime (Ismail Fawaz et al. 2020, "InceptionTime: Finding AlexNet for Time Series
Classification"), written from the paper's description.

One network is ``depth`` Inception modules over the time axis (bands as channels). A module
squeezes its input to ``bottleneck`` channels with a 1x1 convolution (skipped when the input
has a single channel, or with ``bottleneck=0``), runs one convolution of ``filters`` filters
per size in ``kernel_sizes`` over the squeezed series ("same" length), and in parallel a
max-pooling (3, stride 1) of its *input* followed by a 1x1 convolution of ``filters``
filters; the ``len(kernel_sizes) + 1`` branches are concatenated, batch-normalised and
passed through a ReLU. With ``residual=True`` a shortcut runs around every block of three
modules (a 1x1 convolution with batch norm when the channel counts differ, the identity
otherwise), added before a ReLU. The series is then averaged over time and a linear layer
gives the logits. Because of the global average pooling the network takes series of any
length; its receptive field is ``1 + depth * (max(kernel_sizes + [3]) - 1)`` steps.

The paper's classifier is an ensemble of five such networks with different random
initialisations whose probabilities are averaged: here that is the shared ``n_models``
option (default 5), trained with seeds ``seed``, ``seed + 1``, ...

Defaults, and what differs from the paper:

- kernel sizes 39/19/9 (the paper's 40/20/10 made odd, so that "same" padding is
  symmetric), 32 filters, bottleneck 32, depth 6, shortcut every three modules;
- Adam, lr 1e-3, batch 64 as in the paper; the paper trains 1500 epochs and halves the
  learning rate when the *training* loss plateaus (ReduceLROnPlateau). The shared trainer
  has no plateau schedule, and 1500 epochs x 5 networks is far beyond a CPU: the default is
  100 epochs with a smooth per-epoch decay (``lr_decay=0.98``, x0.13 after 100 epochs) on the
  whole training set (``val_fraction=0``, last epoch kept: the paper selects on the training
  loss, never on held-out data). Cost: one epoch over 5760 UCR Crop series (46 steps) takes
  about 30 s on one CPU core, so the defaults (5 networks x 100 epochs) are a job for a GPU;
  on a CPU lower ``n_models`` and ``epochs`` (and raise the decay accordingly). On a GPU a
  step of this small network costs the same whatever the batch (about 10 ms on an H200 at
  batch 64 or 256: kernel launches, not arithmetic; ``docs/performance.md``), so a larger
  ``batch_size`` there makes an epoch several times faster.
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

__all__ = ["InceptionModule", "InceptionTime", "InceptionTimeModule", "Shortcut"]

#: modules per residual block (the paper's shortcut spacing)
RESIDUAL_EVERY = 3


class InceptionModule(nn.Module):
    """One Inception module: ``[B, C_in, T]`` -> ``[B, filters * (len(kernel_sizes) + 1), T]``."""

    def __init__(self, in_channels: int, filters: int = 32,
                 kernel_sizes: Sequence[int] = (39, 19, 9), bottleneck: int = 32) -> None:
        super().__init__()
        if in_channels > 1 and bottleneck > 0:
            self.bottleneck: nn.Module = nn.Conv1d(in_channels, bottleneck, 1, bias=False)
            width = bottleneck
        else:
            self.bottleneck = nn.Identity()
            width = in_channels
        self.convs = nn.ModuleList(
            nn.Conv1d(width, filters, int(k), padding="same", bias=False) for k in kernel_sizes
        )
        self.pool_conv = nn.Sequential(
            nn.MaxPool1d(3, stride=1, padding=1),
            nn.Conv1d(in_channels, filters, 1, bias=False),
        )
        self.out_channels = filters * (len(self.convs) + 1)
        self.bn = nn.BatchNorm1d(self.out_channels)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        z = self.bottleneck(x)
        branches = [conv(z) for conv in self.convs]
        branches.append(self.pool_conv(x))
        return self.act(self.bn(torch.cat(branches, dim=1)))


class Shortcut(nn.Module):
    """The residual connection around a block of modules: ``relu(block(x) + proj(x))``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj: nn.Module = (
            nn.Identity() if in_channels == out_channels else
            nn.Sequential(nn.Conv1d(in_channels, out_channels, 1, bias=False),
                          nn.BatchNorm1d(out_channels))
        )
        self.act = nn.ReLU()

    def forward(self, block_input: Tensor, block_output: Tensor) -> Tensor:
        return self.act(block_output + self.proj(block_input))


class InceptionTimeModule(ClassifierModule):
    """One InceptionTime network: input ``[B, C, T]`` (any ``T``), output logits ``[B, K]``.

    ``shortcuts[j]`` closes the residual block ending after module ``3 j + 2`` (0-based);
    modules after the last complete block of three have no shortcut.
    """

    def __init__(
        self,
        n_bands: int,
        n_classes: int,
        n_times: int | None = None,
        filters: int = 32,
        kernel_sizes: Sequence[int] = (39, 19, 9),
        bottleneck: int = 32,
        depth: int = 6,
        residual: bool = True,
    ) -> None:
        super().__init__()
        del n_times  # any length: global average pooling (kept for the common signature)
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.depth = int(depth)
        self.residual = bool(residual)
        modules, channels = [], []
        c_in = n_bands
        for _ in range(self.depth):
            module = InceptionModule(c_in, filters, self.kernel_sizes, bottleneck)
            modules.append(module)
            channels.append((c_in, module.out_channels))
            c_in = module.out_channels
        self.inception = nn.ModuleList(modules)
        shortcuts = []
        if self.residual:
            for end in range(RESIDUAL_EVERY - 1, self.depth, RESIDUAL_EVERY):
                shortcuts.append(Shortcut(channels[end - RESIDUAL_EVERY + 1][0], channels[end][1]))
        self.shortcuts = nn.ModuleList(shortcuts)
        self.feature_dim = c_in
        self.head = nn.Linear(c_in, n_classes)

    @property
    def shortcut_after(self) -> list[int]:
        """0-based indices of the modules after which a shortcut is added."""
        return [RESIDUAL_EVERY * (j + 1) - 1 for j in range(len(self.shortcuts))]

    @property
    def receptive_field(self) -> int:
        """Time steps one output position of the last module sees."""
        return 1 + self.depth * (max(max(self.kernel_sizes), 3) - 1)

    def forward_maps(self, x: Tensor) -> Tensor:
        """The last module's output ``[B, feature_dim, T]``."""
        block_input = x
        for i, module in enumerate(self.inception):
            x = module(x)
            j = (i + 1) // RESIDUAL_EVERY - 1
            if (i + 1) % RESIDUAL_EVERY == 0 and j < len(self.shortcuts):
                x = self.shortcuts[j](block_input, x)
                block_input = x
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_maps(x).mean(dim=2)


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ModelError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class InceptionTime(TorchClassifier):
    """InceptionTime: an ensemble of Inception networks (Ismail Fawaz et al. 2020)."""

    input_layout: ClassVar[str] = "bands as channels [N, C, T]"

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        c = self.config
        _positive_int(c["depth"], "depth")
        _positive_int(c["filters"], "filters")
        _positive_int(c["bottleneck"], "bottleneck", minimum=0)
        sizes = c["kernel_sizes"]
        if not isinstance(sizes, list | tuple) or not sizes:
            raise ModelError(f"kernel_sizes must be a non-empty list of integers, got {sizes!r}")
        for k in sizes:
            _positive_int(k, "every kernel size")
        if not isinstance(c["residual"], bool):
            raise ModelError(f"residual must be true or false, got {c['residual']!r}")

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        # The paper's network and optimiser (Adam 1e-3, batch 64, five networks); 100 epochs
        # with a per-epoch decay instead of 1500 with a plateau schedule (module docstring).
        return {
            **cls.common_config(),
            "epochs": 100,
            "batch_size": 64,
            "lr": 1e-3,
            "lr_decay": 0.98,
            "weight_decay": 0.0,
            "val_fraction": 0.0,
            "patience": None,
            "augment": False,
            "n_models": 5,
            "depth": 6,
            "filters": 32,
            "kernel_sizes": [39, 19, 9],
            "bottleneck": 32,
            "residual": True,
        }

    def build_module(self, n_bands: int, n_times: int, n_classes: int) -> nn.Module:
        c = self.config
        return InceptionTimeModule(
            n_bands=n_bands,
            n_classes=n_classes,
            n_times=n_times,
            filters=int(c["filters"]),
            kernel_sizes=[int(k) for k in c["kernel_sizes"]],
            bottleneck=int(c["bottleneck"]),
            depth=int(c["depth"]),
            residual=bool(c["residual"]),
        )

    def to_input(self, x: np.ndarray) -> np.ndarray:
        return rearrange(x, "n t c -> n c t")
