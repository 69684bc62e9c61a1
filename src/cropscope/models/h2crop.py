"""H2Crop: a dual-stream network for hierarchical crop segmentation (h2crop.md §2).

``H2CropNet`` maps ``{"S2": [B, T, C, H, W], "EnMAP": [B, K, h, w], "priors": [B, L, H, W]}``
to one logits map ``[B, C_k, H, W]`` per taxonomy level (coarse to fine). It is assembled
from the project's existing parts, not a parallel copy of them:

- **Sentinel-2 stream**: :class:`~cropscope.models.agrifm.AgriFM` without a head (the temporal
  3D Swin with the time-synchronised merges, then its decoder, which halves its width at every
  up-step as H2Crop's: 1024 → 512 → 256 → 128 in the reference), resized to ``H x W``;
- **EnMAP stream** (configurations ``+H``): the spectral-spatial decoupled ViT
  :class:`~cropscope.models.spectral_transformer.SpectralSpatialTransformer` with its
  pixel-shuffle upsampling to the S2 grid (×3: 1 EnMAP pixel = 3 x 3 S2 pixels) and its neck;
- **fusion**: late, by channel concatenation at full resolution (as the reference; no
  cross-attention);
- **heads**: :class:`~cropscope.models.cascade.CascadeHeads` in its convolutional form: level
  ``k`` reads the fused features, level ``k - 1``'s raw logits and, in the ``+P``
  configurations, the one-hot of last year's class at level ``k``.

Configurations (:data:`H2CROP_CONFIGS`): ``S2``, ``S2+P``, ``S2+H``, ``S2+H+P``.
Presets (:data:`H2CROP_PRESETS`):

- ``"reference"``: the paper's sizes (Swin-B widths 128..1024, depths 2-2-18-2, stem
  (2, 4, 4), time flattened into channels as the reference, a 768-wide 6-block spatial ViT and
  a 256-wide 6-block spectral ViT on a 64 x 64 x 218 EnMAP patch): at T = 6, 115.0 M
  parameters for ``S2`` and 175.5 M for ``S2+H`` (h2crop.md §2.8: ~115 M and ~175.5 M; the
  decoder's 26.8 M and the heads' 0.50 / 1.54 / 2.27 M match exactly); 121.8 M / 182.3 M at
  T = 12, whose wider skips widen the decoder. ``temporal="flatten"`` ties a model to its
  number of months, exactly as the reference.
- ``"tiny"``: small widths that train on a CPU; its temporal tokens are pooled with learned
  attention, so one model runs on any number of months.

The merges follow the reference's rule: the last merge keeps time for 6 and 8 months and
halves it for 10 and 12 (h2crop.md §2.2). Inputs a configuration does not use (e.g. priors
for ``S2``) are ignored, so one dataset serves every configuration.

Parcel level: :meth:`H2CropNet.predict_parcels` pools each level's class probabilities over
the pixels of every parcel and assigns the parcel's class to all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cropscope.errors import ModelError
from cropscope.models.agrifm import AgriFM
from cropscope.models.cascade import CascadeHeads
from cropscope.models.spectral_transformer import REFERENCE_STREAM, SpectralSpatialTransformer

__all__ = [
    "H2CROP_CONFIGS",
    "H2CROP_LEVEL_SIZES",
    "H2CROP_PRESETS",
    "H2CropNet",
    "h2crop_parameter_counts",
    "one_hot_priors",
    "pool_by_parcel",
    "temporal_merges",
]

#: classes per level, background 0 included (h2crop.md §1.3)
H2CROP_LEVEL_SIZES: tuple[int, ...] = (7, 37, 83, 102)

#: configuration name → (uses EnMAP, uses last year's priors)
H2CROP_CONFIGS: dict[str, tuple[bool, bool]] = {
    "S2": (False, False),
    "S2+P": (False, True),
    "S2+H": (True, False),
    "S2+H+P": (True, True),
}

#: model sizes; keyword arguments of :class:`H2CropNet` override them
H2CROP_PRESETS: dict[str, dict[str, Any]] = {
    "reference": {
        "backbone": {"preset": "base"},
        "patch_size": (2, 4, 4),
        "window_size": (8, 7, 7),
        "drop_path_rate": 0.2,
        "decoder_dim": 1024,
        "temporal": "flatten",
        "hyper": dict(REFERENCE_STREAM),
    },
    "tiny": {
        "backbone": {"preset": None, "embed_dim": 32, "depths": (1, 1, 2, 1),
                     "num_heads": (1, 2, 4, 8)},
        "patch_size": (2, 4, 4),
        "window_size": (8, 7, 7),
        "drop_path_rate": 0.0,
        "decoder_dim": 128,
        "temporal": "attention",
        "hyper": {"spatial_dim": 64, "spatial_depth": 1, "spatial_heads": 4,
                  "spatial_patch": 2, "spectral_grid": 4, "spectral_dim": 32,
                  "spectral_depth": 1, "spectral_heads": 4, "out_dim": 32, "upscale": 3,
                  "neck": True, "mlp_ratio": 2.0, "dropout": 0.0},
    },
}


def temporal_merges(months: int, n_merges: int = 3) -> tuple[bool, ...]:
    """Which merges halve time: all but the last for up to 8 months, all from 9 on
    (the reference's (2,2,2),(2,2,2),(1,2,2) vs (2,2,2)×3)."""
    if months < 1:
        raise ModelError(f"months must be positive, got {months}")
    if months <= 8:
        return tuple([True] * (n_merges - 1) + [False])
    return tuple([True] * n_merges)


def one_hot_priors(priors: Tensor, sizes: Sequence[int]) -> Tensor:
    """``[B, L, H, W]`` integer classes → ``[B, sum(sizes), H, W]`` float one-hots, level
    after level; codes outside ``0..K_k-1`` (e.g. -1 or 255 for unknown) give all zeros."""
    if priors.ndim != 4 or priors.shape[1] != len(sizes):
        raise ModelError(f"priors must be [B, {len(sizes)}, H, W], got {list(priors.shape)}")
    parts = []
    for k, n in enumerate(sizes):
        p = priors[:, k].long()
        valid = (p >= 0) & (p < n)
        hot = F.one_hot(torch.where(valid, p, torch.zeros_like(p)), n)
        hot = hot * valid[..., None]
        parts.append(hot.permute(0, 3, 1, 2))
    return torch.cat(parts, dim=1).float()


def _parcel_groups(parcels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(keep [B, H, W], keys [N, 2] (sample, id), inverse [n_kept])`` of a parcel raster."""
    b, h, w = parcels.shape
    ids = parcels.long()
    keep = ids >= 0
    sample = torch.arange(b, device=ids.device)[:, None, None].expand(b, h, w)
    pairs = torch.stack([sample[keep], ids[keep]], dim=1)
    if not len(pairs):
        return keep, pairs.new_zeros((0, 2)), pairs.new_zeros((0,))
    keys, inverse = torch.unique(pairs, dim=0, return_inverse=True)
    return keep, keys, inverse


def _pool(proba: Tensor, keep: Tensor, keys: Tensor, inverse: Tensor) -> Tensor:
    k = proba.shape[1]
    sums = proba.new_zeros((len(keys), k)).index_add_(0, inverse, proba.permute(0, 2, 3, 1)[keep])
    counts = torch.bincount(inverse, minlength=len(keys)).to(proba.dtype)
    return sums / counts[:, None]


def pool_by_parcel(proba: Tensor, parcels: Tensor) -> tuple[Tensor, Tensor]:
    """Mean class probability of each parcel: ``proba [B, K, H, W]``, ``parcels [B, H, W]``
    integer ids (< 0: no parcel; ids are per sample). Returns ``(keys [N, 2], mean [N, K])``
    where ``keys`` holds ``(sample, parcel id)`` rows."""
    b, k, h, w = proba.shape
    if parcels.shape != (b, h, w):
        raise ModelError(f"parcels must be [B, H, W] = {[b, h, w]}, got {list(parcels.shape)}")
    keep, keys, inverse = _parcel_groups(parcels)
    if not len(keys):
        return keys, proba.new_zeros((0, k))
    return keys, _pool(proba, keep, keys, inverse)


class H2CropNet(nn.Module):
    """The H2Crop dual-stream network (see the module doc).

    ``levels``: classes per level with background (default the H2Crop taxonomy's 7, 37, 83,
    102); ``config``: one of :data:`H2CROP_CONFIGS` (or set ``hyper_bands``/``priors``
    directly: ``hyper_bands=None`` means no EnMAP stream); ``months``: the number of monthly
    composites (fixes the merges, and the decoder widths with ``temporal="flatten"``);
    ``hyper_size``: the EnMAP patch side (64 in the reference; the S2 grid is ``upscale``
    times finer). ``backbone``: keywords for the Swin body (``preset``, ``embed_dim``,
    ``depths``, ``num_heads``); ``hyper``: keywords for the EnMAP stream.
    """

    def __init__(
        self,
        levels: Sequence[int] = H2CROP_LEVEL_SIZES,
        config: str | None = "S2+H+P",
        *,
        preset: str = "tiny",
        months: int = 6,
        s2_bands: int = 10,
        hyper_bands: int | None = 218,
        hyper_size: int = 64,
        priors: bool | None = None,
        compat: str = "cropscope",
        feature_size: int | Sequence[int] | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        if preset not in H2CROP_PRESETS:
            raise ModelError(f"unknown H2Crop preset {preset!r}; choose from "
                             f"{sorted(H2CROP_PRESETS)}")
        use_hyper, use_priors = True, False
        if config is not None:
            if config not in H2CROP_CONFIGS:
                raise ModelError(f"unknown H2Crop configuration {config!r}; choose from "
                                 f"{list(H2CROP_CONFIGS)}")
            use_hyper, use_priors = H2CROP_CONFIGS[config]
        if priors is not None:
            use_priors = bool(priors)
        if hyper_bands is None:
            use_hyper = False
        self.levels = [int(k) for k in levels]
        if not self.levels or min(self.levels) < 2:
            raise ModelError(f"levels must be class counts >= 2 (background included), got "
                             f"{list(levels)}")
        opts = {**H2CROP_PRESETS[preset], **overrides}
        unknown = sorted(set(opts) - set(H2CROP_PRESETS["tiny"]) - {"use_checkpoint"})
        if unknown:
            raise ModelError(f"unknown H2CropNet option(s) {unknown}")
        self.preset, self.months = preset, int(months)
        self.use_hyper, self.use_priors = use_hyper, use_priors
        self.config = ("S2" + ("+H" if use_hyper else "") + ("+P" if use_priors else ""))
        backbone = dict(opts["backbone"])
        body_preset = backbone.pop("preset", None)
        n_merges = len(backbone.get("depths") or (2, 2, 18, 2)) - 1
        temporal = str(opts["temporal"])
        self.s2 = AgriFM(
            {"S2": int(s2_bands)}, None, body_preset, patch_size=tuple(opts["patch_size"]),
            window_size=tuple(opts["window_size"]), drop_path_rate=float(opts["drop_path_rate"]),
            use_checkpoint=bool(opts.get("use_checkpoint", False)),
            decoder_dim=int(opts["decoder_dim"]), decoder_halve=True, temporal=temporal,
            num_frames=self.months if temporal == "flatten" else None,
            temporal_merge=temporal_merges(self.months, n_merges), compat=compat,
            feature_size=feature_size, **backbone)
        #: bands of each image input the network reads (as :class:`AgriFM`'s)
        self.in_chans = dict(self.s2.in_chans)
        feature_dim = self.s2.feature_dim
        self.hyper: SpectralSpatialTransformer | None = None
        self.hyper_bands = int(hyper_bands) if use_hyper and hyper_bands else None
        self.hyper_size = int(hyper_size)
        if self.hyper_bands:
            self.hyper = SpectralSpatialTransformer(self.hyper_bands, self.hyper_size,
                                                    **dict(opts["hyper"]))
            feature_dim += self.hyper.out_dim
            self.in_chans["EnMAP"] = self.hyper_bands
        self.feature_dim = feature_dim
        self.heads = CascadeHeads(feature_dim, self.levels,
                                  self.levels if use_priors else None, spatial=True)

    def _s2(self, inputs: Mapping[str, Tensor]) -> Tensor:
        if "S2" not in inputs:
            raise ModelError(f"H2CropNet needs inputs['S2'] [B, T, C, H, W]; got "
                             f"{sorted(inputs)}")
        x = inputs["S2"]
        if x.ndim != 5:
            raise ModelError(f"S2 must be [B, T, C, H, W], got {list(x.shape)}")
        return x

    def forward_features(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """Fused features ``[B, feature_dim, H, W]`` on the S2 grid."""
        s2 = self._s2(inputs)
        feats = [self.s2({"S2": s2})]
        size = (int(s2.shape[-2]), int(s2.shape[-1]))
        if self.hyper is not None:
            if "EnMAP" not in inputs:
                raise ModelError(f"the {self.config} configuration needs inputs['EnMAP'] "
                                 f"[B, {self.hyper_bands}, {self.hyper_size}, "
                                 f"{self.hyper_size}]")
            h = self.hyper(inputs["EnMAP"])
            if tuple(h.shape[-2:]) != size:
                h = F.interpolate(h, size=size, mode="bilinear", align_corners=False)
            feats.append(h)
        return torch.cat(feats, dim=1) if len(feats) > 1 else feats[0]

    def forward(self, inputs: Mapping[str, Tensor]) -> list[Tensor]:
        """One logits map ``[B, C_k, H, W]`` per level, coarse to fine."""
        feats = self.forward_features(inputs)
        prior = None
        if self.use_priors:
            if "priors" not in inputs:
                raise ModelError(f"the {self.config} configuration needs inputs['priors'] "
                                 f"[B, {len(self.levels)}, H, W] (last year's classes)")
            prior = one_hot_priors(inputs["priors"], self.levels).to(feats.dtype)
            if tuple(prior.shape[-2:]) != tuple(feats.shape[-2:]):
                raise ModelError(f"priors grid {list(prior.shape[-2:])} differs from the S2 "
                                 f"grid {list(feats.shape[-2:])}")
        return self.heads(feats, prior)

    @torch.no_grad()
    def predict_parcels(self, inputs: Mapping[str, Tensor], parcels: Tensor
                        ) -> tuple[list[Tensor], list[Tensor]]:
        """Parcel-level prediction: per level, the class of each parcel's mean probability,
        painted on its pixels (``-1`` outside parcels), plus the per-parcel probabilities
        ``[N, C_k]`` (rows as :func:`pool_by_parcel`'s keys)."""
        maps, tables = [], []
        outputs = self(inputs)
        b, _, h, w = outputs[0].shape
        if parcels.shape != (b, h, w):
            raise ModelError(f"parcels must be [B, H, W] = {[b, h, w]}, got "
                             f"{list(parcels.shape)}")
        keep, keys, inverse = _parcel_groups(parcels)
        for logits in outputs:
            proba = logits.float().softmax(1)
            mean = _pool(proba, keep, keys, inverse) if len(keys) else proba.new_zeros(
                (0, proba.shape[1]))
            out = torch.full(parcels.shape, -1, dtype=torch.long, device=parcels.device)
            if len(keys):
                out[keep] = mean.argmax(1)[inverse]
            maps.append(out)
            tables.append(mean)
        return maps, tables


def h2crop_parameter_counts(preset: str = "reference", months: int = 6,
                            configs: Sequence[str] = tuple(H2CROP_CONFIGS)) -> dict[str, int]:
    """Parameters of :class:`H2CropNet` per configuration (networks built on the ``meta``
    device: no weights are allocated)."""
    counts: dict[str, int] = {}
    for config in configs:
        with torch.device("meta"):
            model = H2CropNet(config=config, preset=preset, months=months)
        counts[config] = sum(p.numel() for p in model.parameters())
    return counts
