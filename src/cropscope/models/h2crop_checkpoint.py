"""Loading official H2Crop checkpoints (flyakon/H2Crop @ d5a861ba) into
:class:`~cropscope.models.h2crop.H2CropNet`.

The official model is AgriFM's S2 stream plus the EnMAP spectral-spatial stream, a hyper
neck and cascaded heads; names map one to one (:func:`remap_h2crop_state_dict`):

- ``encoders.encoders.S2.*``, ``neck.fusion_list.*``, ``neck.out_conv.*`` → ``s2.*`` (the
  AgriFM rules of :func:`~cropscope.models.agrifm_checkpoint.remap_agrifm_state_dict`);
- ``encoders.encoders.EnMAP.s_vit.patch_emd.proj.*`` → ``hyper.spatial_embed.*``;
- ``….s_vit.blocks.{i}.<block>`` → ``hyper.spatial_encoder.blocks.{i}.<block>``;
- ``….s_vit.out_conv.*`` → ``hyper.spatial_out.0.*``;
- ``….p_vit.blocks.{i}.<block>`` → ``hyper.spectral_encoder.blocks.{i}.<block>``;
- ``….p_vit.out_post.*`` → ``hyper.spectral_unembed.*``; ``….p_vit.out_conv.*`` →
  ``hyper.spectral_out.0.*``;
- ``encoders.encoders.EnMAP.out_post.*`` → ``hyper.fuse.*``;
- ``neck.hyper_embed_neck.models.*`` → ``hyper.neck.*``;
- ``heads.heads_dict.level{k}.head.{0,2}.*`` → ``heads.heads.{k-1}.{0,2}.*``.

Inside a ViT block ``mlp.fc1`` / ``mlp.fc2`` become ``mlp.0`` / ``mlp.3``. Dropped, and
reported as such: the ``relative_position_index`` buffers (derived) and the twelve tensors
timm's ``VisionTransformer`` base class creates but the official forward never uses
(``{s_vit,p_vit}.{cls_token,pos_embed,patch_embed.proj.*,norm.*}``).

Build the network with ``temporal="flatten"`` and ``compat="official"`` (and the official
``feature_size``) to reproduce the official outputs; see ``docs/h2crop.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from cropscope.errors import ModelError
from cropscope.models.agrifm_checkpoint import CheckpointReport, remap_agrifm_state_dict

__all__ = ["load_h2crop_checkpoint", "remap_h2crop_state_dict"]

_ENMAP = "encoders.encoders.EnMAP."
_UNUSED_TIMM = re.compile(r"^(s_vit|p_vit)\.(cls_token|pos_embed|patch_embed\.proj\.\w+|"
                          r"norm\.\w+)$")
_BLOCK = re.compile(r"^(s_vit|p_vit)\.blocks\.(\d+)\.(.+)$")
_MLP = {"mlp.fc1.weight": "mlp.0.weight", "mlp.fc1.bias": "mlp.0.bias",
        "mlp.fc2.weight": "mlp.3.weight", "mlp.fc2.bias": "mlp.3.bias"}
_ENMAP_RULES = {
    "s_vit.patch_emd.proj.": "hyper.spatial_embed.",
    "s_vit.out_conv.": "hyper.spatial_out.0.",
    "p_vit.out_post.": "hyper.spectral_unembed.",
    "p_vit.out_conv.": "hyper.spectral_out.0.",
    "out_post.": "hyper.fuse.",
}


def remap_h2crop_state_dict(state: Mapping[str, Tensor]
                            ) -> tuple[dict[str, Tensor], list[str]]:
    """``(renamed state, dropped keys)`` of an official H2Crop state dict (module doc)."""
    s2: dict[str, Tensor] = {}
    out: dict[str, Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for raw, value in state.items():
        key = raw[len("module."):] if raw.startswith("module.") else raw
        if key.endswith("relative_position_index"):
            dropped.append(raw)
        elif key.startswith(("encoders.encoders.S2.", "neck.fusion_list.", "neck.out_conv.")):
            s2[key] = value
        elif key.startswith(_ENMAP):
            rest = key[len(_ENMAP):]
            if _UNUSED_TIMM.match(rest):
                dropped.append(raw)
            elif m := _BLOCK.match(rest):
                enc = "spatial_encoder" if m.group(1) == "s_vit" else "spectral_encoder"
                out[f"hyper.{enc}.blocks.{m.group(2)}.{_MLP.get(m.group(3), m.group(3))}"] = \
                    value
            else:
                prefix = next((p for p in _ENMAP_RULES if rest.startswith(p)), None)
                if prefix is None:
                    unknown.append(raw)
                else:
                    out[_ENMAP_RULES[prefix] + rest[len(prefix):]] = value
        elif key.startswith("neck.hyper_embed_neck.models."):
            out["hyper.neck." + key[len("neck.hyper_embed_neck.models."):]] = value
        elif m := re.match(r"^heads\.heads_dict\.level(\d+)\.head\.([02])\.(weight|bias)$",
                           key):
            out[f"heads.heads.{int(m.group(1)) - 1}.{m.group(2)}.{m.group(3)}"] = value
        else:
            unknown.append(raw)
    if unknown:
        shown = ", ".join(unknown[:8]) + (f", ... ({len(unknown) - 8} more)"
                                          if len(unknown) > 8 else "")
        raise ModelError(f"{len(unknown)} checkpoint keys have no H2Crop mapping: {shown}")
    for key, value in remap_agrifm_state_dict(s2).items():
        out["s2." + key] = value
    return out, dropped


def load_h2crop_checkpoint(model: nn.Module, source: str | Path | Mapping[str, Tensor],
                           *, strict: bool = True) -> CheckpointReport:
    """Load an official H2Crop checkpoint (a training ``.pth``, a ``.safetensors`` state dict
    or a mapping) into ``model`` (an :class:`~cropscope.models.h2crop.H2CropNet`); with
    ``strict`` any missing, unexpected or mis-shaped key is a :class:`ModelError` listing
    them. The report's ``ignored`` are the dropped keys (see the module doc)."""
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        from cropscope.models.checkpoint_reader import read_checkpoint

        state = read_checkpoint(source).state_dict
    mapped, dropped = remap_h2crop_state_dict(state)
    own = model.state_dict()
    report = CheckpointReport(ignored=dropped)
    report.missing = [k for k in own if k not in mapped]
    report.unexpected = [k for k in mapped if k not in own]
    report.mismatched = [(k, tuple(mapped[k].shape), tuple(own[k].shape)) for k in own
                         if k in mapped and tuple(mapped[k].shape) != tuple(own[k].shape)]
    if strict and (report.missing or report.unexpected or report.mismatched):
        parts = []
        for label, items in (("missing", report.missing), ("unexpected", report.unexpected),
                             ("shape mismatches", [k for k, _, _ in report.mismatched])):
            if items:
                parts.append(f"{len(items)} {label} ({', '.join(items[:5])})")
        raise ModelError("the checkpoint does not fit this H2CropNet: " + "; ".join(parts) +
                         " (build it with the checkpoint's configuration)")
    fits = {k: v for k, v in mapped.items()
            if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(fits, strict=False)
    report.loaded = sorted(fits)
    return report
