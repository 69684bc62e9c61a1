"""H2Crop's cascade of hierarchical heads, for any deep network of the registry.

Level ``k`` reads the shared features, the raw logits of level ``k - 1`` (not detached, so
fine-level losses also train the coarse heads) and, optionally, a prior for level ``k``
(e.g. last year's crop as a one-hot vector). Each head is ``Linear(in -> in // 2) -> ReLU
-> Linear(in // 2 -> K_k)``, the per-vector form of the reference's ``Conv3x3 -> ReLU ->
Conv1x1`` (h2crop.md §2.5); ``spatial=True`` builds that conv form for feature maps
``[B, D, H, W]`` (the same code path: inputs are concatenated along dimension 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cropscope.models.modules import ClassifierModule

__all__ = ["CascadeHeads", "HierarchicalNet", "default_level_weights"]


def default_level_weights(n_levels: int) -> list[float]:
    """Loss weight per level when none are configured: 1 for the finest level, 0.1 for each
    coarser one. Equal weights (H2Crop's sum) cost 7.5 points of fine-level macro-F1 on the
    Mato Grosso CV with CropNet; coarse levels still get trained, and the fine head still
    reads their logits (docs/taxonomy.md)."""
    return [0.1] * (n_levels - 1) + [1.0]


class CascadeHeads(nn.Module):
    """Per-level heads over features ``[B, D]`` (``spatial=True``: maps ``[B, D, H, W]``);
    returns a list of logits ``[B, K_k]`` (``[B, K_k, H, W]``).

    ``prior_sizes[k]`` is the width of level ``k``'s prior input (0: none); priors arrive
    concatenated level after level as one ``[B, sum(prior_sizes)]`` tensor (``[B, sum, H, W]``).
    """

    def __init__(self, feature_dim: int, sizes: Sequence[int],
                 prior_sizes: Sequence[int] | None = None, hidden: bool = True,
                 spatial: bool = False) -> None:
        super().__init__()
        self.sizes = [int(k) for k in sizes]
        self.prior_sizes = [0] * len(self.sizes) if prior_sizes is None else [
            int(p) for p in prior_sizes
        ]
        if len(self.prior_sizes) != len(self.sizes):
            raise ValueError("one prior size per level")
        self.spatial = bool(spatial)

        def first(n_in: int, n_out: int) -> nn.Module:
            return nn.Conv2d(n_in, n_out, 3, padding=1) if spatial else nn.Linear(n_in, n_out)

        def last(n_in: int, n_out: int) -> nn.Module:
            return nn.Conv2d(n_in, n_out, 1) if spatial else nn.Linear(n_in, n_out)

        heads = []
        for k, n_out in enumerate(self.sizes):
            n_in = feature_dim + (self.sizes[k - 1] if k else 0) + self.prior_sizes[k]
            if hidden:
                width = max(n_in // 2, 1)
                heads.append(nn.Sequential(first(n_in, width), nn.ReLU(inplace=True),
                                           last(width, n_out)))
            else:
                heads.append(nn.Sequential(last(n_in, n_out)))
        self.heads = nn.ModuleList(heads)

    def forward(self, features: Tensor, priors: Tensor | None = None) -> list[Tensor]:
        if sum(self.prior_sizes) and priors is None:
            raise ValueError("this cascade expects priors")
        offsets = [0]
        for p in self.prior_sizes:
            offsets.append(offsets[-1] + p)
        out: list[Tensor] = []
        for k, head in enumerate(self.heads):
            parts = [features]
            if k:
                parts.append(out[-1])
            if self.prior_sizes[k]:
                assert priors is not None
                parts.append(priors[:, offsets[k] : offsets[k + 1]])
            out.append(head(torch.cat(parts, dim=1) if len(parts) > 1 else features))
        return out


class HierarchicalNet(nn.Module):
    """A registry network's feature extractor with :class:`CascadeHeads` in place of its
    linear head (any other network is refused with a :class:`TypeError`).
    ``forward(x, priors=None)`` returns one logits tensor per level."""

    def __init__(self, backbone: nn.Module, sizes: Sequence[int],
                 prior_sizes: Sequence[int] | None = None, hidden: bool = True) -> None:
        super().__init__()
        if not isinstance(backbone, ClassifierModule):
            raise TypeError(
                f"{type(backbone).__name__} is not a ClassifierModule (features + head); "
                "hierarchical heads cannot attach to it"
            )
        backbone.head = nn.Identity()  # the flat head is replaced by the cascade
        self.backbone = backbone
        self.cascade = CascadeHeads(backbone.feature_dim, sizes, prior_sizes, hidden)

    def forward(self, x: Tensor, priors: Tensor | None = None) -> list[Tensor]:
        return self.cascade(self.backbone.forward_features(x), priors)
