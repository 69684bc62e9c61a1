"""Multinomial logistic regression on engineered features: the fast baseline.

A linear model is what wall-to-wall maps of very large areas reach for when a forest is
too slow to predict: prediction is one matrix product per batch. Features are standardised
with the training mean and standard deviation; missing values (gaps) become the mean.
Saved as plain arrays (``.npz``), never pickled.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from cropscope.models._tabular import FeatureClassifier, fit_standardiser, standardise

__all__ = ["LogisticRegression"]

#: rows standardised and multiplied at a time in the map route (~2 MB of 120 features)
_ROWS_PER_BLOCK = 4096


class LogisticRegression(FeatureClassifier):
    """Multinomial logistic regression (scikit-learn, L2) on standardised features."""

    requires = ("scikit-learn",)
    default_features: tuple[str, ...] = ("values",)
    #: the plain-array file of the fitted model (a subclass with other training, e.g.
    #: :class:`~cropscope.models.discriminant.LinearDiscriminant`, names its own)
    weights_file = "logreg.npz"

    @classmethod
    def estimator_defaults(cls) -> dict[str, Any]:
        return {"C": 1.0, "max_iter": 500, "class_weight": "balanced"}

    def _standardise(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return standardise(x, self.mean_, self.scale_, out=out)

    def _fit_estimator(
        self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None
    ) -> None:
        from sklearn.linear_model import LogisticRegression as SkLogisticRegression

        c = self.config
        self.mean_, self.scale_ = fit_standardiser(x)
        est = SkLogisticRegression(C=c["C"], max_iter=c["max_iter"],
                                   class_weight=self.class_weight_, random_state=c["seed"])
        est.fit(self._standardise(x), y)
        self._set_linear(est.classes_, est.coef_, est.intercept_)

    def _set_linear(self, classes: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> None:
        """Keep a fitted scikit-learn linear classifier's scores ``x @ coef.T + intercept``
        (on standardised ``x``) as ``[K, F]`` / ``[K]`` float32, whose softmax is its
        probabilities."""
        self.classes_ = np.asarray(classes).astype(np.int64)
        coef, intercept = np.atleast_2d(coef), np.atleast_1d(intercept)
        if coef.shape[0] == 1:  # scikit-learn keeps one row for two classes
            coef, intercept = np.vstack([-coef, coef]) / 2, np.hstack([-intercept, intercept]) / 2
        self.coef_ = coef.astype(np.float32)
        self.intercept_ = intercept.astype(np.float32)

    def _estimator_proba(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._softmax(self._standardise(x))

    def _estimator_proba_owned(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Standardised in place (the map job's window buffer) and multiplied in blocks of
        rows that stay in the cache between the two steps. Every block has two rows or more:
        a single row goes through BLAS's vector kernel, whose last bit can differ from the
        matrix kernel of the other rows (a tiled map would then differ from an untiled one),
        so a table of one row is predicted as two copies of it."""
        n = len(x)
        if n == 1:
            proba, codes = self._softmax(self._standardise(
                np.asfortranarray(np.repeat(x, 2, axis=0))))
            return proba[:1], codes
        bounds = [*range(0, n, _ROWS_PER_BLOCK), n]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
            del bounds[-2]  # a last block of one row joins the one before
        parts = [self._softmax(self._standardise(x[a:b], out=x[a:b]))[0]
                 for a, b in itertools.pairwise(bounds)]
        return (parts[0] if len(parts) == 1 else np.concatenate(parts)), self.classes_

    def _softmax(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits = z @ self.coef_.T + self.intercept_
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True), self.classes_

    def _save_weights(self, directory: Path) -> None:
        from cropscope.io import atomic_path

        with atomic_path(directory / self.weights_file) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, mean=self.mean_, scale=self.scale_, coef=self.coef_,
                     intercept=self.intercept_, classes=self.classes_)  # fmt: skip

    def _load_weights(self, directory: Path) -> None:
        from cropscope.errors import ModelError
        from cropscope.io import read_arrays

        data = read_arrays(directory / self.weights_file, ("mean", "scale", "coef", "intercept",
                                                  "classes"), error=ModelError)
        self.mean_, self.scale_ = data["mean"], data["scale"]
        self.coef_, self.intercept_ = data["coef"], data["intercept"]
        self.classes_ = data["classes"]
