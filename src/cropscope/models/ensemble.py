"""Soft-voting ensemble of any registered models.

Each member is trained on the same samples; the ensemble's probabilities are the weighted
mean of the members'. Members are saved in sub-directories with their own safe formats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import ModelError
from cropscope.models.base import Classifier
from cropscope.models.registry import create_model, get_model_class
from cropscope.settings import check_options

__all__ = ["Ensemble"]


def check_members(members: Any, kind: str) -> list[dict[str, Any]]:
    """The member list of a combining model (``kind``: "ensemble", "stacking"), each entry
    ``{"model": NAME, "config": {...}}`` (a bare name is short for an empty config); unknown
    models, nested models of the same kind and bad option names or values fail here, before
    any member is trained."""
    if not isinstance(members, list) or not members:
        raise ModelError(f"{kind} 'members' must be a non-empty list of {{model, config}}")
    out: list[dict[str, Any]] = []
    for i, member in enumerate(members):
        if isinstance(member, str):
            member = {"model": member, "config": {}}
        if not isinstance(member, dict) or "model" not in member:
            raise ModelError(f"{kind} member {i} must be {{'model': NAME, 'config': {{}}}}")
        if member["model"] == kind:
            raise ModelError(f"{kind} members cannot include another {kind} model")
        cls = get_model_class(member["model"])  # unknown names fail here
        options = member.get("config") or {}
        if not isinstance(options, dict):
            raise ModelError(f"{kind} member {i}: 'config' must be a mapping of options")
        check_options(f"model {member['model']!r}", cls.default_config(), options,
                      error=ModelError)  # bad values fail now, not after other members
        out.append(member)
    return out


class Ensemble(Classifier):
    """Soft-voting ensemble: weighted mean of member models' class probabilities."""

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {
            "members": [
                {"model": "lightgbm", "config": {}},
                {"model": "tempcnn", "config": {}},
            ],
            "weights": None,
            "seed": 0,
        }

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        members = self.config["members"] = check_members(self.config["members"], "ensemble")
        weights = self.config["weights"]
        if weights is not None and len(weights) != len(members):
            raise ModelError(f"{len(weights)} weights for {len(members)} ensemble members")
        self.members_: list[Classifier] = []

    def _member(self, i: int) -> Classifier:
        spec = self.config["members"][i]
        config = dict(spec.get("config", {}))
        model_cls = get_model_class(spec["model"])
        if "seed" in model_cls.default_config():
            config.setdefault("seed", self.config["seed"] + i)
        return create_model(spec["model"], **config)

    def _fit(self, train: TimeSeriesSet, val: TimeSeriesSet | None, progress: bool) -> None:
        folder = self.checkpoint_dir
        self.members_ = [
            self._member(i).fit(train, val, progress=progress, resume=self.resume,
                                checkpoint_dir=None if folder is None else folder / f"member-{i}")
            for i in range(len(self.config["members"]))
        ]

    def _weights(self) -> np.ndarray:
        w = self.config["weights"]
        w = np.ones(len(self.members_)) if w is None else np.asarray(w, dtype=np.float64)
        return w / w.sum()

    def _predict_proba(self, ts: TimeSeriesSet) -> np.ndarray:
        weights = self._weights()
        return sum(w * m.predict_proba(ts) for w, m in zip(weights, self.members_, strict=True))

    def _member_dirs(self, directory: Path) -> list[Path]:
        from cropscope.runs import check_name, inside

        members = self.config["members"]
        if not isinstance(members, list) or not all(
            isinstance(spec, dict) for spec in members
        ):
            raise ModelError("ensemble members must be a list of {model, config} objects")
        return [
            inside(directory, f"member_{i}_{check_name(spec.get('model'), 'model name')}")
            for i, spec in enumerate(members)
        ]

    def _save_weights(self, directory: Path) -> None:
        for member, path in zip(self.members_, self._member_dirs(directory), strict=True):
            member.save(path)

    def _load_weights(self, directory: Path) -> None:
        self.members_ = [Classifier.load(path) for path in self._member_dirs(directory)]
