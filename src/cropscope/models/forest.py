"""Random forest on engineered features (scikit-learn), saved without pickle (skops)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cropscope.models._tabular import FeatureClassifier, dump_skops, load_skops

__all__ = ["RandomForest"]

_WEIGHTS = "forest.skops"
#: the only non-default types a saved forest may contain; anything else is refused
_TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]


class RandomForest(FeatureClassifier):
    """Random forest (500 trees, class-balanced) on engineered features."""

    requires = ("scikit-learn", "skops")

    @classmethod
    def estimator_defaults(cls) -> dict[str, Any]:
        return {"n_estimators": 500, "max_features": "sqrt", "min_samples_leaf": 1,
                "class_weight": "balanced"}

    def _fit_estimator(
        self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None
    ) -> None:
        from sklearn.ensemble import RandomForestClassifier

        c = self.config
        self.estimator_ = RandomForestClassifier(
            n_estimators=c["n_estimators"],
            max_features=c["max_features"],
            min_samples_leaf=c["min_samples_leaf"],
            class_weight=c["class_weight"],
            n_jobs=self.n_jobs(),
            random_state=c["seed"],
        )
        # scikit-learn's forests accept NaN (missing values) since 1.4
        self.estimator_.fit(x, y)

    def _estimator_proba(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.estimator_.n_jobs = self.n_jobs()  # the count in force now, not the one at fit
        return self.estimator_.predict_proba(x), self.estimator_.classes_

    def _save_weights(self, directory: Path) -> None:
        dump_skops(self.estimator_, directory / _WEIGHTS)

    def _load_weights(self, directory: Path) -> None:
        self.estimator_ = load_skops(directory / _WEIGHTS, _TRUSTED_TYPES)
