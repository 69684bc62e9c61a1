"""Cross-cutting user workflows the CLI calls: demo, transfer studies and other end-to-end
runs that combine training, evaluation and mapping.

This is the layer just below :mod:`cropscope.cli` (see the import-linter contract in
``pyproject.toml``): it may import every package of cropscope except the CLI, and nothing
below it imports it.

Public entry points (imported on first use, so ``import cropscope.workflows`` stays light):

- :func:`train_model` – ``cropscope train``: a dataset, table or scene into a run directory
- :func:`evaluate_model` – ``cropscope evaluate``: cross-validation, a fixed split or a
  spatial scene split
- :func:`run_demo` – ``cropscope demo``
- :func:`predict_run` – ``cropscope predict`` (a table or a map)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cropscope.workflows.demo import DemoResult, run_demo
    from cropscope.workflows.evaluate import evaluate_model
    from cropscope.workflows.predict import PredictResult, predict_run
    from cropscope.workflows.train import train_model

__all__ = [
    "DemoResult", "PredictResult", "evaluate_model", "predict_run", "run_demo", "train_model",
]


def __getattr__(name: str) -> Any:
    if name in {"DemoResult", "run_demo"}:
        from cropscope.workflows import demo

        return getattr(demo, name)
    if name == "evaluate_model":
        from cropscope.workflows import evaluate

        return evaluate.evaluate_model
    if name in {"PredictResult", "predict_run"}:
        from cropscope.workflows import predict

        return getattr(predict, name)
    if name == "train_model":
        from cropscope.workflows import train

        return train.train_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
