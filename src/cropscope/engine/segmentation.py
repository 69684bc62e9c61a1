"""Per-pixel segmentation training for patch time series (the AgriFM fine-tuning recipe).

Works with any ``nn.Module`` whose ``forward({source: [B, T, C, H, W]})`` returns logits
``[B, K, H, W]`` (or a list of them, one per hierarchy level, with labels ``[B, L, H, W]``),
and any map-style dataset yielding ``({source: [T, C, H, W]}, label)``, e.g.
:class:`~cropscope.data.readers.h5patches.H5PatchDataset`.

Training runs on the Lightning engine (:mod:`cropscope.engine.runner`) as a
:class:`~cropscope.engine.tasks.SegmentationTask`; ``devices`` / ``strategy`` /
``num_nodes`` in the config scale it out (``devices=2, strategy="ddp"``: two processes,
``batch_size`` per process; only the first writes files).

Default recipe (agrifm.md §6.3): AdamW (lr 6e-5, weight decay 5e-4), a linear warm-up from
1 % of the rate over 1000 iterations (capped at a fifth of the run, so short runs still reach
the peak rate) then cosine decay per iteration to 1e-6, cross-entropy with ``ignore_index``
(default -1), AMP (autocast + GradScaler) on CUDA and fp32 on CPU. Random flips and 90°
rotations are applied to every source and the label alike (the reference has them commented
out; set ``augment=False`` for its exact pipeline). ``cutmix`` (off by default; 0.5 in
H2Crop) then applies :func:`cutmix_batch` ("CropCutup"): a random square of a partner
sample is pasted into every input at the same footprint (each on its own grid, priors
included) and into the labels of every level.

:func:`official_recipe` (``"agrifm"``, ``"h2crop"``) gives the official fine-tuning recipes
exactly: weight decay on every parameter, an uncapped warm-up, the AgriFM loss averaged
over all pixels, the H2Crop levels summed and its rotation probability, the references'
``mFscore`` selecting the best epoch (docs/agrifm.md and docs/h2crop.md list each
difference from the defaults and its measured effect).

A final training batch of a single sample is dropped (batch norm cannot normalise one
value per channel; evaluation keeps every sample).

Every epoch (``checkpoint_every``) writes ``last.safetensors`` + ``last.json`` into
``out_dir`` (model, optimiser, scheduler, scaler, epoch, RNG states, config, history;
atomically, no pickle: :mod:`cropscope.engine.checkpoints`) and ``history.json``, and, with
validation data, ``best.safetensors`` (weights) when the monitored score improves.
``resume=True`` continues from ``last.*``: shuffling, augmentation and dropout are seeded per
epoch from ``seed``, so an interrupted and resumed run gives the same weights as an
uninterrupted one (on CPU; CUDA kernels may be non-deterministic).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from cropscope.engine.checkpoints import (
    BEST_FILE,
    HISTORY_FILE,
    LAST,
    has_last,
    read_last,
    read_weights,
    set_rng_state,
)
from cropscope.engine.recipe import (
    LossFn,
    SegmentationConfig,
    _autocast,
    _fit_size,
    _label_levels,
    _levels,
    _loader,
    _Loss,
    _to_device,
    augment_batch,
    batches_per_epoch,
    check_segmentation_options,
    confusion_matrix,
    cutmix_batch,
    lr_factor,
    official_recipe,
    resolve_device,
    segmentation_scores,
)
from cropscope.errors import ModelError

__all__ = [
    "BEST",
    "HISTORY",
    "LAST",
    "LossFn",
    "SegmentationConfig",
    "SegmentationResult",
    "augment_batch",
    "check_segmentation_options",
    "confusion_matrix",
    "cutmix_batch",
    "evaluate_segmentation",
    "lr_factor",
    "official_recipe",
    "resolve_device",
    "segmentation_scores",
    "train_segmentation",
]

#: ``best.safetensors``; ``LAST`` is the stem of ``last.safetensors`` + ``last.json``
BEST = BEST_FILE
HISTORY = HISTORY_FILE


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
    would. ``loss_fn(outputs, labels)`` replaces the cross-entropy. ``extra_state`` (JSON
    values) is stored in every checkpoint (e.g. class names, model arguments,
    normalisation).
    """
    from cropscope.engine.datamodules import PatchDataModule
    from cropscope.engine.runner import EngineOptions, build_trainer, root_device, run_fit
    from cropscope.engine.tasks import SegmentationTask

    cfg = config if isinstance(config, SegmentationConfig) else \
        SegmentationConfig.from_dict(config)
    device = resolve_device(cfg.device)
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    n_train = len(train_dataset)
    if n_train == 0:
        raise ModelError("the training dataset is empty")

    start_epoch, history = 0, []
    best_score, best_epoch = -math.inf, 0
    state = None
    if out is not None and resume and has_last(out):
        state = read_last(out)
        old = state["config"]
        changed = [k for k in ("batch_size", "lr", "seed") if old.get(k) != getattr(cfg, k)]
        if changed:
            raise ModelError(f"cannot resume from {out / LAST}.*: {changed} differ from the "
                             "checkpoint's config (use resume=False or another out_dir)")
        model.load_state_dict(state["model"])
        set_rng_state(state["rng"])
        start_epoch = int(state["epoch"])
        history = list(state["history"])
        best_score = float(state.get("best_score", -math.inf))
        best_epoch = int(state.get("best_epoch", 0))
    resumed_from = start_epoch
    has_val = val_dataset is not None and len(val_dataset) > 0
    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    epochs_done = max(end_epoch, start_epoch)
    best_state = None
    model.to(device)
    if end_epoch > start_epoch:
        options = EngineOptions(device=device, devices=cfg.devices, strategy=cfg.strategy,
                                num_nodes=cfg.num_nodes, progress=progress,
                                desc="segmentation")
        trainer = build_trainer(options, end_epoch - start_epoch, validate=has_val,
                                bar_total=cfg.epochs, bar_initial=start_epoch)
        world = trainer.world_size
        if n_train < world or (has_val and len(val_dataset) < world):
            raise ModelError(f"{n_train} training and {len(val_dataset) if has_val else 0} "
                             f"validation samples for {world} processes: each needs one")
        task = SegmentationTask(
            model, cfg, steps_per_epoch=batches_per_epoch(n_train, cfg.batch_size, world),
            start_epoch=start_epoch, end_epoch=end_epoch, loss_fn=loss_fn, out_dir=out,
            history=history, best_score=best_score, best_epoch=best_epoch, resume=state,
            extra_state=extra_state, progress=progress)
        data = PatchDataModule(train_dataset, val_dataset if has_val else None,
                               batch_size=cfg.batch_size, seed=cfg.seed,
                               num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                               offset=start_epoch, lone="drop")
        model.train()
        run_fit(trainer, task, data)
        device = root_device(trainer)
        model.to(device)
        history, best_state = task.history, task.best_state
        best_score, best_epoch = task.best_score, task.best_epoch
    if cfg.restore_best and has_val and epochs_done == cfg.epochs:
        if best_state is None and out is not None and (out / BEST).is_file():
            best_state, _ = read_weights(out / BEST)
        if best_state is not None:
            model.load_state_dict(best_state)
    return SegmentationResult(history=history, epochs_done=epochs_done, best_epoch=best_epoch,
                              best_score=best_score, out_dir=out, device=str(device),
                              resumed_from=resumed_from)
