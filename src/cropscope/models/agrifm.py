"""AgriFM: per-source 3D Swin encoders, a multi-source fusion decoder and segmentation heads
(agrifm.md §2–3).

``AgriFM(sources, num_classes)`` maps ``{source: [B, T_s, C_s, H_s, W_s]}`` to per-pixel logits
``[B, K, H, W]`` on the grid of the *first* source (the reference grid). Sources may differ in
``T``, ``H`` and ``W`` (e.g. MODIS on a coarser grid); any ``T >= 1`` and any ``H``/``W`` work.

Layout (names matter for :mod:`cropscope.models.agrifm_checkpoint`):

- ``stems[src]``: one :class:`~cropscope.models.swin3d.PatchEmbed3D` per source
  (Conv3d ``C_s -> embed_dim``, kernel = stride = that source's patch size, no norm).
- ``backbones[src]`` (default, one body per source, as the reference's fine-tuning
  ``MultiModalEncoder`` does) or ``backbone`` (``shared_backbone=True``, one body for all
  sources, as in pretraining): :class:`~cropscope.models.swin3d.Swin3D` without its stem.
- ``temporal[src][level]``: reduction of each level's temporal tokens (see below).
- ``decoder``: :class:`MultiFusionNeck`; ``head``: :class:`CropFCNHead` (one level) or
  :class:`HierarchicalFCNHead` (``num_classes`` a sequence, coarse to fine).

Levels fed to the decoder follow the reference's ``features_list``: the stem output, the maps
after merges 1..n-2 (stage ``k`` content at stage ``k+1`` resolution) as skips, and the final
normed stage output as the deepest map.

**Time handling (a deliberate change).** The reference flattens each level to ``C_i·D_i``
channels, so the decoder widths depend on ``T`` (agrifm.md §2.8) and a model built for one
``T`` cannot run on another. Here ``temporal="attention"`` (default) pools the ``D_i`` tokens
of every level with a learned softmax weighting (one ``Linear(C_i -> 1)`` score per token,
initialised to zero so training starts from the temporal mean), giving widths ``C_i`` that do
not depend on ``T``: the same weights serve any ``T >= 1`` at inference. ``"mean"`` averages
time (the reference's ``feature_fusion='mean'``); ``"flatten"`` is the reference layout and
needs ``num_frames`` (int or per-source mapping); it raises a clear error on another ``T``.

**Grids.** Every source's maps are resized bilinearly to the reference source's grid of the
same level before concatenation (the seed to its deepest grid, step ``k`` to its skip grid),
so the up-steps are exact even when sizes are not powers of two; the output block's result is
resized to the reference input ``H x W``, where the head runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from cropscope.errors import ModelError
from cropscope.models.cascade import CascadeHeads
from cropscope.models.swin3d import PatchEmbed3D, Swin3D, inference_precision

__all__ = [
    "AGRIFM_S2_NORMALISATION",
    "AGRIFM_SOURCES",
    "AgriFM",
    "CropFCNHead",
    "HierarchicalFCNHead",
    "MultiFusionNeck",
    "TemporalPool",
]

Size3 = tuple[int, int, int]

#: known sources: bands, default stem patch (t, h, w), name in the released checkpoint, GSD (m)
AGRIFM_SOURCES: dict[str, dict[str, Any]] = {
    "S2": {"in_chans": 10, "patch_size": (4, 2, 2), "checkpoint_name": "S2", "gsd": 10},
    "HLS": {"in_chans": 6, "patch_size": (4, 2, 2), "checkpoint_name": "HLSL30", "gsd": 30},
    "L30": {"in_chans": 6, "patch_size": (4, 2, 2), "checkpoint_name": "HLSL30", "gsd": 30},
    "HLSL30": {"in_chans": 6, "patch_size": (4, 2, 2), "checkpoint_name": "HLSL30", "gsd": 30},
    # coarse grid (a 2.56 km chip is ~10 px at 250 m): keep every pixel as a token
    "MODIS": {"in_chans": 7, "patch_size": (4, 1, 1), "checkpoint_name": "Modis", "gsd": 250},
}

#: per-band z-score of the official AgriFM fine-tuning config for S2 (raw DN, reflectance
#: x 1e4), in the order of the official inputs. The official band order is undocumented:
#: the means fit B2, B3, B4, B8, B5, B6, B7, B8A, B11, B12 better than B2..B8, B8A, B11, B12
#: (agrifm.md §5); check the order of your data before using them.
AGRIFM_S2_NORMALISATION: dict[str, tuple[float, ...]] = {
    "mean": (4179.0, 4066.0, 3957.0, 5207.0, 4327.0, 4873.0, 5049.0, 5111.0, 3057.0, 2491.0),
    "std": (4042.0, 3691.0, 3629.0, 2974.0, 3570.0, 3086.0, 2938.0, 2806.0, 1808.0, 1694.0),
}

_TEMPORAL_MODES = ("attention", "mean", "flatten")


def _conv_block(n_in: int, dim: int, out: int | None = None) -> nn.Sequential:
    """conv3x3(n_in → dim), BN, ReLU, conv3x3(dim → out) (the reference neck's block;
    ``out`` defaults to ``dim``)."""
    return nn.Sequential(
        nn.Conv2d(n_in, dim, 3, padding=1), nn.BatchNorm2d(dim), nn.ReLU(inplace=True),
        nn.Conv2d(dim, dim if out is None else out, 3, padding=1),
    )


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class TemporalPool(nn.Module):
    """``[B, C, D, H, W]`` → ``[B, C', H, W]``: learned softmax pooling over ``D``
    (``"attention"``), the mean (``"mean"``) or a c-major flattening to ``C·D``
    (``"flatten"``, which checks ``D == frames``)."""

    def __init__(self, dim: int, mode: str = "attention", frames: int | None = None) -> None:
        super().__init__()
        if mode not in _TEMPORAL_MODES:
            raise ModelError(f"temporal must be one of {_TEMPORAL_MODES}, got {mode!r}")
        if mode == "flatten" and frames is None:
            raise ModelError("temporal='flatten' needs the number of temporal tokens")
        self.mode, self.frames = mode, frames
        self.score = nn.Linear(dim, 1) if mode == "attention" else None
        if self.score is not None:
            nn.init.zeros_(self.score.weight)
            nn.init.zeros_(self.score.bias)
        self.out_channels = dim * frames if mode == "flatten" and frames else dim

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "flatten":
            if x.shape[2] != self.frames:
                raise ModelError(
                    f"temporal='flatten' fixes the decoder widths for {self.frames} temporal "
                    f"tokens at this level but got {x.shape[2]}: use the T the model was built "
                    "for, or temporal='attention'/'mean' (any T)")
            return rearrange(x, "b c d h w -> b (c d) h w")
        if self.score is None:
            return x.mean(dim=2)
        weights = torch.softmax(self.score(rearrange(x, "b c d h w -> b d h w c")), dim=1)
        return torch.einsum("bcdhw,bdhw->bchw", x, weights[..., 0])


class MultiFusionNeck(nn.Module):
    """The "versatile decoder" (agrifm.md §3.4): seed from the sources' deepest maps, one
    up-step per skip level (resize, concat the sources' resized skips, conv block), an output
    block, and a resize to the output size.

    ``deep_channels[s]``: width of source ``s``'s deepest map; ``skip_channels[k][s]``: width
    of source ``s``'s skip used by up-step ``k`` (coarse to fine). ``halve=True`` halves the
    width at every up-step (H2Crop's ``embed_downsample``: 1024 → 512 → 256 → 128); the
    output width is :attr:`out_dim`.
    """

    def __init__(self, deep_channels: Sequence[int], skip_channels: Sequence[Sequence[int]],
                 dim: int, halve: bool = False) -> None:
        super().__init__()
        self.dim = int(dim)
        n_deep = sum(deep_channels)
        # one source already at the decoder width: identity seed, as in the reference
        self.seed: nn.Module = (nn.Identity() if len(deep_channels) == 1 and n_deep == dim
                                else _conv_block(n_deep, dim))
        widths = [self.dim]
        for _ in skip_channels:
            widths.append(max(widths[-1] // 2, 1) if halve else self.dim)
        self.steps = nn.ModuleList(
            _conv_block(sum(c) + widths[k], widths[k], widths[k + 1])
            for k, c in enumerate(skip_channels))
        self.out_dim = widths[-1]
        self.out = _conv_block(self.out_dim, self.out_dim)

    def forward(self, deep: Sequence[Tensor], skips: Sequence[Sequence[Tensor]],
                sizes: Sequence[tuple[int, int]], out_size: tuple[int, int]) -> Tensor:
        """``deep``: one map per source; ``skips[k]``: one map per source; ``sizes``: the
        seed grid then one grid per up-step; returns ``[B, dim, *out_size]``."""
        x = torch.cat([_resize(d, sizes[0]) for d in deep], dim=1)
        x = self.seed(x)
        for k, step in enumerate(self.steps):
            size = sizes[k + 1]
            parts = [_resize(x, size)] + [_resize(s, size) for s in skips[k]]
            x = step(torch.cat(parts, dim=1))
        return _resize(self.out(x), out_size)


class CropFCNHead(nn.Module):
    """conv3x3(E → E/2), ReLU, conv1x1(E/2 → K) (agrifm.md §3.5)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        hidden = max(dim // 2, 1)
        self.conv = nn.Conv2d(dim, hidden, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.cls = nn.Conv2d(hidden, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.cls(self.act(self.conv(x)))


class HierarchicalFCNHead(nn.Module):
    """conv3x3(E → E/2) + ReLU, then per pixel the H2Crop cascade
    (:class:`~cropscope.models.cascade.CascadeHeads`): level ``k`` reads the features and
    level ``k - 1``'s logits. Returns one ``[B, K_k, H, W]`` per level, coarse to fine."""

    def __init__(self, dim: int, sizes: Sequence[int]) -> None:
        super().__init__()
        hidden = max(dim // 2, 1)
        self.conv = nn.Conv2d(dim, hidden, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.cascade = CascadeHeads(hidden, sizes)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self.act(self.conv(x))
        b, c, h, w = feats.shape
        flat = feats.permute(0, 2, 3, 1).reshape(-1, c)
        return [y.reshape(b, h, w, -1).permute(0, 3, 1, 2) for y in self.cascade(flat)]


class AgriFM(nn.Module):
    """The AgriFM segmentation network (see the module doc).

    ``sources`` maps each source name to its band count (the first is the reference grid);
    ``num_classes`` an int (one head), a sequence (hierarchy levels, coarse to fine) or
    ``None`` (no head: :meth:`forward` returns the decoder features ``[B, feature_dim, H, W]``,
    for models that put their own heads on top, e.g. H2Crop).
    ``patch_size`` is one ``(t, h, w)`` for all sources or a per-source mapping (sources not
    in it get their :data:`AGRIFM_SOURCES` default, else (4, 2, 2)); use ``{"S2": (4, 4, 4)}``
    to load the released weights. ``decoder_dim`` defaults to the last stage's width (1024
    for ``base``, the reference's ``embed_dim``); ``decoder_halve`` halves it at every
    up-step (H2Crop's decoder). ``seed_sources`` (default: all) are the sources whose deepest
    maps seed the decoder and ``fusion_sources`` (one list per up-step, coarse to fine;
    default: all sources at every step) those whose skips each step reads: the official
    neck's ``in_feature_key`` and ``in_fusion_key_list`` (e.g. MODIS only at the coarsest
    step). ``compat="official"`` with ``feature_size`` computes as the official code (see
    docs/agrifm.md). Other keywords: ``temporal``
    (``"attention" | "mean" | "flatten"``), ``num_frames`` (for ``"flatten"``), and anything
    :class:`~cropscope.models.swin3d.Swin3D` accepts (``temporal_merge``, ``embed_dim``, ...).
    """

    def __init__(
        self,
        sources: Mapping[str, int],
        num_classes: int | Sequence[int] | None,
        preset: str = "tiny",
        *,
        patch_size: Size3 | Mapping[str, Size3] = (4, 2, 2),
        shared_backbone: bool = False,
        window_size: Size3 = (8, 7, 7),
        drop_path_rate: float = 0.1,
        use_checkpoint: bool = False,
        decoder_dim: int | None = None,
        decoder_halve: bool = False,
        temporal: str = "attention",
        num_frames: int | Mapping[str, int] | None = None,
        compat: str = "cropscope",
        feature_size: int | Sequence[int] | None = None,
        seed_sources: Sequence[str] | None = None,
        fusion_sources: Sequence[Sequence[str]] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__()
        if compat not in ("cropscope", "official"):
            raise ModelError(f"compat must be 'cropscope' or 'official', got {compat!r}")
        self.compat = compat
        self.feature_size: tuple[int, int] | None = None
        if feature_size is not None:
            fs = (feature_size, feature_size) if isinstance(feature_size, int) \
                else tuple(int(v) for v in feature_size)
            if len(fs) != 2 or min(fs) < 1:
                raise ModelError(f"feature_size must be one or two positive ints, got "
                                 f"{feature_size!r}")
            self.feature_size = (int(fs[0]), int(fs[1]))
        if not sources:
            raise ModelError("AgriFM needs at least one source")
        if temporal not in _TEMPORAL_MODES:
            raise ModelError(f"temporal must be one of {_TEMPORAL_MODES}, got {temporal!r}")
        self.source_names: list[str] = [str(s) for s in sources]
        self.in_chans: dict[str, int] = {}
        for name, chans in sources.items():
            if chans is None:
                if name not in AGRIFM_SOURCES:
                    raise ModelError(f"unknown source {name!r}: give its band count")
                chans = AGRIFM_SOURCES[name]["in_chans"]
            if int(chans) < 1:
                raise ModelError(f"source {name!r} needs a positive band count, got {chans}")
            self.in_chans[name] = int(chans)
        self.patch_sizes: dict[str, Size3] = {
            name: self._patch_for(name, patch_size) for name in self.source_names}
        if num_classes is None:
            self.levels: list[int] = []
        elif isinstance(num_classes, int):
            self.levels = [int(num_classes)]
        else:
            self.levels = [int(k) for k in num_classes]
        if num_classes is not None and (not self.levels or min(self.levels) < 1):
            raise ModelError(f"num_classes must be positive, got {num_classes!r}")
        self.hierarchical = not isinstance(num_classes, int)
        self.shared_backbone = bool(shared_backbone)
        self.temporal_mode = temporal

        if kw.get("doy_embedding"):
            raise ModelError("AgriFM has no day-of-year input; doy_embedding is not supported")
        patch_norm = bool(kw.pop("patch_norm", False))

        def body() -> Swin3D:
            return Swin3D(1, preset, window_size=window_size, drop_path_rate=drop_path_rate,
                          use_checkpoint=use_checkpoint, stem=False, **kw)

        self.backbone: Swin3D | None = None
        self.backbones: nn.ModuleDict | None = None
        if self.shared_backbone:
            self.backbone = ref = body()
        else:
            bodies = {name: body() for name in self.source_names}
            self.backbones = nn.ModuleDict(bodies)
            ref = bodies[self.source_names[0]]
        self.dims: tuple[int, ...] = ref.dims
        self.temporal_merge: tuple[bool, ...] = ref.temporal_merge
        n_stages = len(self.dims)
        if n_stages < 2:
            raise ModelError("AgriFM needs a backbone with at least two stages")
        self.stems = nn.ModuleDict({
            name: PatchEmbed3D(self.in_chans[name], self.dims[0], self.patch_sizes[name],
                               norm=patch_norm)
            for name in self.source_names})

        # levels fed to the decoder: stem, post-merge 1..n-2 (skips), deepest (normed last)
        level_dims = [self.dims[0], *self.dims[1:n_stages - 1], self.dims[-1]]
        self.temporal = nn.ModuleDict()
        widths: dict[str, list[int]] = {}
        for name in self.source_names:
            frames = self._level_frames(name, num_frames) if temporal == "flatten" else None
            pools = [TemporalPool(c, temporal, None if frames is None else frames[i])
                     for i, c in enumerate(level_dims)]
            self.temporal[name] = nn.ModuleList(pools)
            widths[name] = [p.out_channels for p in pools]
        self.seed_sources, self.fusion_sources = self._decoder_sources(
            seed_sources, fusion_sources, n_stages - 1)
        deep = [widths[name][-1] for name in self.seed_sources]
        skips = [[widths[name][k] for name in self.fusion_sources[i]]
                 for i, k in enumerate(reversed(range(n_stages - 1)))]
        self.decoder_dim = int(self.dims[-1] if decoder_dim is None else decoder_dim)
        self.decoder = MultiFusionNeck(deep, skips, self.decoder_dim, halve=decoder_halve)
        self.feature_dim = self.decoder.out_dim
        self.head: nn.Module
        if num_classes is None:
            self.head = nn.Identity()
        elif self.hierarchical:
            self.head = HierarchicalFCNHead(self.feature_dim, self.levels)
        else:
            self.head = CropFCNHead(self.feature_dim, self.levels[0])
        if compat == "official":
            from cropscope.models.swin3d import set_official_compat

            set_official_compat(self)

    @staticmethod
    def _patch_for(name: str, patch_size: Size3 | Mapping[str, Size3]) -> Size3:
        if isinstance(patch_size, Mapping):
            if name in patch_size:
                value = patch_size[name]
            else:
                value = AGRIFM_SOURCES.get(name, {}).get("patch_size", (4, 2, 2))
        else:
            value = patch_size
        vals = tuple(int(v) for v in value)
        if len(vals) != 3 or min(vals) < 1:
            raise ModelError(f"patch size of {name!r} must be three positive ints, got {value!r}")
        return vals[0], vals[1], vals[2]

    def _level_frames(self, name: str, num_frames: int | Mapping[str, int] | None
                      ) -> list[int]:
        """Temporal tokens of each decoder level for ``temporal='flatten'``."""
        t = num_frames.get(name) if isinstance(num_frames, Mapping) else num_frames
        if t is None:
            raise ModelError(f"temporal='flatten' needs num_frames for source {name!r}")
        d = -(-int(t) // self.patch_sizes[name][0])
        frames = [d]
        for merge in self.temporal_merge:
            d = -(-d // 2) if merge else d
            frames.append(d)
        # skips use post-merge maps 1..n-2; the deepest is after the last merge
        return [*frames[:len(self.dims) - 1], frames[-1]]

    def body(self, name: str) -> Swin3D:
        """The backbone body that encodes source ``name``."""
        if self.backbone is not None:
            return self.backbone
        assert self.backbones is not None
        return cast(Swin3D, self.backbones[name])  # one Swin3D per source

    def encode(self, name: str, x: Tensor) -> list[Tensor]:
        """One source ``[B, T, C, H, W]`` → the decoder levels ``[B, C_l, H_l, W_l]``: the
        stem output, the post-merge maps (skips), the normed deepest map."""
        if x.ndim == 4:
            x = x[:, None]
        if x.ndim != 5 or x.shape[2] != self.in_chans[name]:
            raise ModelError(f"source {name!r} expects [B, T, {self.in_chans[name]}, H, W], "
                             f"got {list(x.shape)}")
        body = self.body(name)
        tokens = self.stems[name](rearrange(x, "b t c h w -> b c t h w"))
        levels = [tokens]
        h = rearrange(tokens, "b c d h w -> b d h w c")
        n = len(body.stages)
        for i, stage in enumerate(body.stages):
            h = stage(h)
            if i == n - 1:
                levels.append(rearrange(body.norm(h), "b d h w c -> b c d h w"))
            else:
                h = body.merges[i](h)
                if i < n - 2:
                    levels.append(rearrange(h, "b d h w c -> b c d h w"))
        pools = cast(nn.ModuleList, self.temporal[name])  # built as a ModuleList per source
        return [pool(level) for pool, level in zip(pools, levels, strict=True)]

    def _as_dict(self, inputs: Mapping[str, Tensor] | Tensor) -> dict[str, Tensor]:
        if isinstance(inputs, Tensor):
            if len(self.source_names) != 1:
                raise ModelError(f"this AgriFM has sources {self.source_names}: pass a dict")
            return {self.source_names[0]: inputs}
        missing = [s for s in self.source_names if s not in inputs]
        if missing:
            raise ModelError(f"missing input sources {missing}; this AgriFM expects "
                             f"{self.source_names}")
        extra = [k for k, v in inputs.items() if k not in self.in_chans and isinstance(v, Tensor)]
        if extra:
            raise ModelError(f"unknown input sources {extra}; this AgriFM expects "
                             f"{self.source_names}")
        return {s: inputs[s] for s in self.source_names}

    def forward_features(self, inputs: Mapping[str, Tensor] | Tensor) -> Tensor:
        """Fused decoder features ``[B, feature_dim, H, W]`` on the reference grid."""
        data = self._as_dict(inputs)
        encoded = [self.encode(name, x) for name, x in data.items()]
        ref = encoded[0]
        ref_input = data[self.source_names[0]]
        out_size = (int(ref_input.shape[-2]), int(ref_input.shape[-1]))
        n_skip = len(ref) - 1
        # seed grid = the reference source's deepest grid, then its skip grids coarse to fine
        sizes = [tuple(ref[-1].shape[-2:])] + [tuple(ref[k].shape[-2:])
                                              for k in reversed(range(n_skip))]
        if self.compat == "official":  # the reference neck: feature_size, doubled per step
            fh, fw = self.feature_size or sizes[0]
            sizes = [(fh * 2**k, fw * 2**k) for k in range(n_skip + 1)]
        by_name = dict(zip(self.source_names, encoded, strict=True))
        deep = [by_name[s][-1] for s in self.seed_sources]
        skips = [[by_name[s][k] for s in self.fusion_sources[i]]
                 for i, k in enumerate(reversed(range(n_skip)))]
        return self.decoder(deep, skips, sizes, out_size)

    def _decoder_sources(self, seed: Sequence[str] | None,
                         fusion: Sequence[Sequence[str]] | None, n_steps: int
                         ) -> tuple[list[str], list[list[str]]]:
        """The sources whose deepest maps seed the decoder and, per up-step (coarse to
        fine), whose skips it reads (the reference neck's ``in_feature_key`` and
        ``in_fusion_key_list``); every source by default."""
        names = self.source_names

        def check(group: Sequence[str], what: str) -> list[str]:
            if isinstance(group, str):
                group = [group]
            chosen = [str(s) for s in group]
            unknown = [s for s in chosen if s not in names]
            if not chosen or unknown or len(set(chosen)) != len(chosen):
                raise ModelError(f"{what} must name distinct sources of {names}, got "
                                 f"{list(group)!r}")
            return chosen

        seeds = list(names) if seed is None else check(seed, "seed_sources")
        if fusion is None:
            steps = [list(names) for _ in range(n_steps)]
        else:
            if isinstance(fusion, str) or len(fusion) != n_steps:
                raise ModelError(f"fusion_sources needs one list of sources per decoder "
                                 f"up-step ({n_steps}), got {fusion!r}")
            steps = [check(g, f"fusion_sources[{i}]") for i, g in enumerate(fusion)]
        return seeds, steps

    def forward(self, inputs: Mapping[str, Tensor] | Tensor) -> Tensor | list[Tensor]:
        """Logits ``[B, K, H, W]`` (a list of per-level logits if hierarchical; the features
        when built without a head)."""
        return self.head(self.forward_features(inputs))

    def predict(self, inputs: Mapping[str, Tensor] | Tensor, precision: str = "float32"
                ) -> Tensor | list[Tensor]:
        """:meth:`forward` for inference: eval mode (the previous mode is restored), under
        ``torch.inference_mode()``, at ``precision`` (``"float32"`` default, ``"bfloat16"``
        or ``"auto"``: bfloat16 autocast where the CPU or GPU supports it, see
        :func:`~cropscope.models.swin3d.inference_precision`). Outputs are float32."""
        data = self._as_dict(inputs)
        device = next(iter(data.values())).device
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode(), inference_precision(precision, device):
                out = self(data)
        finally:
            self.train(was_training)
        if isinstance(out, list):
            return [o.float() for o in out]
        return out.float()
