"""A generic supervised training loop for the deep classifiers.

Adam on class-balanced cross-entropy, seeded mini-batches, validation macro-F1 after every
epoch, the weights of the best validation epoch kept, optional early stopping.

Hierarchical (multi-level) training uses the same loop: labels ``[N, L]`` (``-1`` where a
level is unknown), a module returning one logits tensor per level, one class-balanced
cross-entropy per level weighted by ``level_weights``; the model is selected on the finest
level's validation macro-F1. A module may take a second input (e.g. per-level priors),
given as ``extra_train``/``extra_val``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn
from tqdm.auto import tqdm

from cropscope.training.seeding import seed_everything

__all__ = ["TrainResult", "balanced_class_weights", "predict_logits", "train_classifier"]

#: A batch-level augmentation: ``(x_batch, generator) -> x_batch`` (same shape, on CPU).
AugmentFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class TrainResult:
    """Outcome of :func:`train_classifier`."""

    #: weights of the selected epoch (CPU tensors); already loaded into the module
    state_dict: dict[str, torch.Tensor]
    #: 1-based epoch whose weights were kept
    best_epoch: int
    #: validation macro-F1 of that epoch (NaN without validation data)
    best_val_macro_f1: float
    #: one entry per epoch run: ``epoch``, ``loss``, ``val_macro_f1``, ``val_accuracy``
    history: list[dict[str, float]] = field(default_factory=list)


def balanced_class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """scikit-learn's 'balanced' weights ``N / (K * n_c)`` over the ``K`` classes present in
    ``y``; classes absent from ``y`` get weight 0."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes, dtype=np.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def _as_tensor(x: np.ndarray | None) -> torch.Tensor | None:
    return None if x is None else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _call(module: nn.Module, xb: torch.Tensor, eb: torch.Tensor | None) -> Any:
    return module(xb) if eb is None else module(xb, eb)


@torch.inference_mode()
def predict_logits(
    module: nn.Module,
    x: np.ndarray,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    extra: np.ndarray | None = None,
) -> Any:
    """Logits ``[N, K]`` (CPU) of ``module`` in eval mode, computed in batches; a list of
    them (one per level) for a hierarchical module. ``extra`` is a second module input."""
    module.eval()
    xt, et = _as_tensor(x), _as_tensor(extra)
    out = []
    for i in range(0, len(xt), batch_size):
        eb = None if et is None else et[i : i + batch_size].to(device)
        res = _call(module, xt[i : i + batch_size].to(device), eb)
        out.append([r.float().cpu() for r in res] if isinstance(res, list | tuple)
                   else res.float().cpu())
    if not out:
        raise ValueError("no samples to predict")
    if isinstance(out[0], list):
        return [torch.cat([o[k] for o in out]) for k in range(len(out[0]))]
    return torch.cat(out)


def _finest(logits: Any) -> torch.Tensor:
    return logits[-1] if isinstance(logits, list | tuple) else logits


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    batches = list(torch.split(order, batch_size))
    # BatchNorm cannot train on a single sample: fold a lone last sample into the previous batch
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2] = torch.cat([batches[-2], batches.pop()])
    return batches


