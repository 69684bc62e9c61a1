"""Shared base for models that classify an engineered feature table (RF, LightGBM).

The feature recipe (``features``) is part of the model configuration, so the same
features are rebuilt at inference from the model card alone: train/inference parity.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError, ModelError
from cropscope.models.base import Classifier
from cropscope.threads import current_threads

__all__ = ["FeatureClassifier"]


class FeatureClassifier(Classifier):
    """A classifier over ``cropscope.features.build_features`` of the input series."""

    #: feature recipe used when the config does not set one
    default_features: tuple[str, ...] = ("values", "diff", "stats")

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {
            "features": list(cls.default_features),
            "harmonic_order": 2,
            "seed": 0,
            # None: cropscope's thread count (--threads, $CROPSCOPE_THREADS, load-aware)
            "n_jobs": None,
            **cls.estimator_defaults(),
        }

    @classmethod
    @abstractmethod
    def estimator_defaults(cls) -> dict[str, Any]:
        """Options of the underlying estimator with their defaults."""

    @abstractmethod
    def _fit_estimator(
        self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None
    ) -> None:
        """Fit the underlying estimator on the feature table."""

    @abstractmethod
    def _estimator_proba(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and the class codes of their columns."""

    def n_jobs(self) -> int:
        """Threads for the estimator: the ``n_jobs`` option, else cropscope's thread count."""
        n = self.config.get("n_jobs")
        return current_threads() if n is None else int(n)

    def features(self, ts: TimeSeriesSet) -> tuple[np.ndarray, list[str]]:
        """The feature table ``[N, D]`` and column names for ``ts``."""
        from cropscope.features.tabular import build_features

        return build_features(
            ts, spec=self.config["features"], harmonic_order=self.config["harmonic_order"]
        )

    def _fit(self, train: TimeSeriesSet, val: TimeSeriesSet | None, progress: bool) -> None:
        x, names = self.features(train)
        x_val = y_val = None
        if val is not None and val.labels is not None:
            x_val, _ = self.features(val)
            y_val = val.labels
        if train.labels is None:  # Classifier.fit checked; kept for the type
            raise DataError("training data have no labels")
        try:
            self._fit_estimator(x, train.labels, x_val, y_val)
        except Exception as exc:
            if _is_parameter_error(exc):  # an option value the estimator refuses
                raise ModelError(f"model {self.name!r}: {str(exc).strip()}") from None
            raise
        assert self.card is not None
        self.card.extra["feature_names"] = names

    def _predict_proba(self, ts: TimeSeriesSet) -> np.ndarray:
        x, _ = self.features(ts)
        proba, codes = self._estimator_proba(x)
        out = np.zeros((len(x), len(self.classes)), dtype=np.float32)
        out[:, codes] = proba
        return out


def _is_parameter_error(exc: Exception) -> bool:
    """Whether ``exc`` is scikit-learn's or LightGBM's refusal of a parameter value."""
    kind = type(exc)
    return (kind.__name__ == "InvalidParameterError" and kind.__module__.startswith("sklearn")) \
        or (kind.__name__ == "LightGBMError" and ("Unknown token" in str(exc)
                                                  or "Check failed" in str(exc)
                                                  or "parameter" in str(exc).lower()))
