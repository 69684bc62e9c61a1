"""Training a classifier into a run directory (the one format of :mod:`cropscope.runs`).

A classifier run holds ``model.json`` (model name, config and model card: bands, time
steps, classes, normalisation statistics), the weights in a safe format, ``run.json``
(:class:`~cropscope.runs.RunSpec`: kind, model, classes, sources, time grid, training
record, versions, metrics), the evaluation report when a hold-out split was used
(``metrics.json``, CSV tables, PNG plots) and ``manifest.json`` (sha256 of every file),
written last: the run appears complete or not at all.

Deep models keep their state after every epoch in :func:`~cropscope.runs.checkpoint_folder`
(``.<name>.checkpoint`` beside the run): an interrupted :func:`train_run` called again with
the same data and settings continues where it stopped (``resume=False`` starts over), and
the folder is removed once the run is complete.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import ModelError
from cropscope.models.base import Classifier
from cropscope.models.registry import create_model, get_model_class
from cropscope.models.runs import load_classifier_run, save_classifier_run
from cropscope.runs import RUN_FILE, RunSpec, checkpoint_folder, first_process

__all__ = ["RunResult", "load_run", "run_info", "train_run", "training_record"]


@dataclass
class RunResult:
    """What :func:`train_run` produced."""

    run_dir: Path
    model: Classifier
    metrics: dict[str, Any] | None
    duration_s: float


def train_run(
    ts: TimeSeriesSet,
    model_name: str,
    out_dir: str | Path,
    *,
    config: dict[str, Any] | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    source: str = "",
    progress: bool = False,
    resume: bool = True,
) -> RunResult:
    """Train ``model_name`` on ``ts`` and write a self-contained run directory.

    With ``holdout > 0`` a stratified share of the samples is kept out of training and the
    model is evaluated on it (report in the run directory); with ``holdout == 0`` the model
    sees every sample and no metrics are written. ``resume``: continue an interrupted
    training of the same data and settings (see the module doc).
    """
    from cropscope.evaluation import evaluate_split, train_val_split, write_report

    out = Path(out_dir)
    config = dict(config or {})
    if "seed" not in config and "seed" in get_model_class(model_name).default_config():
        config["seed"] = seed
    started = time.perf_counter()
    metrics = None
    if not 0 <= holdout < 1:
        raise ModelError(f"holdout must be in [0, 1), got {holdout}")
    labelled = ts.subset(ts.labels >= 0) if ts.labels is not None else ts
    if holdout > 0:
        train_idx, test_idx = train_val_split(labelled, holdout, seed)
        train, test = labelled.subset(train_idx), labelled.subset(test_idx)
    else:
        train, test = labelled, None
    model = create_model(model_name, **config)
    checkpoints = checkpoint_folder(out)
    model.fit(train, progress=progress, checkpoint_dir=checkpoints, resume=resume)
    report = None
    if test is not None:
        report = evaluate_split(model, train, test)
        metrics = report.to_dict()
    duration = time.perf_counter() - started
    record = training_record({
        "source": source, "n_train": train.n_samples,
        "n_holdout": 0 if test is None else test.n_samples, "holdout": holdout, "seed": seed,
        "class_counts": train.class_counts(),
    }, duration)
    def write_extra(folder: Path) -> None:
        if report is not None:
            write_report(report, folder)

    if first_process():  # under DDP every process trains; the first one writes the run
        save_classifier_run(model, out, training=record, metrics=metrics, data=source,
                            write_extra=write_extra)
        shutil.rmtree(checkpoints, ignore_errors=True)
    return RunResult(run_dir=out, model=model, metrics=metrics, duration_s=duration)


def training_record(info: dict[str, Any], duration_s: float) -> dict[str, Any]:
    """``info`` plus the creation time and duration: the ``training`` part of ``run.json``."""
    return {**info, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": round(duration_s, 2)}


def load_run(run_dir: str | Path) -> Classifier:
    """The trained classifier of a run directory (verified against its manifest), or of a
    bare model directory."""
    return load_classifier_run(run_dir)


def run_info(run_dir: str | Path) -> dict[str, Any]:
    """The contents of ``run.json`` (empty dict when absent)."""
    path = Path(run_dir) / RUN_FILE
    return RunSpec.read(path).to_dict() if path.is_file() else {}