def train_classifier(
    module: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    n_classes: int | Sequence[int],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    patience: int | None = None,
    progress: bool = False,
    augment_fn: AugmentFn | None = None,
    lr_decay: float | None = None,
    device: str | torch.device = "cpu",
    desc: str = "training",
    level_weights: Sequence[float] | None = None,
    extra_train: np.ndarray | None = None,
    extra_val: np.ndarray | None = None,
) -> TrainResult:
    """Train ``module`` (inputs already in its layout, labels ``0..n_classes-1``).

    After each epoch the module is scored on ``(x_val, y_val)``; the weights of the epoch with
    the strictly best validation macro-F1 are kept and loaded back at the end. Without
    validation data the last epoch is kept. ``patience`` stops after that many epochs
    without improvement. ``lr_decay`` multiplies the learning rate by that factor after
    every epoch (``None``: constant). ``augment_fn`` transforms each training batch. The same
    ``seed`` gives the same weights.

    Hierarchical training: ``y_train``/``y_val`` ``[N, L]`` with ``n_classes`` one count per
    level (see the module docstring); validation scores the finest level.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    seed_everything(seed)
    device = torch.device(device)
    module.to(device)
    xt = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))
    et = _as_tensor(extra_train)
    y_arr = np.asarray(y_train, dtype=np.int64)
    yt = torch.from_numpy(y_arr)
    if len(xt) != len(yt) or len(xt) < 2:
        raise ValueError("x_train and y_train need the same length, at least 2 samples")
    has_val = x_val is not None and y_val is not None and len(y_val) > 0
    multi = y_arr.ndim == 2
    sizes = [int(k) for k in n_classes] if multi else [int(n_classes)]  # type: ignore[union-attr,arg-type]
    y_levels = [y_arr[:, k] for k in range(y_arr.shape[1])] if multi else [y_arr]
    if len(sizes) != len(y_levels):
        raise ValueError(f"{len(y_levels)} label levels but {len(sizes)} class counts")
    weights_k = [1.0] * len(sizes) if level_weights is None else [float(w) for w in level_weights]
    if len(weights_k) != len(sizes):
        raise ValueError(f"{len(weights_k)} level weights for {len(sizes)} levels")
    loss_fns = [
        nn.CrossEntropyLoss(
            weight=torch.as_tensor(
                balanced_class_weights(y[y >= 0], k), dtype=torch.float32
            ).to(device),
            ignore_index=-1,
        )
        for y, k in zip(y_levels, sizes, strict=True)
    ]

    def loss_of(out: Any, yb: torch.Tensor) -> torch.Tensor:
        if not multi:
            return loss_fns[0](out, yb)
        total, weight = out[0].new_zeros(()), 0.0
        for k, (fn, w) in enumerate(zip(loss_fns, weights_k, strict=True)):
            if w and (yb[:, k] >= 0).any():
                total = total + w * fn(out[k], yb[:, k])
                weight += w
        # a weighted mean, so the gradient scale does not grow with the number of levels
        return total / weight if weight else total

    y_val_fine = None
    if has_val:
        y_val_arr = np.asarray(y_val, dtype=np.int64)
        y_val_fine = y_val_arr[:, -1] if y_val_arr.ndim == 2 else y_val_arr
        keep_val = y_val_fine >= 0
    optimiser = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = None
    if lr_decay is not None:
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma=float(lr_decay))
    gen = torch.Generator().manual_seed(seed)

    best_f1, best_epoch, best_state = -math.inf, 0, None
    history: list[dict[str, float]] = []
    since_best = 0
    bar = tqdm(
        range(1, epochs + 1),
        desc=desc,
        unit="epoch",
        file=sys.stderr,
        disable=not progress,
        leave=False,
    )
    for epoch in bar:
        module.train()
        total, seen = 0.0, 0
        for idx in _batches(len(xt), batch_size, gen):
            xb = xt[idx]
            if augment_fn is not None:
                xb = augment_fn(xb, gen)
            xb, yb = xb.to(device), yt[idx].to(device)
            eb = None if et is None else et[idx].to(device)
            optimiser.zero_grad(set_to_none=True)
            loss = loss_of(_call(module, xb, eb), yb)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        if scheduler is not None:
            scheduler.step()
        record = {"epoch": float(epoch), "loss": total / seen}
        if has_val:
            logits = predict_logits(module, x_val, device=device, extra=extra_val)
            pred = _finest(logits).argmax(1).numpy()[keep_val]
            yv = y_val_fine[keep_val]
            f1 = float(f1_score(yv, pred, average="macro", zero_division=0))
            record.update(val_macro_f1=f1, val_accuracy=float(np.mean(pred == yv)))
            if f1 > best_f1:
                best_f1, best_epoch, since_best = f1, epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
            else:
                since_best += 1
        history.append(record)
        bar.set_postfix(
            loss=f"{record['loss']:.4f}", val_f1=f"{record.get('val_macro_f1', math.nan):.4f}"
        )
        if has_val and patience is not None and since_best >= patience:
            break
    bar.close()
    if best_state is None:  # no validation: keep the last epoch
        best_epoch, best_f1 = len(history), math.nan
        best_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    module.load_state_dict(best_state)
    module.eval()
    return TrainResult(best_state, best_epoch, best_f1, history)
