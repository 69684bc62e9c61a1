"""Loading AgriFM checkpoints into :class:`~cropscope.models.agrifm.AgriFM` (agrifm.md §4.4).

The released pretrained file (``AgriFM.pth``) holds one shared backbone under
``encoder.backbone.*`` (Video Swin names) and raw stem tensors
``encoder.<SRC>_patch_emd.weights`` / ``.bias`` for ``S2`` (``[128, 10, 4, 4, 4]``), ``HLSL30``
and ``Modis``; no decoder. :func:`remap_agrifm_state_dict` renames those keys explicitly:

=================================================  ==========================================
published                                          here
=================================================  ==========================================
``encoder.backbone.layers.{i}.blocks.{j}.<rest>``  ``backbone.stages.{i}.blocks.{j}.<rest>``
``encoder.backbone.layers.{i}.downsample.<rest>``  ``backbone.merges.{i}.<rest>``
``encoder.backbone.norm.<rest>``                   ``backbone.norm.<rest>``
``encoder.S2_patch_emd.weights`` / ``.bias``       ``stems.S2.proj.weight`` / ``.bias``
``encoder.HLSL30_patch_emd.weights`` / ``.bias``   ``stems.HLS.proj.weight`` / ``.bias``
``encoder.Modis_patch_emd.weights`` / ``.bias``    ``stems.MODIS.proj.weight`` / ``.bias``
``encoders.encoders.<SRC>.backbone.<as above>``    ``backbones.<SRC>.<as above>``
``encoders.encoders.<SRC>.patch_emd.proj.<p>``     ``stems.<SRC>.proj.<p>``
``neck.fusion_list.{k}.<rest>``                    ``decoder.steps.{k}.<rest>``
``neck.out_conv.<rest>``                           ``decoder.out.<rest>``
``neck.in_conv.<rest>`` (several seed sources)     ``decoder.seed.<rest>``
``heads.head.0.<p>`` / ``heads.head.2.<p>``        ``head.conv.<p>`` / ``head.cls.<p>``
=================================================  ==========================================

``<rest>`` inside a block keeps its name (``norm1``, ``attn.qkv``, ``attn.proj``,
``attn.relative_position_bias_table``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``; merges: ``norm``,
``reduction``). A leading ``module.`` is stripped, ``relative_position_index`` buffers are
dropped (derived; non-persistent here), and keys already in this module's names pass through
(so this model's own ``state_dict()`` loads too). The ``encoders.encoders.*``, ``neck.*``
and ``heads.*`` rows are those of the official fine-tuning model (``MultiUnifiedModel``,
flyakon/AgriFM @ 13f476e2), checked against its real state dict in
``../shared/data/official_reference`` (0 missing, 0 unexpected, 0 shape mismatches); the
``encoders.<SRC>.*`` spelling without the doubled prefix is still accepted.

:func:`load_agrifm_checkpoint` then fits the renamed state to a model: a shared ``backbone.*``
is copied into every per-source body of a model built with ``shared_backbone=False`` (the
reference initialises each copy from the same checkpoint), stems are matched to the model's
sources by their checkpoint name (``HLS``/``L30``/``HLSL30`` all read ``HLSL30``), and stems of
sources the model does not have are ignored (reported). A file without decoder/head keys is a
backbone-only checkpoint: the decoder, head and temporal pooling keep their initialisation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from cropscope.errors import ModelError
from cropscope.models.agrifm import AGRIFM_SOURCES, AgriFM

__all__ = ["CheckpointReport", "load_agrifm_checkpoint", "read_state_dict",
           "remap_agrifm_state_dict"]

#: checkpoint stem name -> canonical source name of :func:`remap_agrifm_state_dict`
STEM_NAMES: dict[str, str] = {"S2": "S2", "HLSL30": "HLS", "Modis": "MODIS"}
#: prefixes of modules that a backbone-only checkpoint leaves at their initialisation
HEAD_PREFIXES: tuple[str, ...] = ("decoder.", "head.", "temporal.")
_OWN_PREFIXES = ("stems.", "backbone.", "backbones.", *HEAD_PREFIXES)

_BACKBONE_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$"), r"stages.\1.blocks.\2.\3"),
    (re.compile(r"^layers\.(\d+)\.downsample\.(.+)$"), r"merges.\1.\2"),
    (re.compile(r"^norm\.(weight|bias)$"), r"norm.\1"),
]
_STEM = re.compile(r"^encoder\.(\w+?)_patch_emd\.(?:proj\.)?(weights?|bias)$")
_FT_STEM = re.compile(
    r"^encoders\.(?:encoders\.)?(\w+)\.patch_emd\.(?:proj\.)?(weights?|bias)$")


@dataclass
class CheckpointReport:
    """What :func:`load_agrifm_checkpoint` did. ``missing``/``unexpected``/``mismatched``
    are empty after a strict load."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(
        default_factory=list)
    ignored: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)

    @property
    def backbone_only(self) -> bool:
        """True when the decoder/head kept their initialisation."""
        return bool(self.initialised)


def _backbone_key(rest: str) -> str:
    for pattern, repl in _BACKBONE_RULES:
        if pattern.match(rest):
            return pattern.sub(repl, rest)
    raise ModelError(f"unknown AgriFM backbone key {rest!r}")


