"""Supervised training of the deep classifiers, on the Lightning engine.

:func:`train_classifier` runs a :class:`~cropscope.engine.tasks.ClassificationTask` on an
:class:`~cropscope.engine.datamodules.ArrayDataModule` through
:func:`cropscope.engine.runner.fit`: Adam on class-balanced cross-entropy, seeded
mini-batches, validation macro-F1 after every epoch, the weights of the best validation epoch
kept, optional early stopping; ``devices`` / ``strategy`` / ``num_nodes`` scale out (e.g.
``devices=2, strategy="ddp"``).

Hierarchical (multi-level) training uses the same task: labels ``[N, L]`` (``-1`` where a
level is unknown), a module returning one logits tensor per level, one class-balanced
cross-entropy per level weighted by ``level_weights``; the model is selected on the finest
level's validation macro-F1 (or the mean over levels, ``select_on="mean"``). A module may take
a second input (e.g. per-level priors), given as ``extra_train``/``extra_val``.

With ``checkpoint_dir`` the state after every epoch (weights, optimiser, scheduler, RNG
and batch-order generator, history, best epoch; :mod:`cropscope.engine.checkpoints`: safe
files, no pickle) is kept there, with a fingerprint of the training arrays and settings;
``resume=True`` continues from it (refusing when the fingerprint differs), and in a single
process ends with the same weights as an uninterrupted training.

Lightning is imported when training starts (it takes seconds to import), not when a trained
model predicts. Prediction (batched, on the CPU or a GPU) is :mod:`cropscope.engine.inference`;
:func:`predict_logits` is re-exported here for the callers that import it from this module.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cropscope.engine.checkpoints import (
    BEST_FILE,
    LAST,
    has_last,
    read_last,
    read_weights,
    set_rng_state,
)
from cropscope.engine.inference import predict_logits  # re-exported (its former home)
from cropscope.engine.recipe import AugmentFn, balanced_class_weights
from cropscope.engine.seeding import seed_everything
from cropscope.errors import ModelError
from cropscope.io import digest
from cropscope.runs.state import pending_path, state_paths

__all__ = [
    "AugmentFn",
    "TrainResult",
    "balanced_class_weights",
    "predict_logits",
    "train_classifier",
]


@dataclass
class TrainResult:
    """Outcome of :func:`train_classifier`."""

    #: weights of the selected epoch (CPU tensors); already loaded into the module
    state_dict: dict[str, torch.Tensor]
    #: 1-based epoch whose weights were kept
    best_epoch: int
    #: validation macro-F1 of that epoch (NaN without validation data); the mean over
    #: levels with ``select_on="mean"``
    best_val_macro_f1: float
    #: one entry per epoch run: ``epoch``, ``loss``, ``val_macro_f1``, ``val_accuracy``
    history: list[dict[str, float]] = field(default_factory=list)
    #: epochs done before this call (read from the checkpoint; 0: a fresh training)
    resumed_from: int = 0




def _read_resume(folder: Path, fingerprint: dict[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """The resume state of ``folder`` and its best weights, after checking that it was
    written for the same training (``fingerprint``)."""
    state = read_last(folder)
    old = state["config"]
    changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
    if changed:
        what = "the training data" if "data" in changed else ", ".join(changed)
        raise ModelError(f"cannot resume from {folder}: {what} changed since it was written "
                         "(train with resume=False / --no-resume, or use another --out)")
    best = None
    if int(state.get("best_epoch", 0)) > 0 and (folder / BEST_FILE).is_file():
        best, _ = read_weights(folder / BEST_FILE)
    return state, best


def _clear_checkpoint(folder: Path) -> None:
    st_path, js_path = state_paths(folder / LAST)
    for path in (folder / BEST_FILE, st_path, js_path,
                 pending_path(st_path)):
        path.unlink(missing_ok=True)


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
    select_on: str = "finest",
    devices: int | str | Sequence[int] = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    precision: str = "32-true",
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
) -> TrainResult:
    """Train ``module`` (inputs already in its layout, labels ``0..n_classes-1``).

    After each epoch the module is scored on ``(x_val, y_val)``; the weights of the epoch with
    the strictly best validation macro-F1 are kept and loaded back at the end. Without
    validation data the last epoch is kept. ``patience`` stops after that many epochs
    without improvement. ``lr_decay`` multiplies the learning rate by that factor after
    every epoch (``None``: constant). ``augment_fn`` transforms each training batch (on the
    CPU). The same ``seed`` gives the same weights. A last training batch of a single
    sample is folded into the previous batch.

    Hierarchical training: ``y_train``/``y_val`` ``[N, L]`` with ``n_classes`` one count per
    level (see the module docstring); validation scores the finest level, or the mean of the
    levels' macro-F1 with ``select_on="mean"``.

    Scale-out: ``devices`` processes per node (``num_nodes`` nodes) with ``strategy``
    (``"ddp"``: see :mod:`cropscope.engine.runner`); ``batch_size`` is per process. Every
    process returns the same result. ``precision`` is Lightning's (e.g. ``"16-mixed"``).

    ``checkpoint_dir``: keep the resume state there after every epoch; ``resume`` continues
    from it (a training already complete there returns its result without training).
    """
    from cropscope.engine.datamodules import ArrayDataModule
    from cropscope.engine.runner import (
        EngineOptions,
        accelerator_for,
        build_trainer,
        root_device,
        run_fit,
    )
    from cropscope.engine.tasks import ClassificationTask
    from cropscope.runs import first_process

    if epochs < 1 or batch_size < 1:
        raise ModelError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    accelerator_for(device, devices)  # fail early on an unusable device
    seed_everything(seed)
    y_arr = np.asarray(y_train, dtype=np.int64)
    if len(x_train) != len(y_arr) or len(x_train) < 2:
        raise ValueError("x_train and y_train need the same length, at least 2 samples")
    n_val = 0 if x_val is None or y_val is None else len(y_val)
    has_val = n_val > 0
    member = re.search(r" (\d+)/\d+$", desc)  # "tempcnn 3/5": network 3 of an ensemble
    later_member = member is not None and member.group(1) != "1"
    if not has_val and first_process() and not later_member:
        # said once per training (not again for networks 2..n of an ensemble): without
        # validation there is no score to select an epoch on (the bar's val_f1 stays nan)
        # and patience cannot stop anything
        logging.getLogger("cropscope").warning(
            "%s: no validation samples, so no epoch is selected on a validation score: the "
            "last epoch is kept%s (set val_fraction, or use a split with validation data)",
            desc, "" if patience is None else " and patience has no effect")
    multi = y_arr.ndim == 2
    sizes = [int(k) for k in n_classes] if isinstance(n_classes, Sequence) \
        else [int(n_classes)]  # fmt: skip
    y_levels = [y_arr[:, k] for k in range(y_arr.shape[1])] if multi else [y_arr]
    if len(sizes) != len(y_levels):
        raise ValueError(f"{len(y_levels)} label levels but {len(sizes)} class counts")
    weights_k = [1.0] * len(sizes) if level_weights is None else [float(w) for w in level_weights]
    if len(weights_k) != len(sizes):
        raise ValueError(f"{len(weights_k)} level weights for {len(sizes)} levels")
    class_weights = [balanced_class_weights(y[y >= 0], k)
                     for y, k in zip(y_levels, sizes, strict=True)]
    gen = torch.Generator().manual_seed(seed)
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    state, best_state, start = None, None, 0
    fingerprint: dict[str, Any] = {}
    if folder is not None:
        fingerprint = json.loads(json.dumps({
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
            "weight_decay": weight_decay, "lr_decay": lr_decay, "patience": patience,
            "select_on": select_on, "level_weights": weights_k, "classes": sizes,
            "devices": str(devices), "num_nodes": num_nodes, "strategy": strategy,
            "data": digest(x_train, y_arr, extra_train,
                            x_val if has_val else None, y_val if has_val else None,
                            extra_val if has_val else None)}))
        if resume and has_last(folder):
            state, best_state = _read_resume(folder, fingerprint)
            start = int(state["epoch"])
        elif first_process():
            folder.mkdir(parents=True, exist_ok=True)
            _clear_checkpoint(folder)
    if state is not None and (state.get("stopped") or start >= epochs):
        module.load_state_dict(best_state if best_state is not None else state["model"])
        module.eval()
        score = math.nan if best_state is None else float(state.get("best_score", math.nan))
        return TrainResult(dict(best_state or state["model"]),
                           int(state.get("best_epoch", 0)) or start, score,
                           list(state["history"]), resumed_from=start)
    if state is not None:
        module.load_state_dict(state["model"])
        set_rng_state(state["rng"])
        try:
            gen.set_state(state["rng"]["generator"])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise ModelError(f"{folder}: the batch-order state is unusable: {exc}") from None
    task = ClassificationTask(
        module, class_weights=class_weights, level_weights=weights_k, multi=multi, lr=lr,
        weight_decay=weight_decay, lr_decay=lr_decay, augment_fn=augment_fn, gen=gen,
        patience=patience, select_on=select_on, seed=seed, checkpoint=folder, resume=state,
        best_state=best_state, extra_state=fingerprint)
    data = ArrayDataModule(x_train, y_arr, x_val if has_val else None,
                           y_val if has_val else None, batch_size=batch_size, seed=seed,
                           extra_train=extra_train, extra_val=extra_val if has_val else None,
                           generator=gen, offset=start)
    options = EngineOptions(device=device, devices=devices, strategy=strategy,
                            num_nodes=num_nodes, precision=precision, progress=progress,
                            desc=desc)
    trainer = build_trainer(options, epochs - start, validate=has_val, bar_total=epochs,
                            bar_initial=start)
    world = trainer.world_size
    if len(y_arr) // world < 2:
        raise ValueError(f"{len(y_arr)} training samples for {world} processes: each needs 2")
    if has_val and n_val < world:
        raise ValueError(f"{n_val} validation samples for {world} processes")
    module.train()
    run_fit(trainer, task, data)
    history = task.history
    best_state, best_epoch, best_f1 = task.best_state, task.best_epoch, task.best_score
    if best_state is None:  # no validation: keep the last epoch
        best_epoch, best_f1 = len(history), math.nan
        best_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    module.load_state_dict(best_state)
    module.to(root_device(trainer))
    module.eval()
    return TrainResult(best_state, best_epoch, best_f1, history, resumed_from=start)
