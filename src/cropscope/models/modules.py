"""The network contract of the deep classifiers: :class:`ClassifierModule` (a feature
extractor and a head, so that heads can be swapped, e.g. for the cascade heads of
:mod:`cropscope.models.cascade`) and :class:`EnsembleModule` (members trained with different
seeds, averaged)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["ClassifierModule", "EnsembleModule"]


class ClassifierModule(nn.Module):
    """A deep classifier network split in two: a shared feature extractor and a linear head.

    Every deep model in the registry builds one of these, so that heads can be swapped
    (e.g. for the hierarchical cascade heads of :mod:`cropscope.models.hierarchical`).
    Subclasses set ``feature_dim`` and ``head`` and implement :meth:`forward_features`.
    """

    feature_dim: int
    head: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Shared features ``[B, feature_dim]`` of the input batch."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


class EnsembleModule(nn.Module):
    """Members trained with different seeds; returns the log of their mean class
    probabilities (so a softmax of the output is the averaged probability)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> Any:
        outs = [m(x, *extra) for m in self.members]
        if isinstance(outs[0], list):  # hierarchical members: average level by level
            return [self._mean([o[k] for o in outs]) for k in range(len(outs[0]))]
        return self._mean(outs)

    def _mean(self, logits: list[torch.Tensor]) -> torch.Tensor:
        logp = torch.stack([torch.log_softmax(z, dim=1) for z in logits])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))
