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

:func:`init_s2_from_agrifm` starts the S2 stream from AgriFM weights, as the official
configurations do (``init_cfg=dict(type="pretrained", checkpoint="AgriFM.pth")`` on the S2
encoder): the Video Swin body is loaded, a stem that does not fit (the released (4, 4, 4) or
AgriFM's (4, 2, 2) against H2Crop's (2, 4, 4)) keeps its initialisation, and the decoder,
EnMAP stream and heads are never taken from the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from cropscope.errors import ModelError
from cropscope.models.agrifm_checkpoint import CheckpointReport, remap_agrifm_state_dict

__all__ = ["init_s2_from_agrifm", "load_h2crop_checkpoint", "remap_h2crop_state_dict"]

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


#: names of the S2 stream's encoder in :class:`~cropscope.models.agrifm.AgriFM`
_ENCODER_PREFIXES = ("stems.", "backbone.", "backbones.")


def init_s2_from_agrifm(model: nn.Module, source: str | Path | Mapping[str, Tensor]
                        ) -> CheckpointReport:
    """Initialise the S2 encoder of ``model`` (an :class:`~cropscope.models.h2crop.H2CropNet`)
    from an AgriFM checkpoint: the released pretraining file, an official fine-tuning
    checkpoint or state dict, or a cropscope AgriFM's weights (any layout
    :func:`~cropscope.models.agrifm_checkpoint.load_agrifm_checkpoint` reads).

    Only the stem and the body are read (the official ``PretrainingSwinTransformer3DEncoder``
    initialisation); the decoder and heads keep theirs. A stem whose shape does not fit stays
    at its initialisation and is listed in ``mismatched`` (as mmengine's non-strict load
    skips it). Every body tensor must load: a missing, unexpected or mis-shaped body key (a
    checkpoint of another size) is a :class:`ModelError`, and nothing is changed.
    """
    from cropscope.models.agrifm_checkpoint import _fit_to_model, read_state_dict

    s2 = getattr(model, "s2", None)
    if s2 is None:
        raise ModelError("init_s2_from_agrifm needs an H2CropNet (it has no S2 stream)")
    raw = (read_state_dict(source) if isinstance(source, str | Path) else dict(source))
    encoder = {k: v for k, v in remap_agrifm_state_dict(raw).items()
               if k.startswith(_ENCODER_PREFIXES)}
    state, ignored = _fit_to_model(s2, encoder)
    own = {k: v for k, v in s2.state_dict().items() if k.startswith(_ENCODER_PREFIXES)}
    report = CheckpointReport(ignored=sorted(ignored))
    report.missing = [k for k in own if k not in state and not k.startswith("stems.")]
    report.unexpected = [k for k in state if k not in own]
    report.mismatched = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
                         if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    body_bad = [k for k, _, _ in report.mismatched if not k.startswith("stems.")]
    if report.missing or report.unexpected or body_bad or not state:
        parts = []
        for label, items in (("missing", report.missing), ("unexpected", report.unexpected),
                             ("mis-shaped", body_bad)):
            if items:
                parts.append(f"{len(items)} {label} body keys ({', '.join(items[:4])})")
        raise ModelError("the AgriFM checkpoint does not fit this H2CropNet's S2 stream: " +
                         ("; ".join(parts) or "it holds no encoder weights") +
                         " (build the stream with the checkpoint's embed_dim, depths and "
                         "heads)")
    bad = {k for k, _, _ in report.mismatched}
    fits = {k: v for k, v in state.items() if k not in bad}
    s2.load_state_dict(fits, strict=False)
    report.loaded = sorted("s2." + k for k in fits)
    report.initialised = sorted("s2." + k for k in bad)
    return report
