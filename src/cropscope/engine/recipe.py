"""Building blocks of the training recipes, in plain torch (no Lightning import).

Shared by the Lightning tasks (:mod:`cropscope.engine.tasks`), the public training
functions (:mod:`cropscope.engine.trainer`, :mod:`cropscope.engine.segmentation`) and the
evaluation code:

- classification: class-balanced weights, batch augmentation type, the per-epoch index
  batches (a lone last sample folded into the previous batch), macro-F1 from a confusion
  matrix;
- segmentation (the AgriFM / H2Crop recipe): :class:`SegmentationConfig`, the warm-up +
  cosine schedule, flips and 90° rotations, CutMix ("CropCutup"), the per-level
  cross-entropy, confusion matrices and scores, epoch seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cropscope.errors import ModelError

__all__ = [
    "OFFICIAL_RECIPES",
    "AugmentFn",
    "LossFn",
    "SegmentationConfig",
    "SegmentationLoss",
    "augment_batch",
    "balanced_class_weights",
    "batches_per_epoch",
    "check_segmentation_options",
    "confusion_matrix",
    "cutmix_batch",
    "epoch_permutation",
    "epoch_seed",
    "f1_from_confusion",
    "index_batches",
    "lr_factor",
    "official_recipe",
    "reference_fscore",
    "resolve_device",
    "segmentation_scores",
    "shard_batches",
    "warmup_length",
]

#: A batch-level augmentation: ``(x_batch, generator) -> x_batch`` (same shape, on CPU).
AugmentFn = Callable[[Tensor, torch.Generator], Tensor]
#: ``(outputs, labels) -> scalar loss``: replaces the cross-entropy (e.g. pretraining)
LossFn = Callable[[Any, Tensor], Tensor]
#: how the best epoch is chosen for hierarchical outputs
SELECT_ON = ("finest", "mean")
#: validation scores that may select the best epoch
MONITORS = ("macro_f1", "miou", "overall_accuracy", "mfscore")


# ---------------------------------------------------------------------------- classification

def balanced_class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """scikit-learn's 'balanced' weights ``N / (K * n_c)`` over the ``K`` classes present in
    ``y``; classes absent from ``y`` get weight 0."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes, dtype=np.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def f1_from_confusion(cm: np.ndarray) -> tuple[float, float]:
    """Macro-F1 and accuracy of a ``[K, K]`` confusion matrix (rows truth), as scikit-learn's
    ``f1_score(average="macro", zero_division=0)``: the mean over classes that are true or
    predicted at least once of ``2 tp / (n_true + n_predicted)``. NaN for an empty matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    if total == 0:
        return math.nan, math.nan
    tp = np.diag(cm)
    truth, predicted = cm.sum(1), cm.sum(0)
    seen = (truth + predicted) > 0
    f1 = 2 * tp[seen] / (truth[seen] + predicted[seen])
    return float(np.mean(f1)), float(tp.sum() / total)


def index_batches(order: Tensor, batch_size: int, lone: str = "fold") -> list[Tensor]:
    """``order`` cut into batches of ``batch_size``. A last batch of a single sample (batch
    norm cannot train on it) is folded into the previous batch (``lone="fold"``) or dropped
    (``"drop"``); a lone sample that is the whole set is kept."""
    batches = list(torch.split(order, batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        last = batches.pop()
        if lone == "fold":
            batches[-1] = torch.cat([batches[-1], last])
    return batches


def batches_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    """How many batches :func:`shard_batches` gives each of ``world`` processes for ``n``
    samples (the same with ``lone="fold"`` and ``"drop"``)."""
    per = n if world == 1 else n // world
    full, rest = divmod(per, batch_size)
    if rest == 1 and full >= 1:
        return full  # folded or dropped
    return full + (rest > 0)


def shard_batches(order: Tensor, batch_size: int, rank: int, world: int,
                  lone: str = "fold") -> list[Tensor]:
    """The batches of process ``rank`` of ``world`` for one epoch's sample ``order``.

    One process: :func:`index_batches`. Several: every process takes every ``world``-th
    sample, all trimmed to the same count (at most ``world - 1`` samples sit out this
    epoch, a different few each epoch), so every process runs the same number of steps.
    """
    if world == 1:
        return index_batches(order, batch_size, lone)
    per = len(order) // world
    return index_batches(order[rank::world][:per], batch_size, lone)


# ---------------------------------------------------------------------------- segmentation

def check_strategy(strategy: Any) -> None:
    """A :class:`ModelError` unless ``strategy`` is "auto" or one of Lightning's registered
    strategy names (Lightning raises a bare ``ValueError`` deep in the trainer)."""
    from lightning.pytorch.strategies import StrategyRegistry

    known = StrategyRegistry.available_strategies()
    if strategy != "auto" and strategy not in known:
        raise ModelError(f"unknown training strategy {strategy!r}; use 'auto' or one of "
                         f"Lightning's: {', '.join(sorted(known))}")  # fmt: skip


def check_segmentation_options(config: Mapping[str, Any] | None) -> None:
    """Check the values of user-given :class:`SegmentationConfig` options (``--set``,
    ``--epochs``...) by their declared types before the config is built: ``lr=abc`` or
    ``epochs=0`` is one :class:`~cropscope.errors.ModelError` (see
    :func:`cropscope.settings.check_options`); :meth:`SegmentationConfig.from_dict` runs it.
    Options of several kinds are left to ``from_dict``'s own checks."""
    from cropscope.settings import check_options

    plain = {f.name: f.default for f in fields(SegmentationConfig)
             if f.type in ("int", "float", "bool", "str")}
    check_options("segmentation", plain, dict(config or {}), error=ModelError)


