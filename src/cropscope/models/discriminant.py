"""Linear discriminant analysis with a shrunk covariance: the classic model of spectra.

Each class is a Gaussian with its own mean and one covariance shared by all classes; a
pixel goes to the class with the highest posterior. With hundreds of correlated bands and a
few thousand labelled pixels the sample covariance is singular or nearly so, so it is
shrunk towards a diagonal (Ledoit–Wolf's optimal amount by default, ``shrinkage="auto"``,
or a fixed ``0..1``); this regularised LDA is the standard first classifier of
hyperspectral imagery, and on the EnMAP Potsdam tiles it is the most accurate model here
(``docs/hyperspectral.md``). Fitting is one covariance and one linear solve (a second for
thousands of pixels x hundreds of bands); prediction is one matrix product, as for
``logreg``.

Features are standardised first (training mean and standard deviation; missing values
become the mean), so the shrinkage target is the correlation matrix's diagonal. Class
priors are the training proportions (``priors="empirical"``) or equal
(``priors="balanced"``, which trades overall accuracy for the recall of rare classes; the
priors also weigh each class's spread in the shared covariance, as in scikit-learn).
The decision scores ``x @ coef.T + intercept`` (``[N, K]``) are kept as plain arrays
(``lda.npz``) and their softmax is the posterior, exactly scikit-learn's
``predict_proba``; nothing is pickled.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from cropscope.errors import ModelError
from cropscope.models._tabular import fit_standardiser
from cropscope.models.linear import LogisticRegression

__all__ = ["LinearDiscriminant"]

_PRIORS = ("empirical", "balanced")


class LinearDiscriminant(LogisticRegression):
    """Linear discriminant analysis (shrunk covariance, scikit-learn) on standardised
    features."""

    weights_file = "lda.npz"

    @classmethod
    def estimator_defaults(cls) -> dict[str, Any]:
        return {"shrinkage": "auto", "priors": "empirical"}

    def _fit_estimator(
        self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None
    ) -> None:
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        c = self.config
        shrinkage = c["shrinkage"]
        fixed = isinstance(shrinkage, numbers.Real) and not isinstance(shrinkage, bool)
        if not (shrinkage in ("auto", None) or (fixed and 0.0 <= float(shrinkage) <= 1.0)):
            raise ModelError(f"lda shrinkage must be 'auto', null or a number in [0, 1], "
                             f"got {shrinkage!r}")
        if c["priors"] not in _PRIORS:
            raise ModelError(f"lda priors must be one of {list(_PRIORS)}, got {c['priors']!r}")
        classes, counts = np.unique(y, return_counts=True)  # two or more (Classifier.fit)
        if counts.min() < 2:
            raise ModelError("lda needs at least 2 training samples of every class "
                             "(each class's spread enters the shared covariance)")
        self.mean_, self.scale_ = fit_standardiser(x)
        priors = np.full(len(classes), 1.0 / len(classes)) if c["priors"] == "balanced" else None
        est = LinearDiscriminantAnalysis(
            solver="lsqr", shrinkage=float(shrinkage) if fixed else shrinkage, priors=priors
        )
        est.fit(self._standardise(x), y)
        self._set_linear(est.classes_, est.coef_, est.intercept_)
