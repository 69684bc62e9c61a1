"""Training loops shared by the deep models (torch is imported only when they are used)."""

from __future__ import annotations

from typing import Any

from cropscope.training.seeding import seed_everything

__all__ = ["TrainResult", "seed_everything", "train_classifier"]


def __getattr__(name: str) -> Any:
    if name in {"TrainResult", "train_classifier"}:
        from cropscope.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
