"""Per-pixel segmentation training for patch time series (the AgriFM fine-tuning recipe).

Works with any ``nn.Module`` whose ``forward({source: [B, T, C, H, W]})`` returns logits
``[B, K, H, W]`` (or a list of them, one per hierarchy level, with labels ``[B, L, H, W]``),
and any map-style dataset yielding ``({source: [T, C, H, W]}, label)``, e.g.
:class:`~cropscope.data.readers.h5patches.H5PatchDataset`.

Default recipe (agrifm.md §6.3): AdamW (lr 6e-5, weight decay 5e-4), a linear warm-up from
1 % of the rate over 1000 iterations (capped at a fifth of the run, so short runs still reach
the peak rate) then cosine decay per iteration to 1e-6, cross-entropy with ``ignore_index``
(default -1), AMP (autocast + GradScaler) on CUDA and fp32 on CPU. Random flips and 90°
rotations are applied to every source and the label alike (the reference has them commented
out; set ``augment=False`` for its exact pipeline). ``cutmix`` (off by default; 0.5 in
H2Crop) then applies :func:`cutmix_batch` ("CropCutup"): a random square of a partner
sample is pasted into every input at the same footprint (each on its own grid, priors
included) and into the labels of every level.

A final training batch of a single sample is dropped (batch norm cannot normalise one
value per channel; evaluation keeps every sample).

Every epoch (``checkpoint_every``) writes ``last.pt`` into ``out_dir`` (model, optimiser,
scheduler, scaler, epoch, RNG states, config, history; atomically) and ``history.json``, and,
with validation data, ``best.pt`` (weights only) when the monitored score improves.
``resume=True`` continues from ``last.pt``: shuffling, augmentation and dropout are
seeded per epoch from ``seed``, so an interrupted and resumed run gives the same weights
as an uninterrupted one (on CPU; CUDA kernels may be non-deterministic).
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from cropscope.errors import ModelError
from cropscope.io import atomic_path, write_json

__all__ = [
    "SegmentationConfig",
    "SegmentationResult",
    "augment_batch",
    "confusion_matrix",
    "cutmix_batch",
    "evaluate_segmentation",
    "lr_factor",
    "segmentation_scores",
    "train_segmentation",
]

LAST = "last.pt"
BEST = "best.pt"
HISTORY = "history.json"

#: ``(outputs, labels) -> scalar loss``: replaces the cross-entropy (e.g. pretraining)
LossFn = Callable[[Any, Tensor], Tensor]


@dataclass
class SegmentationConfig:
    """Hyper-parameters of :func:`train_segmentation` (defaults: AgriFM fine-tuning)."""

    epochs: int = 50
    batch_size: int = 4
    lr: float = 6e-5
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    #: linear warm-up iterations (capped at a fifth of all iterations) and its start factor
    warmup_iters: int = 1000
    warmup_start: float = 0.01
    #: final learning rate of the cosine decay
    min_lr: float = 1e-6
    ignore_index: int = -1
    #: per-class loss weights (one list per level for hierarchical models)
    class_weights: list[float] | list[list[float]] | None = None
    #: loss weight of each hierarchy level (default: equal)
    level_weights: list[float] | None = None
    #: random flips and 90° rotations of every source and the label
    augment: bool = True
    #: probability per sample of CutMix ("CropCutup", :func:`cutmix_batch`); 0: off
    cutmix: float = 0.0
    #: range of the pasted square's side, as a fraction of the label grid's side
    cutmix_ratio: tuple[float, float] = (0.5, 1.0)
    #: mixed precision on CUDA (ignored on CPU)
    amp: bool = True
    #: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0
    #: clip the gradient norm (None: no clipping, as the reference)
    grad_clip: float | None = None
    #: validation score that selects ``best.pt``: "macro_f1", "miou" or "overall_accuracy"
    monitor: str = "macro_f1"
    #: load the best validation epoch's weights into the model at the end
    restore_best: bool = False
    #: write ``last.pt`` every this many epochs (and always after the last epoch of a call);
    #: it holds the optimiser state too, about 3x the model size
    checkpoint_every: int = 1

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SegmentationConfig:
        """Build from a (JSON) dict; unknown keys raise :class:`ModelError`."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"unknown segmentation option(s) {unknown}; known: {sorted(known)}")
        for key in ("betas", "cutmix_ratio"):
            if key in data:
                data[key] = tuple(data[key])
        cfg = cls(**data)
        if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0 or cfg.checkpoint_every < 1:
            raise ModelError("epochs, batch_size, lr and checkpoint_every must be positive")
        if cfg.monitor not in ("macro_f1", "miou", "overall_accuracy"):
            raise ModelError(f"monitor must be macro_f1, miou or overall_accuracy, "
                             f"got {cfg.monitor!r}")
        _check_cutmix(cfg.cutmix, cfg.cutmix_ratio)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        d["cutmix_ratio"] = list(self.cutmix_ratio)
        return d


