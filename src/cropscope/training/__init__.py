"""Training loops shared by the deep models (torch is imported only when they are used).

Public entry points (loaded on first access):

- :func:`train_run` – train a registered classifier on a :class:`TimeSeriesSet` into a run
  directory (:class:`RunResult`; :func:`load_run` reads it back)
- :func:`patch_datasets`, :func:`train_segmentation_run`, :func:`pretrain_encoder_run`,
  :func:`evaluate_segmentation_run` – ``cropscope segment train/pretrain/evaluate``
- :func:`train_h2crop`, :func:`evaluate_h2crop_run`, :func:`temporal_window_experiment` –
  ``cropscope h2crop train/evaluate/experiment``
- :func:`train_classifier` – the training loop of the torch classifiers
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cropscope.engine.seeding import seed_everything

if TYPE_CHECKING:
    from cropscope.engine.trainer import TrainResult, train_classifier
    from cropscope.training.h2crop import (
        evaluate_h2crop_run,
        temporal_window_experiment,
        train_h2crop,
    )
    from cropscope.training.rundir import RunResult, load_run, train_run
    from cropscope.training.segmentation_run import (
        evaluate_segmentation_run,
        patch_datasets,
        pretrain_encoder_run,
        train_segmentation_run,
    )

__all__ = [
    "RunResult",
    "TrainResult",
    "evaluate_h2crop_run",
    "evaluate_segmentation_run",
    "load_run",
    "patch_datasets",
    "pretrain_encoder_run",
    "seed_everything",
    "temporal_window_experiment",
    "train_classifier",
    "train_h2crop",
    "train_run",
    "train_segmentation_run",
]

_H2CROP = {"evaluate_h2crop_run", "temporal_window_experiment", "train_h2crop"}
_RUNDIR = {"RunResult", "load_run", "train_run"}
_SEGMENTATION = {"evaluate_segmentation_run", "patch_datasets", "pretrain_encoder_run",
                 "train_segmentation_run"}


def __getattr__(name: str) -> Any:
    if name in {"TrainResult", "train_classifier"}:
        from cropscope.engine import trainer

        return getattr(trainer, name)
    if name in _RUNDIR:
        from cropscope.training import rundir

        return getattr(rundir, name)
    if name in _H2CROP:
        from cropscope.training import h2crop

        return getattr(h2crop, name)
    if name in _SEGMENTATION:
        from cropscope.training import segmentation_run

        return getattr(segmentation_run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
