"""Multinomial logistic regression on engineered features: the fast baseline.

A linear model is what wall-to-wall maps of very large areas reach for when a forest is
too slow to predict: prediction is one matrix product per batch. Features are standardised
with the training mean and standard deviation; missing values (gaps) become the mean.
Saved as plain arrays (``.npz``), never pickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cropscope.models._tabular import FeatureClassifier

__all__ = ["LogisticRegression"]

_WEIGHTS = "logreg.npz"


class LogisticRegression(FeatureClassifier):
    """Multinomial logistic regression (scikit-learn, L2) on standardised features."""

    requires = ("scikit-learn",)
    default_features: tuple[str, ...] = ("values",)

    @classmethod
    def estimator_defaults(cls) -> dict[str, Any]:
        return {"C": 1.0, "max_iter": 500, "class_weight": "balanced"}

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean_) / self.scale_
        return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)

    def _fit_estimator(
        self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None
    ) -> None:
        from sklearn.linear_model import LogisticRegression as SkLogisticRegression

        c = self.config
        self.mean_ = np.nan_to_num(np.nanmean(x, axis=0)).astype(np.float32)
        std = np.nanstd(x, axis=0).astype(np.float32)
        self.scale_ = np.where(np.isfinite(std) & (std > 0), std, 1.0).astype(np.float32)
        est = SkLogisticRegression(C=c["C"], max_iter=c["max_iter"],
                                   class_weight=c["class_weight"], random_state=c["seed"])
        est.fit(self._standardise(x), y)
        self.classes_ = est.classes_.astype(np.int64)
        coef, intercept = est.coef_, est.intercept_
        if coef.shape[0] == 1:  # scikit-learn keeps one row for two classes
            coef, intercept = np.vstack([-coef, coef]) / 2, np.hstack([-intercept, intercept]) / 2
        self.coef_ = coef.astype(np.float32)
        self.intercept_ = intercept.astype(np.float32)

    def _estimator_proba(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits = self._standardise(x) @ self.coef_.T + self.intercept_
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True), self.classes_

    def _save_weights(self, directory: Path) -> None:
        from cropscope.io import atomic_path

        with atomic_path(directory / _WEIGHTS) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, mean=self.mean_, scale=self.scale_, coef=self.coef_,
                     intercept=self.intercept_, classes=self.classes_)  # fmt: skip

    def _load_weights(self, directory: Path) -> None:
        from cropscope.errors import ModelError
        from cropscope.io import read_arrays

        data = read_arrays(directory / _WEIGHTS, ("mean", "scale", "coef", "intercept",
                                                  "classes"), error=ModelError)
        self.mean_, self.scale_ = data["mean"], data["scale"]
        self.coef_, self.intercept_ = data["coef"], data["intercept"]
        self.classes_ = data["classes"]