@dataclass
class SegmentationResult:
    """Outcome of :func:`train_segmentation`."""

    #: one dict per epoch: ``epoch``, ``loss``, ``train_accuracy``, ``lr``, ``seconds`` and,
    #: with validation data, ``val_loss``, ``val_overall_accuracy``, ``val_miou``,
    #: ``val_macro_f1``
    history: list[dict[str, float]]
    #: epochs completed so far (including those of a resumed run)
    epochs_done: int
    best_epoch: int
    best_score: float
    out_dir: Path | None
    device: str
    resumed_from: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for but CUDA is not available")
    return dev


def lr_factor(it: int, total: int, warmup: int, start: float, floor: float) -> float:
    """Learning-rate multiplier at iteration ``it`` of ``total``: linear from ``start`` to 1
    over ``warmup`` iterations, then cosine from 1 down to ``floor``."""
    if warmup > 0 and it < warmup:
        return start + (1.0 - start) * it / warmup
    span = max(total - warmup, 1)
    p = min(max(it - warmup, 0) / span, 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))


def _spatial_op(x: Tensor, flip_h: bool, flip_w: bool, k: int) -> Tensor:
    if flip_h:
        x = x.flip(-2)
    if flip_w:
        x = x.flip(-1)
    if k:
        x = torch.rot90(x, k, dims=(-2, -1))
    return x


def augment_batch(
    inputs: dict[str, Tensor], labels: Tensor, gen: torch.Generator
) -> tuple[dict[str, Tensor], Tensor]:
    """Per sample, the same random flips and 90° rotation of every source (last two axes)
    and of the label. Rotations by 90°/270° only when every grid is square."""
    square = all(v.shape[-1] == v.shape[-2] for v in inputs.values()) and \
        labels.shape[-1] == labels.shape[-2]
    out_x: dict[str, list[Tensor]] = {k: [] for k in inputs}
    out_y = []
    for b in range(labels.shape[0]):
        fh, fw = (torch.rand(2, generator=gen) < 0.5).tolist()
        r = int(torch.randint(0, 4 if square else 2, (1,), generator=gen))
        k = r if square else 2 * r  # non-square grids: 0° or 180° only
        for key, v in inputs.items():
            out_x[key].append(_spatial_op(v[b], fh, fw, k))
        out_y.append(_spatial_op(labels[b], fh, fw, k))
    return ({k: torch.stack(v) for k, v in out_x.items()}, torch.stack(out_y))


def _check_cutmix(p: float, ratio: Any) -> tuple[float, float]:
    if not 0.0 <= float(p) <= 1.0:
        raise ModelError(f"cutmix probability must be in [0, 1], got {p}")
    try:
        lo, hi = (float(v) for v in ratio)
    except (TypeError, ValueError):
        raise ModelError(f"cutmix_ratio must be two numbers (lo, hi), got {ratio!r}") from None
    if not 0.0 < lo <= hi <= 1.0:
        raise ModelError(f"cutmix_ratio must satisfy 0 < lo <= hi <= 1, got {ratio!r}")
    return lo, hi


