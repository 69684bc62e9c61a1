"""Tree ensembles on engineered features (scikit-learn), saved without pickle (skops):
random forest (``rf``), extremely randomised trees (``extratrees``) and QUANT (``quant``:
extremely randomised trees on interval quantiles, :mod:`cropscope.features.intervals`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cropscope.errors import ModelError
from cropscope.models._tabular import FeatureClassifier, dump_skops, load_skops

__all__ = ["ExtraTrees", "Quant", "RandomForest"]

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

    def _estimator_class(self) -> Any:
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier

    def _fit_estimator(
        self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None
    ) -> None:
        c = self.config
        self.estimator_ = self._estimator_class()(
            n_estimators=c["n_estimators"],
            max_features=c["max_features"],
            min_samples_leaf=c["min_samples_leaf"],
            class_weight=self.class_weight_,
            n_jobs=self.n_jobs(),
            random_state=c["seed"],
            **({"criterion": c["criterion"]} if "criterion" in c else {}),
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


class ExtraTrees(RandomForest):
    """Extremely randomised trees (scikit-learn ``ExtraTreesClassifier``: split thresholds
    drawn at random, no bootstrap) on engineered features; ``criterion`` "gini" or
    "entropy"."""

    @classmethod
    def estimator_defaults(cls) -> dict[str, Any]:
        return {**super().estimator_defaults(), "criterion": "gini"}

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        if self.config["criterion"] not in ("gini", "entropy", "log_loss"):
            raise ModelError(f"criterion must be 'gini', 'entropy' or 'log_loss', "
                             f"got {self.config['criterion']!r}")

    def _estimator_class(self) -> Any:
        from sklearn.ensemble import ExtraTreesClassifier

        return ExtraTreesClassifier


class Quant(ExtraTrees):
    """QUANT (Dempster, Schmidt & Webb 2024): interval quantiles of the series, its
    differences and Fourier magnitudes (``features=["quantiles"]``,
    :mod:`cropscope.features.intervals`) classified by extremely randomised trees with the
    paper's settings: 200 trees, 10 % of the features per split, entropy criterion."""

    default_features = ("quantiles",)

    @classmethod
    def estimator_defaults(cls) -> dict[str, Any]:
        return {**super().estimator_defaults(), "n_estimators": 200, "max_features": 0.1,
                "criterion": "entropy"}
