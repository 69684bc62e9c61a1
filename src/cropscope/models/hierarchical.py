"""Hierarchical classification with any registered model (random forest, LightGBM, ...).

:class:`HierarchicalClassifier` (registry name ``hierarchical``) trains base models on a set
with a taxonomy, in one of two classic layouts:

- ``per-level``: one flat model per level, each on that level's labels;
- ``per-parent``: one model per inner node, choosing among its children (a "local classifier
  per parent node"); a class's probability is its parent's times its own given the parent,
  so the per-level probabilities are consistent by construction.

Deep models have cascade heads instead (``hierarchical=true``, :mod:`cropscope.models.cascade`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError, ModelError
from cropscope.io import read_json, write_json
from cropscope.models.base import Classifier
from cropscope.taxonomy.decoding import DECODINGS, decode

__all__ = ["HierarchicalClassifier"]

STRATEGIES = ("per-level", "per-parent")
_LAYOUT = "layout.json"


class HierarchicalClassifier(Classifier):
    """Per-level or per-parent base models over a taxonomy (same interface as any model)."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        if self.config["strategy"] not in STRATEGIES:
            raise ModelError(
                f"strategy must be one of {STRATEGIES}, got {self.config['strategy']!r}"
            )
        if self.config["decoding"] not in DECODINGS:
            raise ModelError(f"decoding must be one of {DECODINGS}")
        if not isinstance(self.config["base_config"], dict):
            raise ModelError("base_config must be a dict of the base model's options")
        from cropscope.models.registry import create_model

        create_model(str(self.config["base"]), **self.config["base_config"])  # fail fast
        #: (level, parent index or -1) -> fitted model; a constant class when it is ``int``
        self._models: dict[tuple[int, int], Classifier | int] = {}

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {
            "base": "lightgbm",
            "base_config": {},
            "strategy": "per-level",
            "decoding": "consistent",
        }

    # ------------------------------------------------------------------ fitting
    def _new_base(self) -> Classifier:
        from cropscope.models.registry import create_model

        return create_model(str(self.config["base"]), **self.config["base_config"])

    def _fit_one(self, ts: TimeSeriesSet, codes: np.ndarray, names: list[str],
                 progress: bool) -> Classifier | int:
        """A base model on ``ts`` with labels ``codes`` into ``names`` (a constant when only
        one class occurs)."""
        present = np.unique(codes)
        if present.size == 1:
            return int(present[0])
        sub = ts.replace(labels=codes, classes=names, taxonomy=None, level_labels=None)
        return self._new_base().fit(sub, progress=progress)

    def _fit(self, train: TimeSeriesSet, val: TimeSeriesSet | None, progress: bool) -> None:
        tax = train.taxonomy
        if tax is None or train.level_labels is None or not tax.is_complete:
            raise DataError(
                "the hierarchical model needs a training set with a complete class hierarchy "
                "(TimeSeriesSet.with_taxonomy)"
            )
        y = train.level_labels
        self._models = {}
        for k in range(tax.n_levels):
            if self.config["strategy"] == "per-level" or k == 0:
                keep = y[:, k] >= 0
                self._models[(k, -1)] = self._fit_one(
                    train.subset(keep), y[keep, k], tax.classes(k), progress
                )
                continue
            parents = tax.parents(k)
            for p in range(tax.n_classes(k - 1)):
                keep = (y[:, k - 1] == p) & (y[:, k] >= 0)
                children = np.flatnonzero(parents == p)
                if children.size == 0:
                    continue
                if not keep.any() or children.size == 1:
                    self._models[(k, p)] = int(children[0]) if children.size == 1 else -1
                    continue
                self._models[(k, p)] = self._fit_one(
                    train.subset(keep), y[keep, k], tax.classes(k), progress
                )
        self._require_card().extra.update(
            strategy=self.config["strategy"], n_base_models=sum(
                isinstance(m, Classifier) for m in self._models.values()
            ),
        )

    # ------------------------------------------------------------------ prediction
    def _proba_of(self, model: Classifier | int, ts: TimeSeriesSet, k_classes: int) -> np.ndarray:
        out = np.zeros((ts.n_samples, k_classes), dtype=np.float64)
        if isinstance(model, int):
            if model >= 0:
                out[:, model] = 1.0
            return out
        # the base model was fitted with the level's full class list: columns align
        out[:] = model.predict_proba(ts)
        return out

    def predict_proba_levels(self, ts: TimeSeriesSet) -> list[np.ndarray]:
        tax = self._require_taxonomy()
        ts = self._conform(ts)
        out: list[np.ndarray] = []
        for k in range(tax.n_levels):
            key = (k, -1)
            if key in self._models:
                out.append(self._proba_of(self._models[key], ts, tax.n_classes(k)))
                continue
            level = np.zeros((ts.n_samples, tax.n_classes(k)), dtype=np.float64)
            parents = tax.parents(k)
            for p in range(tax.n_classes(k - 1)):
                model = self._models.get((k, p))
                if model is None:
                    continue
                cond = self._proba_of(model, ts, tax.n_classes(k))
                cond[:, parents != p] = 0.0
                total = cond.sum(axis=1, keepdims=True)
                children = parents == p
                # a parent never seen in training spreads its mass evenly over its children
                even = children / children.sum()
                cond = np.where(total > 0, cond / np.where(total > 0, total, 1.0), even)
                level += out[k - 1][:, [p]] * cond
            out.append(level)
        return [p.astype(np.float32) for p in out]

    def _predict_proba(self, ts: TimeSeriesSet) -> np.ndarray:
        return self.predict_proba_levels(ts)[-1]

    def predict(self, ts: TimeSeriesSet) -> np.ndarray:
        return decode(self._require_taxonomy(), self.predict_proba_levels(ts),
                      self.config["decoding"])[:, -1]

    # ------------------------------------------------------------------ persistence
    def _save_weights(self, directory: Path) -> None:
        layout = []
        for (k, p), model in sorted(self._models.items()):
            entry: dict[str, Any] = {"level": k, "parent": p}
            if isinstance(model, int):
                entry["constant"] = model
            else:
                sub = f"level{k}" + ("" if p < 0 else f"_parent{p}")
                model.save(directory / sub)
                entry["dir"] = sub
            layout.append(entry)
        write_json(directory / _LAYOUT, {"models": layout})

    def _load_weights(self, directory: Path) -> None:
        path = directory / _LAYOUT
        if not path.is_file():
            raise ModelError(f"{directory} has no {_LAYOUT}")
        from cropscope.runs import inside

        self._models = {}
        layout = read_json(path)
        entries = layout.get("models") if isinstance(layout, dict) else None
        if not isinstance(entries, list):
            raise ModelError(f"{path} must hold {{'models': [...]}}")
        for entry in entries:
            try:
                key = (int(entry["level"]), int(entry["parent"]))
                if "constant" in entry:
                    self._models[key] = int(entry["constant"])
                    continue
                sub = entry["dir"]
            except (KeyError, TypeError, ValueError):
                raise ModelError(f"{path}: malformed entry {entry!r}") from None
            if not isinstance(sub, str):
                raise ModelError(f"{path}: 'dir' must be a folder name, got {sub!r}")
            self._models[key] = Classifier.load(inside(directory, sub))