def _scale(v: int, n: int, ref: int) -> int:
    """``v`` on a grid of ``ref`` pixels mapped onto one of ``n`` pixels, rounded half up."""
    return (2 * v * n + ref) // (2 * ref)


def cutmix_batch(
    inputs: dict[str, Tensor],
    labels: Tensor,
    gen: torch.Generator,
    p: float = 0.5,
    ratio: tuple[float, float] = (0.5, 1.0),
) -> tuple[dict[str, Tensor], Tensor]:
    """CutMix ("CropCutup", h2crop.md §3): per sample, with probability ``p``, paste a box
    of a different sample of the batch (from the un-mixed batch) into every input and the
    labels of every level. The inputs are not modified in place.

    The box side is ``floor(r * side)`` of the label grid (``[B, ..., H, W]``), with
    ``r ~ U(ratio)`` (a square on square grids), at a uniform random position. Every input
    tensor with at least 3 dims is a grid ``[B, ..., h, w]`` covering the same footprint:
    the box edges are scaled by ``h / H`` and ``w / W`` and rounded half up (e.g. ×1/3 for
    EnMAP), so each grid gets the box that covers the same ground as closely as it allows.
    Integer inputs (e.g. last year's labels, ``priors``) are mixed too. Batches of one sample
    are returned unchanged. Deterministic given ``gen``.
    """
    _check_cutmix(p, ratio)
    lo, hi = float(ratio[0]), float(ratio[1])
    n = labels.shape[0]
    if labels.ndim < 3:
        raise ModelError(f"labels must be [B, ..., H, W], got {list(labels.shape)}")
    bad = [k for k, v in inputs.items() if isinstance(v, Tensor) and v.ndim >= 1
           and v.shape[0] != n]
    if bad:
        raise ModelError(f"input(s) {bad} have another batch size than the labels ({n})")
    if n < 2 or p == 0.0:
        return inputs, labels
    big_h, big_w = labels.shape[-2:]
    grids = [k for k, v in inputs.items() if isinstance(v, Tensor) and v.ndim >= 3]
    out_x = dict(inputs)
    out_x.update({k: inputs[k].clone() for k in grids})
    out_y = labels.clone()
    for b in range(n):
        if float(torch.rand((), generator=gen)) >= p:
            continue
        j = int(torch.randint(0, n - 1, (), generator=gen))
        j += j >= b  # a different sample
        r = lo + (hi - lo) * float(torch.rand((), generator=gen))
        bh, bw = max(1, math.floor(r * big_h)), max(1, math.floor(r * big_w))
        y0 = int(torch.randint(0, big_h - bh + 1, (), generator=gen))
        x0 = int(torch.randint(0, big_w - bw + 1, (), generator=gen))
        out_y[b, ..., y0:y0 + bh, x0:x0 + bw] = labels[j, ..., y0:y0 + bh, x0:x0 + bw]
        for k in grids:
            h, w = inputs[k].shape[-2:]
            ys = slice(_scale(y0, h, big_h), _scale(y0 + bh, h, big_h))
            xs = slice(_scale(x0, w, big_w), _scale(x0 + bw, w, big_w))
            out_x[k][b, ..., ys, xs] = inputs[k][j, ..., ys, xs]
    return out_x, out_y


def confusion_matrix(pred: Tensor, target: Tensor, n_classes: int, ignore_index: int) -> Tensor:
    """``[K, K]`` int64 counts (rows truth, columns prediction) over pixels whose target is
    neither ``ignore_index`` nor outside ``0..K-1``."""
    keep = (target != ignore_index) & (target >= 0) & (target < n_classes)
    t, p = target[keep].long(), pred[keep].long()
    return torch.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes).cpu()


