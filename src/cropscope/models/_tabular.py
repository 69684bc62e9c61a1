"""Shared base for models that classify an engineered feature table (RF, LightGBM, logreg).

The feature recipe (``features``) is part of the model configuration, so the same
features are rebuilt at inference from the model card alone: train/inference parity.

Maps reach these models through :meth:`FeatureClassifier.predict_proba_pixels`, which builds
the table straight from the map job's band-major series ``[C, T, N]``
(:mod:`cropscope.mapping.pixels`): the ``values`` block of
:func:`~cropscope.features.tabular.build_features` *is* that array seen as ``[N, C*T]``
(column-major; gaps filled in place, :func:`~cropscope.features.gapfill.fill_pixel_gaps`),
``diff`` one subtraction of it; other blocks go through ``build_features`` itself. The table
equals ``build_features`` of the same series, bit for bit
(``tests/mapping/test_pixels.py``), without the ``[N, T, C]`` copies, masks and band
selections of the ``TimeSeriesSet`` route, which were more than half of a map job's time
with a linear model.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError, ModelError
from cropscope.features.gapfill import fill_pixel_gaps
from cropscope.models.base import Classifier, _check_pixels
from cropscope.threads import current_threads, ensure_threads

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
        return self._table_proba(self._estimator_proba(x), len(x))

    def _table_proba(self, result: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
        proba, codes = result
        out = np.zeros((n, len(self.classes)), dtype=np.float32)
        out[:, codes] = proba
        return out

    def _estimator_proba_owned(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_estimator_proba` of a table the caller no longer needs (it may be
        overwritten: the linear model standardises it in place)."""
        return self._estimator_proba(x)

    def predict_proba_pixels(self, values: np.ndarray, mask: np.ndarray | None = None,
                             dates: np.ndarray | None = None) -> np.ndarray:
        """:meth:`Classifier.predict_proba_pixels` through :meth:`pixel_features` (see the
        module docstring); equal to :meth:`predict_proba` of the same series."""
        values = _check_pixels(values, self._require_card())
        ensure_threads()
        x = self.pixel_features(values, mask, dates)
        return self._table_proba(self._estimator_proba_owned(x), len(x))

    def pixel_features(self, values: np.ndarray, mask: np.ndarray | None = None,
                       dates: np.ndarray | None = None) -> np.ndarray:
        """The feature table ``float32 [N, D]`` (column-major) of band-major pixel series
        ``values float32 [C, T, N]`` (the card's bands; gaps are filled in place), equal to
        :meth:`features` of the same series as a :class:`TimeSeriesSet`, bit for bit.

        ``mask [T, N]``: valid steps (every band finite there); derived when None. Series
        without a valid step raise :class:`DataError`, as in :meth:`features`. With the
        ``values`` features alone the table is ``values`` itself, seen as ``[N, C*T]``.
        """
        from cropscope.features.tabular import FEATURE_KINDS, build_features

        n_bands, n_times, n = values.shape
        bands = list(self._require_card().bands)
        spec = self.config["features"]
        items = list(dict.fromkeys([spec] if isinstance(spec, str) else spec))
        if mask is None:
            mask = np.isfinite(values).all(axis=0)

        sets: dict[int, TimeSeriesSet] = {}

        def as_set(series: np.ndarray) -> TimeSeriesSet:
            if id(series) not in sets:
                sets[id(series)] = TimeSeriesSet(
                    values=np.ascontiguousarray(series.transpose(2, 1, 0)), bands=bands,
                    dates=dates, mask=mask.T)
            return sets[id(series)]

        if not items or any(item not in FEATURE_KINDS for item in items):
            return self.features(as_set(values))[0]  # raises the usual error
        empty = ~mask.any(axis=0)
        if empty.any():
            raise DataError(f"cannot build features: {int(empty.sum())} series have no valid "
                            "observation (all NaN); drop them first")
        days = None
        if dates is not None:
            day_values = np.asarray(dates).astype("datetime64[D]")
            if np.isnat(day_values).any():
                raise DataError("dates contain missing values (NaT); drop or date those steps "
                                "first")
            days = day_values.astype(np.int64).astype(np.float64)
        # values, diff and stats read the filled series or only valid steps: fill in place
        in_place = set(items) <= {"values", "diff", "stats"}
        filled = values if in_place else values.copy()
        if {"values", "diff", "indices"} & set(items):
            fill_pixel_gaps(filled, mask, days)
        if items == ["values"]:
            return filled.reshape(n_bands * n_times, n).T
        widths = {"values": n_bands * n_times, "diff": n_bands * (n_times - 1)}
        others = {item: build_features(as_set(values), spec=[item],
                                       harmonic_order=self.config["harmonic_order"])[0]
                  for item in items if item not in widths}  # indices, harmonics, stats
        table = np.empty((sum(widths.get(i) or others[i].shape[1] for i in items), n),
                         dtype=np.float32)  # feature-major: each feature a contiguous row
        row = 0
        for item in items:
            width = widths.get(item) or others[item].shape[1]
            block = table[row : row + width]
            if item == "values":
                block[...] = filled.reshape(width, n)
            elif item == "diff":
                np.subtract(filled[:, 1:], filled[:, :-1],
                            out=block.reshape(n_bands, n_times - 1, n))  # fmt: skip
            else:
                block[...] = others[item].T
            row += width
        return table.T


def _is_parameter_error(exc: Exception) -> bool:
    """Whether ``exc`` is scikit-learn's or LightGBM's refusal of a parameter value."""
    kind = type(exc)
    return (kind.__name__ == "InvalidParameterError" and kind.__module__.startswith("sklearn")) \
        or (kind.__name__ == "LightGBMError" and ("Unknown token" in str(exc)
                                                  or "Check failed" in str(exc)
                                                  or "parameter" in str(exc).lower()))
