"""Support vector machine (RBF kernel) on standardised features, saved without pickle.

The classic classifier of spectra: sits' ``sits_svm`` (radial kernel, cost 10, the
default here too), the SVM of Picoli et al. (2018) on the Mato Grosso samples, and the
best model on the Indian Pines window once each spectrum is normalised (``snv``) and
averaged over its 3 x 3 neighbourhood (``patch_size=3``; ``docs/hyperspectral.md``).

Features are standardised with the training mean and standard deviation (missing values
become the mean) and fed to scikit-learn's ``SVC`` (libsvm, one-vs-one), class-balanced
by default. Probabilities: sigmoid (Platt) calibration of the SVM's one-vs-rest scores on
``calibration_folds`` stratified folds of the training set, the SVM itself refit on all of
it (``CalibratedClassifierCV(ensemble=False)``, the replacement scikit-learn gives for
``SVC(probability=True)``). The folds are drawn from ``seed``, so a fit is reproducible.

Cost: training grows with the square of the number of samples (libsvm) and prediction
with the number of support vectors: a model for tens of thousands of samples, not
millions; a map predicts in blocks of rows.

Saved as ``svm.skops`` (scikit-learn objects, loaded by skops with only the two
calibration types trusted beyond its defaults; nothing is unpickled) and ``svm.npz`` (the
standardisation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cropscope.errors import ModelError
from cropscope.models._tabular import (
    FeatureClassifier,
    dump_skops,
    fit_standardiser,
    load_skops,
    standardise,
)

__all__ = ["SupportVectorMachine"]

_WEIGHTS = "svm.skops"
_SCALING = "svm.npz"
#: the only non-default types a saved SVM may contain; anything else is refused
_TRUSTED_TYPES = ["sklearn.calibration._CalibratedClassifier",
                  "sklearn.calibration._SigmoidCalibration"]
#: rows predicted at a time (bounds libsvm's kernel buffers and the standardised copy)
_ROWS_PER_BLOCK = 65536


class SupportVectorMachine(FeatureClassifier):
    """Support vector machine (RBF kernel, scikit-learn) on standardised features."""

    requires = ("scikit-learn", "skops")
    default_features: tuple[str, ...] = ("values",)

    @classmethod
    def estimator_defaults(cls) -> dict[str, Any]:
        return {"C": 10.0, "gamma": "scale", "class_weight": "balanced",
                "calibration_folds": 5}

    def _fit_estimator(
        self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None
    ) -> None:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.model_selection import StratifiedKFold
        from sklearn.svm import SVC

        c = self.config
        folds = c["calibration_folds"]
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise ModelError(f"calibration_folds must be an integer >= 2, got {folds!r}")
        smallest = int(np.bincount(np.unique(y, return_inverse=True)[1]).min())
        if smallest < 2:
            raise ModelError("the svm needs at least 2 training samples of every class "
                             "(its probabilities are calibrated by cross-validation)")
        self.mean_, self.scale_ = fit_standardiser(x)
        svc = SVC(C=c["C"], gamma=c["gamma"], kernel="rbf", class_weight=self.class_weight_)
        cv = StratifiedKFold(min(folds, smallest), shuffle=True, random_state=c["seed"])
        self.estimator_ = CalibratedClassifierCV(svc, method="sigmoid", cv=cv, ensemble=False)
        self.estimator_.fit(standardise(x, self.mean_, self.scale_), y)
        self.estimator_.cv = cv.n_splits  # the splitter object is not needed to predict

    def _estimator_proba(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        est = self.estimator_
        parts = [est.predict_proba(standardise(x[a : a + _ROWS_PER_BLOCK], self.mean_,
                                               self.scale_)).astype(np.float32)
                 for a in range(0, len(x), _ROWS_PER_BLOCK)]  # fmt: skip
        return np.concatenate(parts), np.asarray(est.classes_)

    def _save_weights(self, directory: Path) -> None:
        from cropscope.io import atomic_path

        dump_skops(self.estimator_, directory / _WEIGHTS)
        with atomic_path(directory / _SCALING) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, mean=self.mean_, scale=self.scale_)

    def _load_weights(self, directory: Path) -> None:
        from sklearn.calibration import CalibratedClassifierCV

        from cropscope.io import read_arrays

        path = directory / _WEIGHTS
        est = load_skops(path, _TRUSTED_TYPES)
        if not isinstance(est, CalibratedClassifierCV):
            raise ModelError(f"{path} does not hold a calibrated SVM")
        data = read_arrays(directory / _SCALING, ("mean", "scale"), error=ModelError)
        self.mean_, self.scale_ = data["mean"], data["scale"]
        self.estimator_ = est
