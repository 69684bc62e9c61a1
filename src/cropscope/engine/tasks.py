"""Lightning tasks: what each model family learns, and how.

- :class:`ClassificationTask`: pixel and patch classifiers (every deep model of the
  registry, their cascade heads, priors as a second input): Adam, optional exponential
  learning-rate decay per epoch, class-balanced cross-entropy per level, a batch
  augmentation, validation macro-F1 of the finest level or the mean over levels
  (``select_on``) after every epoch, the best epoch's weights kept, patience; with a
  checkpoint folder, the resume state after every epoch (safe files, first process only).
- :class:`SegmentationTask`: per-pixel segmentation (AgriFM, H2Crop, supervised
  pretraining): the recipe of :mod:`cropscope.engine.segmentation` (AdamW without decay on
  1-D parameters, warm-up + cosine per iteration, AMP and GradScaler on CUDA, flips and 90°
  rotations, CutMix, per-level cross-entropy or a custom loss), per-epoch seeds, safe
  checkpoints written by the first process only.

Both optimise manually (one ``backward`` and ``step`` per batch, nothing logged per step), so
Lightning adds no per-step work beyond its loop; under DDP the gradients are averaged in
``backward`` and the validation counts are summed over processes at the epoch's end.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn

from cropscope.engine.checkpoints import (
    BEST_FILE,
    HISTORY_FILE,
    rng_state,
    write_last,
    write_weights,
)
from cropscope.engine.recipe import (
    SELECT_ON,
    AugmentFn,
    LossFn,
    SegmentationConfig,
    SegmentationLoss,
    _fit_size,
    _label_levels,
    _levels,
    augment_batch,
    cutmix_batch,
    epoch_seed,
    f1_from_confusion,
    lr_factor,
    reference_fscore,
    segmentation_scores,
    warmup_length,
)
from cropscope.engine.runner import report_epoch
from cropscope.errors import ModelError
from cropscope.io import write_json

__all__ = ["ClassificationTask", "SegmentationTask"]

#: added per process rank to the seeds of a multi-process run (rank 0 keeps the run's seeds)
_RANK_STRIDE = 104_729


def _state_cpu(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _sync_buffers(trainer: L.Trainer, module: nn.Module) -> None:
    """Copy the first process's buffers (batch-norm running statistics) to the others.

    DDP averages gradients, so parameters stay equal, but each process updates its running
    statistics from its own batches after the last broadcast: without this, processes would
    validate, select and save different statistics.
    """
    if trainer.world_size == 1:
        return
    import torch.distributed as dist

    for buf in module.buffers():
        dist.broadcast(buf.data, src=0)


def _optimizer(task: L.LightningModule) -> LightningOptimizer:
    """The task's one optimizer (Lightning's wrapper, which steps through the precision
    plugin); the tasks optimise manually."""
    opt = task.optimizers()
    if not isinstance(opt, LightningOptimizer):
        raise ModelError("a cropscope task trains with exactly one optimizer")
    return opt


def _sum_over_processes(trainer: L.Trainer, values: list[Tensor]) -> list[Tensor]:
    """Element-wise sums over every process (a no-op in a single process)."""
    if trainer.world_size == 1:
        return values
    return [trainer.strategy.reduce(v, reduce_op="sum") for v in values]


# =============================================================================== classification

class ClassificationTask(L.LightningModule):
    """Supervised classification of ``net`` (inputs in its layout; see the module doc).

    ``class_weights``: one balanced weight vector per level; ``level_weights``: loss weight
    per level (hierarchical nets return one logits tensor per level); ``gen``: the generator
    of the batch augmentation (shared with the data order in a single process).
    """

    def __init__(self, net: nn.Module, *, class_weights: Sequence[np.ndarray],
                 level_weights: Sequence[float], multi: bool, lr: float, weight_decay: float,
                 lr_decay: float | None = None, augment_fn: AugmentFn | None = None,
                 gen: torch.Generator | None = None, patience: int | None = None,
                 select_on: str = "finest", seed: int = 0,
                 checkpoint: Path | None = None, resume: Mapping[str, Any] | None = None,
                 best_state: dict[str, Tensor] | None = None,
                 extra_state: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if select_on not in SELECT_ON:
            raise ModelError(f"select_on must be one of {SELECT_ON}, got {select_on!r}")
        self.net = net
        self.automatic_optimization = False
        self.class_weights = [torch.as_tensor(w, dtype=torch.float32) for w in class_weights]
        self.level_weights = [float(w) for w in level_weights]
        self.multi, self.lr, self.weight_decay = multi, float(lr), float(weight_decay)
        self.lr_decay, self.augment_fn, self.patience = lr_decay, augment_fn, patience
        self.gen = gen if gen is not None else torch.Generator().manual_seed(seed)
        self.select_on, self.seed = select_on, seed
        self.sizes = [len(w) for w in self.class_weights]
        self.scheduler: Any = None
        self.loss_fns: list[nn.CrossEntropyLoss] = []
        # results
        self.history: list[dict[str, float]] = []
        self.best_score, self.best_epoch = -math.inf, 0
        self.best_state: dict[str, Tensor] | None = None
        self._since_best = 0
        self._loss_sum: Tensor | None = None
        self._seen = 0
        self._cms: list[Tensor | None] = []
        # checkpointing: ``resume`` is the state read from ``checkpoint`` (None: fresh)
        self.checkpoint, self.resume = checkpoint, resume
        self.extra_state = dict(extra_state or {})
        self.start_epoch = 0
        if resume is not None:
            self.start_epoch = int(resume["epoch"])
            self.history = [dict(r) for r in resume["history"]]
            self.best_score = float(resume.get("best_score", -math.inf))
            self.best_epoch = int(resume.get("best_epoch", 0))
            self._since_best = int(resume.get("since_best", 0))
            self.best_state = best_state

    # -------------------------------------------------------------------- set-up
    def configure_optimizers(self) -> Any:
        optimiser = torch.optim.Adam(self.net.parameters(), lr=self.lr,
                                     weight_decay=self.weight_decay)
        if self.lr_decay is not None:
            self.scheduler = torch.optim.lr_scheduler.ExponentialLR(
                optimiser, gamma=float(self.lr_decay))
        if self.resume is not None:
            optimiser.load_state_dict(self.resume["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(self.resume["scheduler"])
        return optimiser

    def on_fit_start(self) -> None:
        self.loss_fns = [nn.CrossEntropyLoss(weight=w.to(self.device), ignore_index=-1)
                         for w in self.class_weights]
        if self.trainer.world_size > 1:  # other dropout and augmentation draws per process
            rank = self.trainer.global_rank
            torch.manual_seed(self.seed + _RANK_STRIDE * rank)
            self.gen = torch.Generator().manual_seed(self.seed + _RANK_STRIDE * (rank + 1))

    def forward(self, x: Tensor, extra: Tensor | None = None) -> Any:
        return self.net(x) if extra is None else self.net(x, extra)

    # -------------------------------------------------------------------- training
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.augment_fn is not None and self.trainer.training:
            x, y, e = batch
            return self.augment_fn(x, self.gen), y, e
        return batch

    def _loss(self, out: Any, y: Tensor) -> Tensor:
        if not self.multi:
            return self.loss_fns[0](out, y)
        total, weight = out[0].new_zeros(()), 0.0
        for k, (fn, w) in enumerate(zip(self.loss_fns, self.level_weights, strict=True)):
            if w and (y[:, k] >= 0).any():
                total = total + w * fn(out[k], y[:, k])
                weight += w
        # a weighted mean, so the gradient scale does not grow with the number of levels
        return total / weight if weight else total

    def on_train_epoch_start(self) -> None:
        self.net.train()
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._seen = 0

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y, e = batch
        opt = _optimizer(self)
        opt.zero_grad(set_to_none=True)
        loss = self._loss(self(x, e), y)
        self.manual_backward(loss)
        opt.step()
        assert self._loss_sum is not None
        self._loss_sum += loss.detach().double() * len(y)
        self._seen += len(y)

    # -------------------------------------------------------------------- validation
    def _scored_levels(self) -> list[int]:
        n = len(self.sizes)
        return list(range(n)) if self.multi and self.select_on == "mean" else [n - 1]

    def on_validation_epoch_start(self) -> None:
        _sync_buffers(self.trainer, self.net)
        self._cms = [None] * len(self.sizes)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, e = batch
        out = self(x, e)
        outs = list(out) if isinstance(out, list | tuple) else [out]
        ys = [y[:, k] for k in range(y.shape[1])] if y.ndim == 2 else [y]
        for k in self._scored_levels():
            yk = ys[k] if self.multi else ys[-1]
            keep = yk >= 0
            size = self.sizes[k]
            pred = outs[k if self.multi else -1].argmax(1)
            cm = torch.bincount(yk[keep] * size + pred[keep], minlength=size * size)
            prev = self._cms[k]
            self._cms[k] = cm if prev is None else prev + cm

    # -------------------------------------------------------------------- epoch end
    def on_train_epoch_end(self) -> None:
        _sync_buffers(self.trainer, self.net)
        if self.scheduler is not None:
            self.scheduler.step()
        assert self._loss_sum is not None
        seen = torch.tensor(float(self._seen), dtype=torch.float64, device=self.device)
        loss_sum, seen = _sum_over_processes(self.trainer, [self._loss_sum, seen])
        epoch = self.start_epoch + self.current_epoch + 1
        record: dict[str, float] = {"epoch": float(epoch),
                                    "loss": float(loss_sum) / float(seen)}
        validated = any(cm is not None for cm in self._cms)
        if validated:
            levels = self._scored_levels()
            cms = _sum_over_processes(self.trainer, [
                cm if (cm := self._cms[k]) is not None
                else torch.zeros(self.sizes[k] ** 2, dtype=torch.int64, device=self.device)
                for k in levels])
            scores = {k: f1_from_confusion(cm.cpu().numpy().reshape(self.sizes[k], -1))
                      for k, cm in zip(levels, cms, strict=True)}
            fine = len(self.sizes) - 1
            f1, acc = scores[fine]
            record.update(val_macro_f1=f1, val_accuracy=acc)
            score = f1
            if len(levels) > 1:
                score = float(np.mean([scores[k][0] for k in levels]))
                record["val_macro_f1_mean"] = score
            if score > self.best_score:
                self.best_score, self.best_epoch, self._since_best = score, epoch, 0
                self.best_state = _state_cpu(self.net)
            else:
                self._since_best += 1
            self._cms = []
        self.history.append(record)
        report_epoch(self.trainer, {
            "loss": f"{record['loss']:.4f}",
            "val_f1": f"{record.get('val_macro_f1', math.nan):.4f}"})
        stop = validated and self.patience is not None and self._since_best >= self.patience
        if stop:
            self.trainer.should_stop = True
        if self.checkpoint is not None:
            self._write_checkpoint(epoch, stopped=stop, improved=self.best_epoch == epoch)

    def _write_checkpoint(self, epoch: int, *, stopped: bool, improved: bool) -> None:
        """``best.safetensors`` (when this epoch improved) and ``last.*`` (always) in the
        checkpoint folder; every process waits until the first has written them."""
        out = self.checkpoint
        assert out is not None
        if self.trainer.is_global_zero:
            if improved and self.best_state is not None:
                write_weights(out / BEST_FILE, self.best_state, {"epoch": epoch})
            opt = _optimizer(self).optimizer
            rng = rng_state()
            rng["generator"] = self.gen.get_state()
            write_last(out, {
                "model": self.net.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": {} if self.scheduler is None else self.scheduler.state_dict(),
                "scaler": {}, "epoch": epoch, "rng": rng, "history": self.history,
                "best_score": self.best_score, "best_epoch": self.best_epoch,
                "since_best": self._since_best, "stopped": stopped,
                "config": self.extra_state,
            })
        if self.trainer.world_size > 1:
            self.trainer.strategy.barrier("checkpoint written")


# ================================================================================ segmentation

class SegmentationTask(L.LightningModule):
    """Per-pixel segmentation of ``net`` with the recipe of ``cfg`` (see the module doc).

    ``steps_per_epoch`` sizes the learning-rate schedule; ``start_epoch`` / ``end_epoch``:
    epochs already done and the last epoch of this fit; ``resume``: the optimiser,
    scheduler and scaler states of ``last.json`` (None: a fresh run); ``out_dir``: where
    the first process writes ``best.safetensors``, ``last.*`` and ``history.json``.
    """

    def __init__(self, net: nn.Module, cfg: SegmentationConfig, *, steps_per_epoch: int,
                 start_epoch: int = 0, end_epoch: int | None = None,
                 loss_fn: LossFn | None = None, out_dir: Path | None = None,
                 history: Sequence[dict[str, float]] = (), best_score: float = -math.inf,
                 best_epoch: int = 0, resume: Mapping[str, Any] | None = None,
                 extra_state: Mapping[str, Any] | None = None, progress: bool = False,
                 keep_best: bool = False) -> None:
        super().__init__()
        self.net = net
        self.automatic_optimization = False
        self.cfg = cfg
        self.loss_fn: LossFn = loss_fn or SegmentationLoss(cfg)
        self.total = cfg.epochs * steps_per_epoch
        self.warmup = warmup_length(self.total, cfg.warmup_iters, cfg.warmup_cap)
        self.floor = min(cfg.min_lr / cfg.lr, 1.0)
        self.start_epoch = start_epoch
        self.end_epoch = cfg.epochs if end_epoch is None else end_epoch
        self.out_dir, self.resume, self.progress = out_dir, resume, progress
        self.extra_state = dict(extra_state or {})
        self.keep_best = keep_best or cfg.restore_best
        self.history: list[dict[str, float]] = list(history)
        self.best_score, self.best_epoch = best_score, best_epoch
        self.best_state: dict[str, Tensor] | None = None
        self.scheduler: Any = None
        self.scaler: torch.amp.GradScaler | None = None
        self.use_amp = False
        self._aug_gen = torch.Generator()
        self._mix_gen = torch.Generator()
        self._t0 = 0.0
        self._acc: list[Tensor] = []
        self._val: list[Tensor | None] = []
        self._val_loss: Tensor | None = None

    @property
    def epoch(self) -> int:
        """The run's 1-based epoch being trained."""
        return self.start_epoch + self.current_epoch + 1

    # -------------------------------------------------------------------- set-up
    def configure_optimizers(self) -> Any:
        cfg = self.cfg
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.net.named_parameters():
            if not p.requires_grad:
                continue
            if cfg.decay_all or not (p.ndim <= 1 or name.endswith(".bias")):
                decay.append(p)
            else:
                no_decay.append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
        if no_decay:  # decay_all: one group, as the references' OptimWrapper
            groups.append({"params": no_decay, "weight_decay": 0.0})
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
        total, warmup, start, floor = self.total, self.warmup, cfg.warmup_start, self.floor
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda it: lr_factor(it, total, warmup, start, floor))
        if self.resume is not None:
            optimizer.load_state_dict(self.resume["optimizer"])
            self.scheduler.load_state_dict(self.resume["scheduler"])
        return optimizer

    def on_fit_start(self) -> None:
        self.use_amp = self.cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)
        if self.resume is not None and self.resume.get("scaler"):
            self.scaler.load_state_dict(dict(self.resume["scaler"]))

    def _autocast(self) -> Any:
        return torch.autocast(device_type=self.device.type, dtype=torch.float16,
                              enabled=self.use_amp)

    def forward(self, inputs: Mapping[str, Tensor]) -> Any:
        return self.net({k: v for k, v in inputs.items() if isinstance(v, Tensor)})

    # -------------------------------------------------------------------- training
    def on_train_epoch_start(self) -> None:
        self._t0 = time.perf_counter()
        seed = epoch_seed(self.cfg.seed, self.epoch)
        if self.trainer.world_size > 1:
            seed += _RANK_STRIDE * self.trainer.global_rank
        torch.manual_seed(seed)  # dropout / drop-path of this epoch
        self._aug_gen = torch.Generator().manual_seed(seed + 1)
        self._mix_gen = torch.Generator().manual_seed(seed + 2)  # CutMix on/off keeps flips
        self.net.train()
        z = torch.zeros((), dtype=torch.float64, device=self.device)
        self._acc = [z.clone(), z.clone(), z.clone(), z.clone()]  # loss, n, correct, counted

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not self.trainer.training:
            return batch
        inputs, labels = batch
        if self.cfg.augment:
            inputs, labels = augment_batch(inputs, labels, self._aug_gen,
                                           self.cfg.flip_p, self.cfg.rotate_p)
        if self.cfg.cutmix > 0:
            inputs, labels = cutmix_batch(inputs, labels, self._mix_gen, self.cfg.cutmix,
                                          self.cfg.cutmix_ratio)
        return inputs, labels

    def training_step(self, batch: Any, batch_idx: int) -> None:
        inputs, y = batch
        opt = _optimizer(self).optimizer
        scaler = self.scaler
        assert scaler is not None
        opt.zero_grad(set_to_none=True)
        with self._autocast():
            outputs = self(inputs)
        loss = self.loss_fn(outputs, y)
        self.manual_backward(scaler.scale(loss))
        if self.cfg.grad_clip is not None:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        self.scheduler.step()
        with torch.no_grad():
            outs = _levels(outputs)
            yf = _label_levels(y, len(outs))[-1]
            pred = _fit_size(outs[-1].float(), tuple(yf.shape[-2:])).argmax(1)
            keep = yf != self.cfg.ignore_index
            acc = self._acc
            acc[0] += loss.detach().double() * len(y)
            acc[1] += len(y)
            acc[2] += (pred[keep] == yf[keep]).sum()
            acc[3] += keep.sum()

    # -------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        _sync_buffers(self.trainer, self.net)
        self._val = []
        self._val_loss = torch.zeros(2, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        inputs, y = batch
        with self._autocast():
            out = self(inputs)
        assert self._val_loss is not None
        self._val_loss[0] += self.loss_fn(out, y).detach().double() * len(y)
        self._val_loss[1] += len(y)
        outs = _levels(out)
        ys = _label_levels(y, len(outs))
        levels = range(len(outs)) if self.cfg.select_on == "mean" else [len(outs) - 1]
        if not self._val:
            self._val = [None] * len(outs)
        for i in levels:
            logits = _fit_size(outs[i].float(), tuple(ys[i].shape[-2:]))
            k = logits.shape[1]
            keep = (ys[i] != self.cfg.ignore_index) & (ys[i] >= 0) & (ys[i] < k)
            cm = torch.bincount(ys[i][keep].long() * k + logits.argmax(1)[keep].long(),
                                minlength=k * k)
            prev = self._val[i]
            self._val[i] = cm if prev is None else prev + cm

    def _val_scores(self) -> dict[str, float] | None:
        """The summed validation counts → the record's ``val_*`` keys and the score that
        selects the best epoch (``None`` when nothing was validated)."""
        if self._val_loss is None:
            return None
        parts = [self._val_loss] + [c for c in self._val if c is not None]
        summed = _sum_over_processes(self.trainer, parts)
        loss = summed[0]
        cms = [c.cpu() for c in summed[1:]]
        self._val_loss, self._val = None, []
        if float(loss[1]) == 0 or not cms:
            raise ModelError("no samples to evaluate")
        squares = [cm.reshape(math.isqrt(cm.numel()), -1) for cm in cms]
        per_level = [segmentation_scores(cm) for cm in squares]
        fine = per_level[-1]
        out = {"val_loss": float(loss[0]) / max(float(loss[1]), 1.0)}
        for key in ("overall_accuracy", "miou", "macro_f1"):
            out[f"val_{key}"] = fine[key]
        monitor = self.cfg.monitor
        if monitor == "mfscore":
            vals = [reference_fscore(cm.numpy()) for cm in squares]
            out["val_mfscore"] = vals[-1]
        else:
            vals = [s[monitor] for s in per_level]
        if len(per_level) > 1:  # select_on == "mean"
            out[f"val_{monitor}_mean"] = float(np.mean(vals))
            out["_score"] = out[f"val_{monitor}_mean"]
        else:
            out["_score"] = vals[-1]
        return out

    # -------------------------------------------------------------------- epoch end
    def on_train_epoch_end(self) -> None:
        _sync_buffers(self.trainer, self.net)
        epoch, cfg = self.epoch, self.cfg
        loss_sum, n, correct, counted = (float(v) for v in
                                         _sum_over_processes(self.trainer, self._acc))
        opt = _optimizer(self).optimizer
        record: dict[str, float] = {
            "epoch": epoch, "loss": loss_sum / n,
            "train_accuracy": correct / counted if counted else math.nan,
            "lr": float(opt.param_groups[0]["lr"]),
        }
        improved = False
        val = self._val_scores()
        if val is not None:
            score = val.pop("_score")
            record.update(val)
            if not math.isnan(score) and score > self.best_score:
                self.best_score, self.best_epoch, improved = score, epoch, True
        elif -record["loss"] > self.best_score:  # no validation data: lowest training loss
            self.best_score, self.best_epoch = -record["loss"], epoch
        record["seconds"] = time.perf_counter() - self._t0
        self.history.append(record)
        out, zero = self.out_dir, self.trainer.is_global_zero
        if improved and (out is not None or self.keep_best):
            self.best_state = _state_cpu(self.net)
            if out is not None and zero:
                write_weights(out / BEST_FILE, self.best_state,
                              {"epoch": epoch, "metrics": record, "config": cfg.to_dict(),
                               **self.extra_state})
        if out is not None and zero:
            if epoch % cfg.checkpoint_every == 0 or epoch == self.end_epoch:
                write_last(out, {
                    "model": self.net.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                    "epoch": epoch, "rng": rng_state(), "config": cfg.to_dict(),
                    "history": self.history, "best_score": self.best_score,
                    "best_epoch": self.best_epoch, "extra": self.extra_state,
                })
            write_json(out / HISTORY_FILE, {"config": cfg.to_dict(),
                                            "best_epoch": self.best_epoch,
                                            "history": self.history})
        if self.progress and zero:
            msg = " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch")
            print(f"epoch {epoch}: {msg}", file=sys.stderr)
        report_epoch(self.trainer, {"loss": f"{record['loss']:.4f}"})
        if out is not None and self.trainer.world_size > 1 and epoch == self.end_epoch:
            self.trainer.strategy.barrier("checkpoint written")
