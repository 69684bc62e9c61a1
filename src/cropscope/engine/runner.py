"""The one training engine: a Lightning ``Trainer`` built from cropscope's options.

Every deep model trains through :func:`fit`: a task (:mod:`cropscope.engine.tasks`) on a data
module (:mod:`cropscope.engine.datamodules`). Options (:class:`EngineOptions`) map onto the
Trainer: ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) picks the
accelerator, ``devices`` / ``strategy`` / ``num_nodes`` scale out (``devices=2,
strategy="ddp"`` trains in two processes: gloo on CPUs, NCCL on GPUs; ``batch_size`` is per
process), ``precision`` is Lightning's (``"32-true"``, ``"16-mixed"``, ``"bf16-mixed"``).

The Trainer runs bare: no logger, no Lightning checkpoints (tasks write cropscope's own safe
checkpoints), no model summary, no sanity validation, no progress bar and no per-step
logging; Lightning's informational messages are silenced. With ``progress=True`` one tqdm
bar counts epochs on stderr, on the first process only.

With ``strategy="ddp"`` Lightning starts the other processes by running the calling script
again (``python script.py ARGS``): everything before :func:`fit` must be deterministic, and
only the first process (:func:`is_global_zero`) should write files. Every process ends with
the same trained weights.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.warnings import PossibleUserWarning
from lightning.pytorch.callbacks import Callback
from tqdm.auto import tqdm

from cropscope.engine.recipe import check_strategy, resolve_device
from cropscope.errors import ModelError

__all__ = [
    "EngineOptions",
    "EpochBar",
    "accelerator_for",
    "build_trainer",
    "fit",
    "is_global_zero",
    "report_epoch",
    "root_device",
    "run_fit",
]

_QUIET_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


@dataclass
class EngineOptions:
    """How a task is run (not what it learns)."""

    #: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", "mps" or a torch.device
    device: str | torch.device = "auto"
    #: processes / accelerators per node: an int, a list of GPU indices or "auto"
    devices: int | str | Sequence[int] = 1
    #: Lightning strategy: "auto", "ddp", "ddp_spawn", "fsdp", ...
    strategy: str = "auto"
    num_nodes: int = 1
    #: Lightning precision ("32-true", "16-mixed", "bf16-mixed", ...)
    precision: str = "32-true"
    #: one tqdm epoch bar on stderr (first process only)
    progress: bool = False
    desc: str = "training"

    def __post_init__(self) -> None:
        check_strategy(self.strategy)


def accelerator_for(device: str | torch.device,
                    devices: int | str | Sequence[int] = 1) -> tuple[str, Any]:
    """Lightning's ``(accelerator, devices)`` for a torch-style ``device`` and a device count:
    ``"cuda:1"`` → ``("gpu", [1])``, ``"cpu"`` with 2 → ``("cpu", 2)``."""
    dev = resolve_device(device)
    count: Any = list(devices) if isinstance(devices, list | tuple) else devices
    if isinstance(count, bool) or not (
            isinstance(count, int) or count == "auto"
            or (isinstance(count, list) and count
                and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                        for i in count))):
        raise ModelError(f"devices must be a count (>= 1), 'auto' or a list of device "
                         f"indices, got {devices!r}")
    if isinstance(count, int) and count < 1:
        raise ModelError(f"devices must be >= 1, got {count}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device {str(dev)!r} asked for but CUDA is not available")
        if dev.index is not None:
            if count not in (1, [dev.index]):
                raise ModelError(f"device {str(dev)!r} names one GPU; give devices as a list "
                                 "of GPU indices to train on several")
            count = [dev.index]
        return "gpu", count
    if dev.type in ("cpu", "mps"):
        return dev.type, count
    raise ModelError(f"unsupported device {str(dev)!r}")


def root_device(trainer: L.Trainer) -> torch.device:
    """The device this process trained on."""
    return trainer.strategy.root_device


def is_global_zero() -> bool:
    """Whether this is the first process of a (possibly distributed) run: use it to write
    files only once after :func:`fit` under ``strategy="ddp"``."""
    ranks = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK")
    return all(os.environ.get(name, "0") == "0" for name in ranks)


class EpochBar(Callback):
    """One tqdm bar over epochs on stderr (first process only); tasks report each epoch
    with :func:`report_epoch`."""

    def __init__(self, desc: str, total: int, initial: int = 0) -> None:
        self.desc, self.total, self.initial = desc, total, initial
        self.bar: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.bar = tqdm(total=self.total, initial=self.initial, desc=self.desc,
                            unit="epoch", file=sys.stderr, leave=False)

    def update(self, postfix: Mapping[str, Any]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(postfix)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.close()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        self.close()


def report_epoch(trainer: L.Trainer, postfix: Mapping[str, Any]) -> None:
    """Advance the epoch bar (when there is one) with ``postfix`` shown beside it."""
    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(cb, EpochBar):
            cb.update(postfix)


@contextmanager
def quiet() -> Iterator[None]:
    """Lightning's informational logging and its advice warnings (worker counts, logging
    intervals, ...) silenced for the duration of a fit."""
    saved = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PossibleUserWarning)
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")
            warnings.filterwarnings("ignore", message=".*Checkpoint directory.*")
            warnings.filterwarnings("ignore", message=".*in eval mode at the start of training.*")
            # the task transforms training batches on the CPU, the data module only loads
            warnings.filterwarnings("ignore", message=".*overridden `on_before_batch_transfer`.*")
            # Lightning's own use of a torch API it has not caught up with
            warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def build_trainer(options: EngineOptions, max_epochs: int, *, validate: bool,
                  callbacks: Sequence[Callback] = (), bar_total: int | None = None,
                  bar_initial: int = 0) -> L.Trainer:
    """A bare Lightning Trainer for ``max_epochs`` epochs (validation after each epoch when
    ``validate``). ``options.progress`` adds an :class:`EpochBar` over ``bar_total`` epochs
    (default ``max_epochs``) starting at ``bar_initial`` (a resumed run)."""
    accelerator, devices = accelerator_for(options.device, options.devices)
    callbacks = list(callbacks)
    if options.progress:
        total = max_epochs if bar_total is None else bar_total
        callbacks.append(EpochBar(options.desc, total, bar_initial))
    if int(options.num_nodes) < 1:
        raise ModelError(f"num_nodes must be >= 1, got {options.num_nodes}")
    with quiet():
        return L.Trainer(
            accelerator=accelerator,
            devices=devices,
            strategy=options.strategy,
            num_nodes=int(options.num_nodes),
            precision=options.precision,  # type: ignore[arg-type]
            max_epochs=max_epochs,
            min_epochs=0,
            barebones=True,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=1.0 if validate else 0,
            check_val_every_n_epoch=1,
            use_distributed_sampler=False,
            deterministic=None,
            benchmark=None,
            callbacks=callbacks,
            default_root_dir=None,
        )


def run_fit(trainer: L.Trainer, task: L.LightningModule,
            datamodule: L.LightningDataModule) -> L.Trainer:
    """``trainer.fit(task, datamodule)`` with Lightning's chatter silenced."""
    with quiet():
        trainer.fit(task, datamodule=datamodule)
    return trainer


def fit(task: L.LightningModule, datamodule: L.LightningDataModule, options: EngineOptions,
        max_epochs: int, *, validate: bool) -> L.Trainer:
    """Train ``task`` on ``datamodule`` for ``max_epochs`` epochs; returns the Trainer.

    The thread count of :mod:`cropscope.threads` is applied first (its default when none
    was set), so trainings started from Python get it as the command line does."""
    from cropscope.threads import ensure_threads

    ensure_threads()
    trainer = build_trainer(options, max_epochs, validate=validate)
    return run_fit(trainer, task, datamodule)
