"""Supervised pretraining on a land-cover / crop raster, and loading the result for fine-tuning.

Any class raster aligned with (or reprojectable onto) an input cube gives per-pixel targets
for many tiles cut from the cube. The model (any segmentation network with the AgriFM forward
contract) is trained with its own head sized for the raster's classes, through
:func:`~cropscope.engine.segmentation.train_segmentation` (so it is resumable, and scales
out with ``devices`` / ``strategy``), and its weights minus the head are written to
``encoder.safetensors``, described by ``encoder.json`` (class codes, objective, excluded
head prefixes, normalisation). :func:`load_pretrained` loads those weights into a
fine-tuning model with a different head, reporting what it skipped.

Objectives (``objective``): ``"pixel"`` (per-pixel cross-entropy), ``"fraction"`` (the
land-cover-fraction objective proposed in agrifm.md §4.3: the softmax averaged over each
tile's valid pixels is matched to the tile's class fractions with a soft cross-entropy; the
AgriFM authors' exact loss is unpublished), or ``"both"`` (their sum).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cropscope.data.readers.h5patches import ArrayPatchDataset, BandStats, tile_sample
from cropscope.engine.checkpoints import BEST_FILE, LAST, read_weights, write_weights
from cropscope.engine.segmentation import (
    SegmentationConfig,
    SegmentationResult,
    train_segmentation,
)
from cropscope.errors import DataError, ModelError
from cropscope.io import write_json
from cropscope.runs.state import STATE_FORMAT, load_state, state_paths

__all__ = [
    "ENCODER_FILE",
    "ENCODER_META",
    "LoadReport",
    "PretrainResult",
    "encode_classes",
    "fraction_loss",
    "guess_head_prefixes",
    "load_pretrained",
    "pretrain_segmentation",
    "read_class_raster",
    "read_pretrained",
]

ENCODER_FILE = "encoder.safetensors"
#: what ``encoder.safetensors`` holds (format, class codes, objective, head prefixes, ...)
ENCODER_META = "encoder.json"
ENCODER_FORMAT = "cropscope-pretrained-v1"
OBJECTIVES = ("pixel", "fraction", "both")


def read_class_raster(
    path: str | Path,
    band: int = 1,
    *,
    crs: Any = None,
    transform: Sequence[float] | None = None,
    shape: tuple[int, int] | None = None,
    nodata: float | None = None,
) -> np.ndarray:
    """Class codes of a GeoTIFF band as int64, nodata → -1.

    With ``crs``, ``transform`` (GDAL order ``(a, b, c, d, e, f)``) and ``shape`` the band is
    reprojected by nearest neighbour onto that grid (pixels it does not cover get -1);
    otherwise it is returned as stored. ``nodata`` overrides the file's nodata value.
    """
    import rasterio
    from affine import Affine
    from rasterio.warp import Resampling, reproject

    path = Path(path)
    if not path.is_file():
        raise DataError(f"class raster not found: {path}")
    with rasterio.open(path) as src:
        if not 1 <= band <= src.count:
            raise DataError(f"{path.name} has {src.count} band(s), asked for band {band}")
        nod = src.nodata if nodata is None else nodata
        data = src.read(band)
        if not np.issubdtype(data.dtype, np.integer):
            finite = np.isfinite(data)
            if np.any(np.mod(data[finite], 1) != 0):
                raise DataError(f"{path.name} band {band} holds non-integer values; a class "
                                "raster is needed")
        if transform is None and crs is None and shape is None:
            codes = np.where(np.isfinite(data), data, -1).astype(np.int64)
            return np.where(data == nod, -1, codes) if nod is not None else codes
        if transform is None or shape is None:
            raise DataError("give crs, transform and shape together to reproject")
        fill = -1 if nod is None else nod
        out = np.full(shape, fill, dtype=np.float64)
        reproject(source=data.astype(np.float64), destination=out,
                  src_transform=src.transform, src_crs=src.crs,
                  dst_transform=Affine(*transform[:6]), dst_crs=crs or src.crs,
                  src_nodata=nod, dst_nodata=fill, resampling=Resampling.nearest)
    codes = np.where(np.isfinite(out), out, -1).astype(np.int64)
    return np.where(out == fill, -1, codes)


def encode_classes(codes: np.ndarray, ignore: Sequence[int] = ()) -> tuple[np.ndarray, list[int]]:
    """Raster codes → consecutive labels ``0..K-1`` (negative codes and ``ignore`` → -1);
    returns the labels and the code of each label."""
    codes = np.asarray(codes, dtype=np.int64)
    valid = (codes >= 0) & ~np.isin(codes, list(ignore))
    present = np.unique(codes[valid])
    labels = np.full(codes.shape, -1, dtype=np.int64)
    labels[valid] = np.searchsorted(present, codes[valid])
    return labels, [int(c) for c in present]


def fraction_loss(logits: Tensor | Sequence[Tensor], labels: Tensor,
                  ignore_index: int = -1) -> Tensor:
    """Soft cross-entropy between each sample's true class fractions (over its valid pixels)
    and the mean predicted class probabilities over the same pixels."""
    out = logits if isinstance(logits, Tensor) else logits[-1]
    if labels.ndim == 4:
        labels = labels[:, -1]
    if tuple(out.shape[-2:]) != tuple(labels.shape[-2:]):
        out = F.interpolate(out, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    k = out.shape[1]
    valid = (labels != ignore_index) & (labels >= 0) & (labels < k)
    prob = out.float().softmax(1) * valid[:, None]
    onehot = F.one_hot(labels.clamp(0, k - 1), k).permute(0, 3, 1, 2).float() * valid[:, None]
    n = valid.sum((1, 2)).clamp(min=1)[:, None].float()
    pred = prob.sum((2, 3)) / n
    target = onehot.sum((2, 3)) / n
    has = valid.any(1).any(1)
    if not has.any():
        return out.sum() * 0.0
    ce = -(target * torch.log(pred.clamp(min=1e-8))).sum(1)
    return ce[has].mean()


class _Objective:
    def __init__(self, objective: str, ignore_index: int) -> None:
        self.objective = objective
        self.ignore_index = ignore_index

    def __call__(self, out: Any, labels: Tensor) -> Tensor:
        fine = out[-1] if isinstance(out, list | tuple) else out
        y = labels[:, -1] if labels.ndim == 4 else labels
        total = fine.new_zeros((), dtype=torch.float32)
        if self.objective in ("pixel", "both") and (y != self.ignore_index).any():
            if tuple(fine.shape[-2:]) != tuple(y.shape[-2:]):
                fine = F.interpolate(fine, size=y.shape[-2:], mode="bilinear",
                                     align_corners=False)
            total = total + F.cross_entropy(fine.float(), y, ignore_index=self.ignore_index)
        if self.objective in ("fraction", "both"):
            total = total + fraction_loss(fine, y, self.ignore_index)
        return total


def guess_head_prefixes(model: nn.Module, num_classes: int) -> list[str]:
    """Prefix of the module that produces the logits: an attribute named ``head`` when the
    model has one, else the last ``Conv2d``/``Linear`` with ``num_classes`` outputs."""
    if isinstance(getattr(model, "head", None), nn.Module):
        return ["head."]
    last = None
    for name, mod in model.named_modules():
        out = getattr(mod, "out_channels", getattr(mod, "out_features", None))
        if isinstance(mod, nn.Conv2d | nn.Linear) and out == num_classes:
            last = name
    if last is None:
        raise ModelError("cannot tell which module is the head: pass head_prefixes")
    return [f"{last}."]


@dataclass
class PretrainResult:
    """Outcome of :func:`pretrain_segmentation`."""

    training: SegmentationResult
    encoder_path: Path
    class_codes: list[int]
    head_prefixes: list[str]
    n_tiles: int


def pretrain_segmentation(
    model: nn.Module,
    sources: Mapping[str, np.ndarray],
    target: np.ndarray,
    out_dir: str | Path,
    *,
    size: int = 32,
    stride: int | None = None,
    objective: str = "pixel",
    config: SegmentationConfig | Mapping[str, Any] | None = None,
    normalise: BandStats | None = None,
    ignore_codes: Sequence[int] = (),
    head_prefixes: Sequence[str] | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
) -> PretrainResult:
    """Pretrain ``model`` on tiles of a cube labelled by a class raster.

    ``sources`` are ``(T, C, H, W)`` arrays on the raster's grid and ``target`` the raster's
    codes (``-1`` = no label; use :func:`read_class_raster`). Codes are renumbered with
    :func:`encode_classes`: the model's head must have one output per code present (see
    ``class_codes`` in the result). Tiles ``size x size`` every ``stride`` pixels.
    Checkpoints, ``encoder.safetensors`` (weights without the head) and ``encoder.json`` go
    to ``out_dir`` (written by the first process only under ``strategy="ddp"``).
    """
    if objective not in OBJECTIVES:
        raise ModelError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    labels, codes = encode_classes(target, ignore_codes)
    if not codes:
        raise DataError("the class raster has no valid pixel")
    tiles = tile_sample(sources, labels, size, stride)
    tiles = [t for t in tiles if (t[1] >= 0).any()]
    dataset = ArrayPatchDataset(tiles, normalise=normalise)
    cfg = config if isinstance(config, SegmentationConfig) else \
        SegmentationConfig.from_dict(config)
    prefixes = list(head_prefixes) if head_prefixes is not None else \
        guess_head_prefixes(model, len(codes))
    out = Path(out_dir)
    res = train_segmentation(
        model, dataset, config=cfg, out_dir=out, resume=resume, progress=progress,
        stop_after=stop_after, loss_fn=_Objective(objective, cfg.ignore_index),
        extra_state={"class_codes": codes, "objective": objective})
    path = out / ENCODER_FILE
    state = {k: v for k, v in model.state_dict().items()
             if not any(k.startswith(p) for p in prefixes)}
    meta = {"format": ENCODER_FORMAT, "weights": ENCODER_FILE, "excluded_prefixes": prefixes,
            "class_codes": codes, "objective": objective, "epochs_done": res.epochs_done,
            "normalise": None if normalise is None else normalise.to_dict()}
    if _first_process():
        write_weights(path, state, {"format": ENCODER_FORMAT})
        write_json(out / ENCODER_META, meta)  # written last: the pair is complete
    return PretrainResult(res, path, codes, prefixes, len(tiles))


def _first_process() -> bool:
    from cropscope.engine.runner import is_global_zero

    return is_global_zero()


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did."""

    loaded: list[str] = field(default_factory=list)
    #: keys in the file whose shape differs from the model's (e.g. a head for other classes)
    shape_mismatch: list[str] = field(default_factory=list)
    #: keys in the file that the model lacks, or that ``exclude`` dropped
    unexpected: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    #: model keys the file did not provide (typically the new head)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: counts and the first skipped names."""
        def few(names: list[str]) -> str:
            return ", ".join(names[:4]) + (" …" if len(names) > 4 else "")
        parts = [f"loaded {len(self.loaded)} tensors"]
        for label, names in (("excluded", self.excluded), ("shape mismatch",
                             self.shape_mismatch), ("not in model", self.unexpected),
                             ("not in file", self.missing)):
            if names:
                parts.append(f"{label} {len(names)} ({few(names)})")
        return "; ".join(parts)


