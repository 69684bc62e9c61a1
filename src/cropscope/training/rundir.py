"""Run directories: everything needed to reuse a trained model.

A run directory holds ``model.json`` (model name, config and model card: bands, time
steps, classes, normalisation statistics), the weights in a safe format, ``run.json``
(what was trained on, when, with which versions) and, when a hold-out split was used,
the evaluation report (``metrics.json``, CSV tables and PNG plots).
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import ModelError
from cropscope.io import read_json, write_json
from cropscope.models.base import MODEL_FILE, Classifier
from cropscope.models.registry import create_model, get_model_class

__all__ = ["RunResult", "load_run", "run_info", "train_run", "write_run_info"]

RUN_FILE = "run.json"


@dataclass
class RunResult:
    """What :func:`train_run` produced."""

    run_dir: Path
    model: Classifier
    metrics: dict[str, Any] | None
    duration_s: float


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("cropscope", "numpy", "scikit-learn", "torch", "lightgbm"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


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
) -> RunResult:
    """Train ``model_name`` on ``ts`` and write a self-contained run directory.

    With ``holdout > 0`` a stratified share of the samples is kept out of training and the
    model is evaluated on it (report in the run directory); with ``holdout == 0`` the model
    sees every sample and no metrics are written.
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
    model.fit(train, progress=progress)
    model.save(out)
    if test is not None:
        result = evaluate_split(model, train, test)
        write_report(result, out)
        metrics = result.to_dict()
    duration = time.perf_counter() - started
    write_run_info(
        out,
        {
            "model": model_name,
            "source": source,
            "n_train": train.n_samples,
            "n_holdout": 0 if test is None else test.n_samples,
            "holdout": holdout,
            "seed": seed,
            "class_counts": train.class_counts(),
        },
        duration,
    )
    return RunResult(run_dir=out, model=model, metrics=metrics, duration_s=duration)


def write_run_info(out: Path, info: dict[str, Any], duration_s: float) -> None:
    """Write ``run.json``: ``info`` plus the creation time, duration and package versions."""
    write_json(
        Path(out) / RUN_FILE,
        {
            **info,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": round(duration_s, 2),
            "versions": _versions(),
        },
    )


def load_run(run_dir: str | Path) -> Classifier:
    """The trained model of a run directory (or a bare model directory)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ModelError(f"run directory not found: {run_dir}")
    if not (run_dir / MODEL_FILE).is_file():
        raise ModelError(f"{run_dir} is not a cropscope run directory (no {MODEL_FILE})")
    return Classifier.load(run_dir)


def run_info(run_dir: str | Path) -> dict[str, Any]:
    """The contents of ``run.json`` (empty dict when absent)."""
    path = Path(run_dir) / RUN_FILE
    return read_json(path) if path.is_file() else {}