@dataclass
class SegmentationConfig:
    """Hyper-parameters of :func:`train_segmentation` (defaults: AgriFM fine-tuning)."""

    epochs: int = 50
    batch_size: int = 4
    lr: float = 6e-5
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    #: linear warm-up iterations and its start factor; the factor reaches 1 on the last
    #: warm-up iteration (mmengine's ``LinearLR(begin=0, end=warmup_iters)``)
    warmup_iters: int = 1000
    warmup_start: float = 0.01
    #: cap the warm-up at this fraction of all iterations, so that short runs on small data
    #: leave it (None: no cap, as the references, which need a run longer than the warm-up)
    warmup_cap: float | None = 0.2
    #: final learning rate of the cosine decay
    min_lr: float = 1e-6
    ignore_index: int = -1
    #: weight decay on every parameter, norm gains and biases included (the references); False:
    #: only on weights of two or more dimensions
    decay_all: bool = False
    #: per-class loss weights (one list per level for hierarchical models)
    class_weights: list[float] | list[list[float]] | None = None
    #: loss weight of each hierarchy level (default: equal)
    level_weights: list[float] | None = None
    #: how the levels' losses combine: "mean" (weighted mean: the loss of a hierarchy is on
    #: the scale of one level) or "sum" (weighted sum, as the H2Crop reference)
    level_reduction: str = "mean"
    #: what each level's cross-entropy is averaged over: "labelled" pixels (``ignore_index``
    #: left out) or "all" pixels of the batch, ignored ones counting 0 (the AgriFM reference)
    loss_mean_over: str = "labelled"
    #: random flips and 90° rotations of every source and the label
    augment: bool = True
    #: per sample: probability of each flip (vertical, horizontal), and the probability of
    #: applying a rotation by k·90°, k drawn uniformly from 0–3 (1.0: always; the H2Crop
    #: reference's MapRotate: 0.5)
    flip_p: float = 0.5
    rotate_p: float = 1.0
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
    #: validation score that selects ``best.safetensors``: "macro_f1", "miou",
    #: "overall_accuracy" or "mfscore" (the references' mFscore: per-class F1 over the classes
    #: present in the validation truth, in percent rounded to 2 decimals; see
    #: :func:`reference_fscore`)
    monitor: str = "macro_f1"
    #: hierarchical models: that score on the finest level ("finest") or its mean over the
    #: levels ("mean", as the H2Crop reference)
    select_on: str = "finest"
    #: load the best validation epoch's weights into the model at the end
    restore_best: bool = False
    #: write ``last.safetensors`` / ``last.json`` every this many epochs (and always after the
    #: last epoch of a call); it holds the optimiser state too, about 3x the model size
    checkpoint_every: int = 1
    #: processes / accelerators per node (an int, a list of GPU indices, or "auto"); with
    #: several, ``batch_size`` is per process
    devices: int | str | list[int] = 1
    #: Lightning strategy: "auto" (one process), "ddp", "ddp_spawn", ...
    strategy: str = "auto"
    #: machines of a multi-node run (each with ``devices`` processes)
    num_nodes: int = 1

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SegmentationConfig:
        """Build from a (JSON) dict; unknown keys raise :class:`ModelError`."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"unknown segmentation option(s) {unknown}; known: {sorted(known)}")
        check_segmentation_options(data)
        for key in ("betas", "cutmix_ratio"):
            if key in data:
                data[key] = tuple(data[key])
        cfg = cls(**data)
        if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0 or cfg.checkpoint_every < 1:
            raise ModelError("epochs, batch_size, lr and checkpoint_every must be positive")
        if cfg.monitor not in MONITORS:
            raise ModelError(f"monitor must be one of {MONITORS}, got {cfg.monitor!r}")
        if cfg.level_reduction not in ("mean", "sum"):
            raise ModelError(f"level_reduction must be 'mean' or 'sum', got "
                             f"{cfg.level_reduction!r}")
        if cfg.loss_mean_over not in ("labelled", "all"):
            raise ModelError(f"loss_mean_over must be 'labelled' or 'all', got "
                             f"{cfg.loss_mean_over!r}")
        if cfg.warmup_iters < 0 or not 0.0 <= cfg.warmup_start <= 1.0:
            raise ModelError("warmup_iters must be >= 0 and warmup_start in [0, 1]")
        if cfg.warmup_cap is not None and not 0.0 < float(cfg.warmup_cap) <= 1.0:
            raise ModelError(f"warmup_cap must be in (0, 1] or None, got {cfg.warmup_cap!r}")
        for name in ("flip_p", "rotate_p"):
            if not 0.0 <= float(getattr(cfg, name)) <= 1.0:
                raise ModelError(f"{name} must be in [0, 1], got {getattr(cfg, name)!r}")
        if cfg.select_on not in SELECT_ON:
            raise ModelError(f"select_on must be one of {SELECT_ON}, got {cfg.select_on!r}")
        if int(cfg.num_nodes) < 1 or not isinstance(cfg.strategy, str):
            raise ModelError("num_nodes must be >= 1 and strategy a name")
        check_strategy(cfg.strategy)  # before a run folder is opened for it
        _check_cutmix(cfg.cutmix, cfg.cutmix_ratio)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        d["cutmix_ratio"] = list(self.cutmix_ratio)
        return d


#: The official fine-tuning recipes as :class:`SegmentationConfig` options, read from the
#: configurations of flyakon/AgriFM @ 13f476e2 (``configs/cropland_mapping.py``) and
#: flyakon/H2Crop @ d5a861ba (``configs/hyper_benefits/crops_S2*_jun.py``) and checked
#: against the ``optimizer`` / ``param_schedulers`` states of the official training
#: checkpoints (``tests/engine/test_official_recipe.py``). Both: AdamW (lr 6e-5, weight
#: decay 5e-4 on every parameter, one group), ``LinearLR`` from 1 % over 1000 iterations,
#: then ``CosineAnnealingLR`` to the end of the run, batch 4, validation every epoch and
#: the best ``mFscore`` kept (``CheckpointHook(save_best="mFscore", rule="greater")``),
#: AMP (``train.py --amp``), no gradient clipping.
OFFICIAL_RECIPES: dict[str, dict[str, Any]] = {
    # CropCEloss: cross-entropy with ignore index -1 averaged over all pixels; the training
    # pipeline has its flips and rotation commented out; 50 epochs; eta_min 1e-6
    "agrifm": {
        "epochs": 50, "batch_size": 4, "lr": 6e-5, "weight_decay": 5e-4,
        "betas": (0.9, 0.999), "warmup_iters": 1000, "warmup_start": 0.01,
        "warmup_cap": None, "min_lr": 1e-6, "decay_all": True, "ignore_index": -1,
        "loss_mean_over": "all", "level_reduction": "sum", "augment": False, "cutmix": 0.0,
        "monitor": "mfscore", "select_on": "finest", "restore_best": True, "amp": True,
        "grad_clip": None,
    },
    # CropBalanceloss(average=True) per level (mean over labelled pixels, background
    # included), the four summed; MapVerticalFlip / MapHorizontalFlip p = 0.5, MapRotate
    # p = 0.5 (k·90°, k uniform in 0-3); CropCutup p = 0.5, side ratio U(0.5, 1); 100
    # epochs; eta_min 6e-6; mFscore averaged over the four levels
    "h2crop": {
        "epochs": 100, "batch_size": 4, "lr": 6e-5, "weight_decay": 5e-4,
        "betas": (0.9, 0.999), "warmup_iters": 1000, "warmup_start": 0.01,
        "warmup_cap": None, "min_lr": 6e-6, "decay_all": True, "ignore_index": -1,
        "loss_mean_over": "labelled", "level_reduction": "sum", "augment": True,
        "flip_p": 0.5, "rotate_p": 0.5, "cutmix": 0.5, "cutmix_ratio": (0.5, 1.0),
        "monitor": "mfscore", "select_on": "mean", "restore_best": True, "amp": True,
        "grad_clip": None,
    },
}


def official_recipe(network: str, **overrides: Any) -> SegmentationConfig:
    """The official fine-tuning recipe of ``network`` ("agrifm" or "h2crop"; see
    :data:`OFFICIAL_RECIPES`) with ``overrides`` (e.g. ``epochs=2, device="cpu"``)."""
    key = network.split("-")[0].lower()
    if key not in OFFICIAL_RECIPES:
        raise ModelError(f"no official recipe for {network!r}; known: {sorted(OFFICIAL_RECIPES)}")
    return SegmentationConfig.from_dict({**OFFICIAL_RECIPES[key], **overrides})


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; a device the machine lacks or a name torch
    does not know is a :class:`ModelError`."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"unusable device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for but CUDA is not available")
    return dev


def warmup_length(total: int, warmup_iters: int, cap: float | None) -> int:
    """The warm-up iterations of a run of ``total`` iterations: ``warmup_iters``, at most
    ``cap`` of ``total`` (rounded down) when ``cap`` is set."""
    if cap is None:
        return int(warmup_iters)
    return min(int(warmup_iters), math.floor(total * float(cap) + 1e-9))


def lr_factor(it: int, total: int, warmup: int, start: float, floor: float) -> float:
    """Learning-rate multiplier at iteration ``it`` (0-based) of ``total``.

    Warm-up: linear from ``start`` at iteration 0 to 1 at iteration ``warmup - 1``, as
    mmengine's ``LinearLR(start_factor=start, begin=0, end=warmup)``. Then a cosine from 1
    at iteration ``warmup`` down to ``floor`` at iteration ``total``, as mmengine's
    ``CosineAnnealingLR(begin=warmup, eta_min=floor·lr)`` with the runner's default end
    (the last iteration trains at the cosine's value one step before ``floor``). Both are
    the references' schedules; the official training checkpoints' stored learning rates are
    reproduced in ``tests/engine/test_official_recipe.py``.
    """
    if warmup > 0 and it < warmup:
        if warmup == 1:
            return start
        return start + (1.0 - start) * it / (warmup - 1)
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
    inputs: dict[str, Tensor], labels: Tensor, gen: torch.Generator,
    flip_p: float = 0.5, rotate_p: float = 1.0,
) -> tuple[dict[str, Tensor], Tensor]:
    """Per sample, the same random flips and 90° rotation of every source (last two axes)
    and of the label.

    Each flip (rows, columns) happens with probability ``flip_p``; a rotation by k·90°, k
    uniform in 0–3, is applied with probability ``rotate_p`` (so with ``rotate_p = 0.5``, as
    the H2Crop reference's ``MapRotate``, a sample keeps its orientation with probability
    0.625). Rotations by 90°/270° only when every grid is square (else k·180°, k in 0–1).
    """
    square = all(v.shape[-1] == v.shape[-2] for v in inputs.values()) and \
        labels.shape[-1] == labels.shape[-2]
    out_x: dict[str, list[Tensor]] = {k: [] for k in inputs}
    out_y = []
    for b in range(labels.shape[0]):
        fh, fw = (torch.rand(2, generator=gen) < flip_p).tolist()
        r = int(torch.randint(0, 4 if square else 2, (1,), generator=gen))
        if rotate_p < 1.0 and float(torch.rand((), generator=gen)) >= rotate_p:
            r = 0
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


def reference_fscore(cm: np.ndarray | Tensor) -> float:
    """The references' ``mFscore`` of one level (mmseg's ``CropIoUMetric``), in percent.

    Per class: precision ``tp / (predicted + 1e-8)``, recall ``tp / truth`` and
    ``F = 2 P R / (P + R + 1e-8)``; classes absent from the truth have no recall and are
    left out of the mean (a class predicted but never true therefore costs nothing, unlike
    :func:`segmentation_scores`' macro-F1, which counts it as 0). The mean is multiplied by
    100 and rounded to 2 decimals, as the references log it; the best epoch is the first to
    exceed the best so far. Over several levels the references take the mean of these
    rounded values. NaN when no class is present.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    truth, predicted = cm.sum(1), cm.sum(0)
    present = truth > 0
    if not present.any():
        return math.nan
    precision = tp[present] / (predicted[present] + 1e-8)
    recall = tp[present] / truth[present]
    f = 2 * precision * recall / (precision + recall + 1e-8)
    return float(np.round(np.mean(f) * 100, 2))


def _levels(out: Any) -> list[Tensor]:
    return list(out) if isinstance(out, list | tuple) else [out]


def _label_levels(labels: Tensor, n: int) -> list[Tensor]:
    if n == 1:
        return [labels if labels.ndim == 3 else labels[:, -1]]
    if labels.ndim != 4 or labels.shape[1] != n:
        raise ModelError(f"the model returns {n} levels: labels must be [B, {n}, H, W], got "
                         f"{list(labels.shape)}")
    return [labels[:, i] for i in range(n)]


def _fit_size(logits: Tensor, size: tuple[int, ...]) -> Tensor:
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class SegmentationLoss:
    """Cross-entropy per level (ignore index, class weights), combined over the levels.

    Each level's loss is averaged over its labelled pixels (``loss_mean_over="labelled"``)
    or over all pixels, ignored ones counting 0 (``"all"``, the AgriFM reference's
    ``CropCEloss``); the levels are combined by a weighted mean (``level_reduction="mean"``)
    or sum (``"sum"``, the H2Crop reference, whose per-level losses mmengine adds up). With
    Adam(W) a constant factor on the loss changes the update only through ``eps``.
    """

    def __init__(self, cfg: SegmentationConfig, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.device = device
        cw = cfg.class_weights
        if cw is not None and cw and not isinstance(cw[0], list | tuple):
            cw = [cw]
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
            weight = None if self.class_weights is None else self.class_weights[i].to(o.device)
            if not (y != self.cfg.ignore_index).any():
                continue  # an all-ignored level adds nothing (CE would be NaN)
            if self.cfg.loss_mean_over == "all":
                ce = F.cross_entropy(o, y, weight=weight, ignore_index=self.cfg.ignore_index,
                                     reduction="sum") / float(y.numel())
            else:
                ce = F.cross_entropy(o, y, weight=weight, ignore_index=self.cfg.ignore_index)
            total = total + w * ce
        if self.cfg.level_reduction == "sum":
            return total
        return total / float(sum(lw))


#: the former name
_Loss = SegmentationLoss


def _to_device(inputs: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in inputs.items()
            if isinstance(v, Tensor)}


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` (1-based) of a run seeded ``seed``: shuffling, augmentation
    and dropout are seeded per epoch, so a resumed run repeats an uninterrupted one."""
    return (int(seed) * 1_000_003 + epoch * 7919) % 2**31


_epoch_seed = epoch_seed


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The sample order of epoch ``epoch``: a permutation drawn from a generator seeded with
    :func:`epoch_seed`, after two draws (the orders of the former loop, whose shuffling
    ``DataLoader`` iterator was created twice, each drawing a base seed first)."""
    gen = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    for _ in range(2):
        torch.empty((), dtype=torch.int64).random_(generator=gen)
    return torch.randperm(n, generator=gen)


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