def load_pretrained(
    model: nn.Module,
    path: str | Path,
    exclude: Sequence[str] = ("head.",),
) -> LoadReport:
    """Load pretrained weights into ``model``, all but its head.

    ``path`` is an ``encoder.safetensors`` from :func:`pretrain_segmentation` (or the folder
    holding it), a ``best.safetensors`` or ``last.safetensors`` / ``last.json`` of
    :func:`~cropscope.engine.segmentation.train_segmentation`, any safetensors state dict,
    or a ``.pt``/``.pth`` state dict (read with ``weights_only=True``). Keys starting with
    an ``exclude`` prefix, keys the model lacks and keys whose shape differs are skipped; all
    are listed in the returned :class:`LoadReport`.
    """
    state = read_pretrained(path)
    own = model.state_dict()
    report = LoadReport()
    take = {}
    for key, value in state.items():
        if any(key.startswith(p) for p in exclude):
            report.excluded.append(key)
        elif key not in own:
            report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.shape_mismatch.append(key)
        else:
            take[key] = value
    report.loaded = sorted(take)
    report.missing = sorted(k for k in own if k not in take)
    if not take:
        raise ModelError(f"no tensor of {path} matches the model: {report.summary()}")
    model.load_state_dict(take, strict=False)
    return report


def _is_state(path: Path) -> bool:
    """Whether ``path`` (``x.safetensors`` or ``x.json``) is one half of a training state
    (:func:`cropscope.runs.state.save_state`) rather than plain weights."""
    js = state_paths(path.with_suffix(""))[1]
    if not js.is_file():
        return False
    try:
        head = json.loads(js.read_text()[:1_000_000])
    except ValueError:
        return False
    return isinstance(head, dict) and head.get("format") == STATE_FORMAT


def read_pretrained(path: str | Path) -> dict[str, Tensor]:
    """The tensors :func:`load_pretrained` would load from ``path`` (see there)."""
    path = Path(path)
    if path.is_dir():
        for name in (ENCODER_FILE, "weights.safetensors", BEST_FILE, f"{LAST}.safetensors"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise ModelError(f"no pretrained weights in {path} (looked for {ENCODER_FILE}, "
                             f"weights.safetensors, {BEST_FILE}, {LAST}.safetensors)")
    if path.suffix in (".safetensors", ".json") and _is_state(path):
        state = load_state(path.with_suffix(""))
        model = state.get("model")
        if not isinstance(model, Mapping) or not all(isinstance(v, Tensor)
                                                      for v in model.values()):
            raise ModelError(f"{path} holds no model state")
        return dict(model)
    if not path.is_file():
        raise ModelError(f"pretrained weights not found: {path}")
    if path.suffix == ".safetensors":
        return read_weights(path)[0]
    if path.suffix in (".pt", ".pth"):
        from cropscope.models.agrifm_checkpoint import read_state_dict

        return read_state_dict(path)
    raise ModelError(f"{path}: pretrained weights must be .safetensors (or a .pt/.pth state "
                     "dict)")