def remap_agrifm_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a published AgriFM state dict to :class:`AgriFM`'s names (see the module doc;
    the backbone under ``backbone.*``, stems under canonical source names)."""
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for raw, value in state.items():
        key = raw[len("module."):] if raw.startswith("module.") else raw
        if key.endswith("relative_position_index"):
            continue  # derived buffer
        new: str | None = None
        if key.startswith("encoder.backbone."):
            new = "backbone." + _backbone_key(key[len("encoder.backbone."):])
        elif m := _STEM.match(key):
            src = STEM_NAMES.get(m.group(1), m.group(1))
            new = f"stems.{src}.proj.{'bias' if m.group(2) == 'bias' else 'weight'}"
        elif m := _FT_STEM.match(key):
            new = f"stems.{m.group(1)}.proj.{'bias' if m.group(2) == 'bias' else 'weight'}"
        elif m := re.match(r"^encoders\.(?:encoders\.)?(\w+)\.backbone\.(.+)$", key):
            new = f"backbones.{m.group(1)}." + _backbone_key(m.group(2))
        elif m := re.match(r"^neck\.fusion_list\.(\d+)\.(.+)$", key):
            new = f"decoder.steps.{m.group(1)}.{m.group(2)}"
        elif key.startswith("neck.out_conv."):
            new = "decoder.out." + key[len("neck.out_conv."):]
        elif key.startswith("neck.in_conv."):
            new = "decoder.seed." + key[len("neck.in_conv."):]
        elif m := re.match(r"^heads\.head\.([02])\.(weight|bias)$", key):
            new = f"head.{'conv' if m.group(1) == '0' else 'cls'}.{m.group(2)}"
        elif key.startswith("neck."):
            new = "decoder." + key[len("neck."):]
        elif key.startswith(_OWN_PREFIXES):
            new = key
        if new is None:
            unknown.append(raw)
            continue
        if new in out:
            raise ModelError(f"two checkpoint keys map to {new!r} (one is {raw!r})")
        out[new] = value
    if unknown:
        raise ModelError(f"{len(unknown)} checkpoint keys have no AgriFM mapping: "
                         f"{_listing(unknown)}")
    return out


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` or ``.pth``/``.pt`` file, read safely (an official
    mmengine training checkpoint included; :func:`cropscope.models.checkpoint_reader.
    read_checkpoint`)."""
    from cropscope.models.checkpoint_reader import read_checkpoint

    return read_checkpoint(path).state_dict


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _fit_to_model(model: AgriFM, state: dict[str, Tensor]) -> tuple[dict[str, Tensor],
                                                                    list[str]]:
    """Adapt the canonical layout to the model's (shared/per-source bodies, source names)."""
    out: dict[str, Tensor] = {}
    ignored: list[str] = []
    ckpt_name = {s: AGRIFM_SOURCES.get(s, {}).get("checkpoint_name", s)
                 for s in model.source_names}
    for key, value in state.items():
        if key.startswith("stems."):
            src, rest = key[len("stems."):].split(".", 1)
            if src in model.source_names:
                out[key] = value
                continue
            name = AGRIFM_SOURCES.get(src, {}).get("checkpoint_name", src)
            targets = [s for s in model.source_names if ckpt_name[s] == name]
            if not targets:
                ignored.append(key)  # a stem of a source this model does not use
            for s in targets:
                out[f"stems.{s}.{rest}"] = value
        elif key.startswith("backbone.") and model.backbones is not None:
            for s in model.source_names:
                out[f"backbones.{s}." + key[len("backbone."):]] = value
        elif key.startswith("backbones.") and model.backbone is not None:
            raise ModelError("the checkpoint has one backbone per source; build the model with "
                             "shared_backbone=False")
        else:
            out[key] = value
    return out, ignored


def load_agrifm_checkpoint(model: AgriFM, path_or_state: str | Path | Mapping[str, Tensor],
                           strict: bool = True) -> CheckpointReport:
    """Load a published (or this module's own) AgriFM checkpoint into ``model``.

    With ``strict`` any missing or unexpected key or shape mismatch raises a
    :class:`~cropscope.errors.ModelError` listing them; decoder/head/temporal-pooling keys may
    all be absent (backbone-only checkpoint) and stems of sources the model lacks are ignored.
    Without ``strict`` what matches is loaded and the rest reported.
    """
    raw = (read_state_dict(path_or_state) if isinstance(path_or_state, str | Path)
           else dict(path_or_state))
    state, ignored = _fit_to_model(model, remap_agrifm_state_dict(raw))
    own = model.state_dict()
    report = CheckpointReport(ignored=sorted(ignored))
    has_head = any(k.startswith(("decoder.", "head.")) for k in state)
    for key in own:
        if key not in state:
            if not has_head and key.startswith(HEAD_PREFIXES):
                report.initialised.append(key)
            else:
                report.missing.append(key)
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise ModelError(_describe(report))
    bad = {k for k, _, _ in report.mismatched}
    to_load = {k: v for k, v in state.items() if k in own and k not in bad}
    with torch.no_grad():
        for key, value in to_load.items():
            own[key].copy_(value.to(own[key].dtype))
    report.loaded = sorted(to_load)
    return report


def _describe(report: CheckpointReport) -> str:
    parts = ["the checkpoint does not fit this AgriFM:"]
    if report.missing:
        parts.append(f"{len(report.missing)} missing keys ({_listing(report.missing)})")
    if report.unexpected:
        parts.append(f"{len(report.unexpected)} unexpected keys "
                     f"({_listing(report.unexpected)})")
    for key, got, want in report.mismatched[:8]:
        hint = ""
        if key.startswith("stems.") and key.endswith("weight") and len(got) == 5:
            hint = (f" (build the model with patch_size={{{key.split('.')[1]!r}: "
                    f"{tuple(got[2:])}}})")
        parts.append(f"shape mismatch for {key}: checkpoint {list(got)}, model "
                     f"{list(want)}{hint}")
    if len(report.mismatched) > 8:
        parts.append(f"... {len(report.mismatched) - 8} more shape mismatches")
    return "; ".join(parts)