def segmentation_scores(cm: np.ndarray | Tensor) -> dict[str, Any]:
    """Overall accuracy, mIoU and macro-F1 from a confusion matrix.

    Class means skip classes that are neither in the truth nor predicted (as mmseg's
    ``nanmean``); per-class IoU/F1 of such classes are NaN.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    truth, predicted = cm.sum(1), cm.sum(0)
    union = truth + predicted - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        f1 = np.where(truth + predicted > 0, 2 * tp / (truth + predicted), np.nan)
    total = cm.sum()
    seen = ~np.isnan(iou)
    return {
        "overall_accuracy": float(tp.sum() / total) if total else math.nan,
        "miou": float(np.mean(iou[seen])) if seen.any() else math.nan,
        "macro_f1": float(np.mean(f1[seen])) if seen.any() else math.nan,
        "iou": [float(v) for v in iou],
        "f1": [float(v) for v in f1],
        "n_pixels": int(total),
    }


def _levels(out: Any) -> list[Tensor]:
    return list(out) if isinstance(out, list | tuple) else [out]


def _label_levels(labels: Tensor, n: int) -> list[Tensor]:
    if n == 1:
        return [labels if labels.ndim == 3 else labels[:, -1]]
    if labels.ndim != 4 or labels.shape[1] != n:
        raise ModelError(f"the model returns {n} levels: labels must be [B, {n}, H, W], got "
                         f"{list(labels.shape)}")
    return [labels[:, i] for i in range(n)]


def _fit_size(logits: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class _Loss:
    """Cross-entropy per level (ignore index, class weights), weighted mean over levels."""

    def __init__(self, cfg: SegmentationConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        cw = cfg.class_weights
        if cw is not None and cw and not isinstance(cw[0], list | tuple):
            cw = [cw]  # type: ignore[list-item]
        self.class_weights = None if cw is None else [
            torch.as_tensor(w, dtype=torch.float32, device=device) for w in cw]

    def __call__(self, out: Any, labels: Tensor) -> Tensor:
        outs = _levels(out)
        ys = _label_levels(labels, len(outs))
        lw = self.cfg.level_weights or [1.0] * len(outs)
        if len(lw) != len(outs):
            raise ModelError(f"{len(lw)} level weights for {len(outs)} levels")
        if self.class_weights is not None and len(self.class_weights) != len(outs):
            raise ModelError(f"class weights for {len(self.class_weights)} levels, the model "
                             f"has {len(outs)}")
        total = outs[0].new_zeros((), dtype=torch.float32)
        for i, (o, y, w) in enumerate(zip(outs, ys, lw, strict=True)):
            o = _fit_size(o, tuple(y.shape[-2:])).float()
            weight = None if self.class_weights is None else self.class_weights[i]
            if not (y != self.cfg.ignore_index).any():
                continue  # an all-ignored level adds nothing (CE would be NaN)
            total = total + w * F.cross_entropy(o, y, weight=weight,
                                                ignore_index=self.cfg.ignore_index)
        return total / float(sum(lw))


def _to_device(inputs: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in inputs.items()
            if isinstance(v, Tensor)}


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),  # noqa: NPY002
                             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002 - global state on purpose
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + epoch * 7919) % 2**31


def _drops_last(n: int, batch_size: int) -> bool:
    """Training drops a final batch of one sample: batch norm cannot normalise a single
    value per channel (a 1 x 1 deepest map), and one sample makes a noisy step anyway."""
    return n > 1 and n % batch_size == 1


def _loader(dataset: Any, cfg: SegmentationConfig, shuffle: bool, epoch: int,
            device: torch.device) -> torch.utils.data.DataLoader:
    gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch))
    return torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=shuffle, generator=gen,
        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
        persistent_workers=False,
        drop_last=shuffle and _drops_last(len(dataset), cfg.batch_size))


def _autocast(device: torch.device, enabled: bool) -> Any:
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=enabled)


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    ignore_index: int = -1,
    num_classes: int | None = None,
    amp: bool = True,
    progress: bool = False,
    loss_fn: LossFn | None = None,
) -> dict[str, Any]:
    """Loss, overall accuracy, mIoU and macro-F1 of ``model`` (eval mode) on ``dataset``;
    ignore pixels are excluded. For hierarchical models the finest (last) level is scored.
    ``num_classes`` defaults to the logits' channel count."""
    dev = resolve_device(device) if isinstance(device, str) else device
    model.to(dev).eval()
    cfg = SegmentationConfig(batch_size=batch_size, ignore_index=ignore_index, augment=False)
    crit = loss_fn or _Loss(cfg, dev)
    use_amp = amp and dev.type == "cuda"
    loader = _loader(dataset, cfg, False, 0, dev)
    cm: Tensor | None = None
    loss_sum, n = 0.0, 0
    for inputs, labels in tqdm(loader, desc="evaluating", unit="batch", file=sys.stderr,
                               disable=not progress, leave=False):
        x, y = _to_device(inputs, dev), labels.to(dev)
        with _autocast(dev, use_amp):
            out = model(x)
        loss_sum += float(crit(out, y)) * len(y)
        n += len(y)
        outs = _levels(out)
        fine = _fit_size(outs[-1].float(), tuple(y.shape[-2:]))
        yf = _label_levels(y, len(outs))[-1]
        k = num_classes or fine.shape[1]
        part = confusion_matrix(fine.argmax(1), yf, k, ignore_index)
        cm = part if cm is None else cm + part
    if cm is None:
        raise ModelError("no samples to evaluate")
    scores = segmentation_scores(cm)
    scores["loss"] = loss_sum / max(n, 1)
    scores["confusion_matrix"] = cm.tolist()
    return scores


def _save(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _state_cpu(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def train_segmentation(
    model: nn.Module,
    train_dataset: Any,
    val_dataset: Any = None,
    *,
    config: SegmentationConfig | Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    loss_fn: LossFn | None = None,
    extra_state: Mapping[str, Any] | None = None,
) -> SegmentationResult:
    """Train ``model`` for per-pixel classification (see the module doc).

    ``stop_after`` ends this call after that many epochs (a time budget): with ``out_dir``
    the run continues later with ``resume=True``, and ends exactly as an uninterrupted run
    would. ``loss_fn(outputs, labels)`` replaces the cross-entropy. ``extra_state`` is
    stored in every checkpoint (e.g. class names, model arguments, normalisation).
    """
    cfg = config if isinstance(config, SegmentationConfig) else \
        SegmentationConfig.from_dict(config)
    device = resolve_device(cfg.device)
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if len(train_dataset) == 0:
        raise ModelError("the training dataset is empty")
    model.to(device)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)
    steps_per_epoch = math.ceil(len(train_dataset) / cfg.batch_size) - int(
        _drops_last(len(train_dataset), cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    warmup = min(cfg.warmup_iters, total // 5)
    floor = min(cfg.min_lr / cfg.lr, 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(it, total, warmup, cfg.warmup_start, floor))
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    crit = loss_fn or _Loss(cfg, device)

    start_epoch, history = 0, []
    best_score, best_epoch = -math.inf, 0
    if out is not None and resume and (out / LAST).is_file():
        ckpt = torch.load(out / LAST, map_location="cpu", weights_only=False)
        old = ckpt.get("config", {})
        changed = [k for k in ("batch_size", "lr", "seed") if old.get(k) != getattr(cfg, k)]
        if changed:
            raise ModelError(f"cannot resume from {out / LAST}: {changed} differ from the "
                             "checkpoint's config (use resume=False or another out_dir)")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        start_epoch = int(ckpt["epoch"])
        history = list(ckpt.get("history", []))
        best_score = float(ckpt.get("best_score", -math.inf))
        best_epoch = int(ckpt.get("best_epoch", 0))
    resumed_from = start_epoch
    has_val = val_dataset is not None and len(val_dataset) > 0
    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    best_state = None

    for epoch in range(start_epoch + 1, end_epoch + 1):
        t0 = time.perf_counter()
        seed = _epoch_seed(cfg.seed, epoch)
        torch.manual_seed(seed)  # dropout / drop-path of this epoch
        aug_gen = torch.Generator().manual_seed(seed + 1)
        mix_gen = torch.Generator().manual_seed(seed + 2)  # CutMix on/off keeps the flips
        model.train()
        loss_sum, n, correct, counted = 0.0, 0, 0, 0
        loader = _loader(train_dataset, cfg, True, epoch, device)
        bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", file=sys.stderr,
                   disable=not progress, leave=False)
        for inputs, labels in bar:
            if cfg.augment:
                inputs, labels = augment_batch(inputs, labels, aug_gen)
            if cfg.cutmix > 0:
                inputs, labels = cutmix_batch(inputs, labels, mix_gen, cfg.cutmix,
                                              cfg.cutmix_ratio)
            x, y = _to_device(inputs, device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            with _autocast(device, use_amp):
                outputs = model(x)
            loss = crit(outputs, y)
            scaler.scale(loss).backward()
            if cfg.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            with torch.no_grad():
                outs = _levels(outputs)
                yf = _label_levels(y, len(outs))[-1]
                pred = _fit_size(outs[-1].float(), tuple(yf.shape[-2:])).argmax(1)
                keep = yf != cfg.ignore_index
                correct += int((pred[keep] == yf[keep]).sum())
                counted += int(keep.sum())
            loss_sum += float(loss.detach()) * len(y)
            n += len(y)
            bar.set_postfix(loss=f"{loss_sum / n:.4f}")
        bar.close()
        record: dict[str, float] = {
            "epoch": epoch, "loss": loss_sum / n,
            "train_accuracy": correct / counted if counted else math.nan,
            "lr": float(optimizer.param_groups[0]["lr"]),
        }
        improved = False
        if has_val:
            scores = evaluate_segmentation(model, val_dataset, batch_size=cfg.batch_size,
                                           device=device, ignore_index=cfg.ignore_index,
                                           amp=cfg.amp, loss_fn=crit)
            for key in ("loss", "overall_accuracy", "miou", "macro_f1"):
                record[f"val_{key}"] = scores[key]
            score = scores[cfg.monitor]
            if not math.isnan(score) and score > best_score:
                best_score, best_epoch, improved = score, epoch, True
        elif -record["loss"] > best_score:  # no validation data: lowest training loss
            best_score, best_epoch = -record["loss"], epoch
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        if improved and (out is not None or cfg.restore_best):
            best_state = _state_cpu(model)
            if out is not None:
                _save(out / BEST, {"model": best_state, "epoch": epoch, "metrics": record,
                                   "config": cfg.to_dict(), **dict(extra_state or {})})
        if out is not None and (epoch % cfg.checkpoint_every == 0 or epoch == end_epoch):
            _save(out / LAST, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "epoch": epoch, "rng": _rng_state(), "config": cfg.to_dict(),
                "history": history, "best_score": best_score, "best_epoch": best_epoch,
                **dict(extra_state or {}),
            })
        if out is not None:
            write_json(out / HISTORY, {"config": cfg.to_dict(), "best_epoch": best_epoch,
                                       "history": history})
        if progress:
            msg = " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch")
            print(f"epoch {epoch}: {msg}", file=sys.stderr)
    epochs_done = max(end_epoch, start_epoch)
    if cfg.restore_best and has_val and epochs_done == cfg.epochs:
        if best_state is None and out is not None and (out / BEST).is_file():
            best_state = torch.load(out / BEST, map_location="cpu", weights_only=False)["model"]
        if best_state is not None:
            model.load_state_dict(best_state)
    return SegmentationResult(history=history, epochs_done=epochs_done, best_epoch=best_epoch,
                              best_score=best_score, out_dir=out, device=str(device),
                              resumed_from=resumed_from)

