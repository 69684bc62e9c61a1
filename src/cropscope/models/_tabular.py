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

Spatial context: with ``patch_size`` k > 1 a feature model takes image patches
(:class:`~cropscope.data.PatchSet`, ``input_kind == "patches"``) and builds its table from
the mean spectrum of each k x k neighbourhood (:meth:`PatchSet.mean_set`), for scenes
(``cropscope evaluate --dataset indian-pines-window --model svm --set patch_size=3``) and
maps alike; the scene split drops training pixels within k // 2 of the test region, as for
the patch networks.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cropscope.data.patches import PatchSet
from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError, ModelError
from cropscope.features.gapfill import fill_pixel_gaps
from cropscope.models.base import Classifier, _check_pixels
from cropscope.threads import current_threads, ensure_threads

__all__ = ["FeatureClassifier", "dump_skops", "fit_standardiser", "load_skops", "standardise"]


def dump_skops(estimator: Any, path: Path) -> None:
    """Write a scikit-learn estimator with skops (no pickle), atomically."""
    import skops.io as sio

    from cropscope.io import atomic_path

    with atomic_path(path) as tmp:
        sio.dump(estimator, tmp)


def load_skops(path: Path, trusted: list[str]) -> Any:
    """Read what :func:`dump_skops` wrote, building only skops' default types and
    ``trusted``; a missing, untrusted or damaged file is one :class:`ModelError`."""
    import skops.io as sio

    if not path.is_file():
        raise ModelError(f"model weights not found: {path}")
    try:
        return sio.load(path, trusted=trusted)
    except sio.exceptions.UntrustedTypesFoundException as exc:
        raise ModelError(f"refusing to load {path}: {exc}") from None
    except Exception as exc:  # a damaged archive: zip, JSON or schema errors
        raise ModelError(f"{path} is not a readable model file: {exc}") from None


def fit_standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and scale ``float32 [D]`` of a training table, ignoring missing
    values; columns without spread get scale 1, columns without values mean 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        mean = np.nan_to_num(np.nanmean(x, axis=0)).astype(np.float32)
        std = np.nanstd(x, axis=0).astype(np.float32)
    scale = np.where(np.isfinite(std) & (std > 0), std, 1.0).astype(np.float32)
    return mean, scale


def standardise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                out: np.ndarray | None = None) -> np.ndarray:
    """``(x - mean) / scale`` with non-finite values set to 0 (the mean), as float32; into
    ``out`` (``x`` itself, say) when the result has its dtype. Two passes plus one
    finiteness check: ``nan_to_num`` made three more full copies of a map window's table."""
    if out is not None and (out.dtype != np.result_type(x, mean, scale)
                            or not out.flags.writeable):
        out = None
    z = np.subtract(x, mean, out=out)
    np.divide(z, scale, out=z)
    bad = ~np.isfinite(z)
    if bad.any():
        z[bad] = 0.0
    return z.astype(np.float32, copy=False)


class FeatureClassifier(Classifier):
    """A classifier over ``cropscope.features.build_features`` of the input series."""

    #: feature recipe used when the config does not set one
    default_features: tuple[str, ...] = ("values", "diff", "stats")
    #: the estimator's class weights, resolved from the option at fit (:meth:`_class_weight`)
    class_weight_: Any = None

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {
            "features": list(cls.default_features),
            "harmonic_order": 2,
            # k > 1: patches in, features of each k x k neighbourhood's mean spectrum
            "patch_size": 1,
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

    @property
    def patch_size(self) -> int:
        """The neighbourhood whose mean spectrum is classified (1: the pixel itself)."""
        if self.card is not None and "patch_size" in self.card.extra:
            return int(self.card.extra["patch_size"])
        size = self.config.get("patch_size", 1)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ModelError(f"patch_size must be a positive odd integer, got {size!r}")
        return size

    @property
    def input_kind(self) -> str:
        """``"patches"`` with a neighbourhood (``patch_size`` > 1), else ``"pixels"``."""
        return "patches" if self.patch_size > 1 else "pixels"

    def _mean_set(self, ps: PatchSet, size: int) -> TimeSeriesSet:
        if ps.patch_size < size:
            raise DataError(f"the model expects {size}x{size} patches, got "
                            f"{ps.patch_size}x{ps.patch_size}")
        return (ps.crop(size) if ps.patch_size > size else ps).mean_set()

    def fit(self, train: TimeSeriesSet | PatchSet,
            val: TimeSeriesSet | PatchSet | None = None, **kwargs: Any) -> FeatureClassifier:
        """:meth:`Classifier.fit`; with ``patch_size`` > 1 on patches (a
        :class:`PatchSet`), whose neighbourhood means are the samples."""
        size = self.patch_size
        if isinstance(train, PatchSet):
            if val is not None and not isinstance(val, PatchSet):
                raise DataError("validation data must be patches like the training data")
            series = self._mean_set(train, size)
            val_series = None if val is None else self._mean_set(val, size)
        else:
            if size > 1:
                raise DataError(f"model {self.name!r} with patch_size={size} takes image "
                                "patches (a scene), not pixel series; use patch_size=1 for "
                                "series")
            if isinstance(val, PatchSet):
                raise DataError("validation data must be a time-series set like the training "
                                "data")
            series, val_series = train, val
        super().fit(series, val_series, **kwargs)
        if isinstance(train, PatchSet):
            self._require_card().extra["patch_size"] = size
        return self

    def predict_proba(self, ts: TimeSeriesSet | PatchSet) -> np.ndarray:
        """Class probabilities of series, or of patches (their neighbourhood means) for a
        model fitted on patches."""
        size = self.patch_size
        if isinstance(ts, PatchSet):
            if "patch_size" not in self._require_card().extra:
                raise DataError(f"model {self.name!r} was trained on pixel series; give it "
                                "a time-series set")
            ts = self._mean_set(ts, size)
        elif size > 1:
            raise DataError(f"model {self.name!r} classifies {size}x{size} neighbourhoods: "
                            "give it image patches, not pixel series")
        return super().predict_proba(ts)

    def n_jobs(self) -> int:
        """Threads for the estimator: the ``n_jobs`` option, else cropscope's thread count."""
        n = self.config.get("n_jobs")
        if n is None:
            return current_threads()
        if isinstance(n, bool) or not isinstance(n, int) or n == 0:
            raise ModelError(f"n_jobs must be a number of threads (>= 1; -1 for every core), "
                             f"got {n!r}")  # fmt: skip
        return n

    def _class_weight(self, classes: Sequence[str]) -> Any:
        """The estimator's ``class_weight`` from the option: ``None``, a string the estimator
        knows (``"balanced"``), or ``{class name: weight}`` (classes not named weigh 1),
        turned into the estimator's ``{class code: weight}``."""
        weight = self.config.get("class_weight")
        if weight is None or isinstance(weight, str):
            return weight  # the estimator checks the name
        if not isinstance(weight, dict):
            raise ModelError(f"class_weight must be 'balanced', null or an object "
                             f"{{class name: weight}}, got {weight!r}")  # fmt: skip
        unknown = sorted(str(k) for k in weight if k not in classes)
        if unknown:
            raise ModelError(f"class_weight names classes the training data do not have: "
                             f"{unknown[:5]}; classes: {list(classes)[:10]}")  # fmt: skip
        bad = {k: v for k, v in weight.items() if isinstance(v, bool)
               or not isinstance(v, int | float) or not np.isfinite(v) or v <= 0}
        if bad:
            raise ModelError(f"class weights must be positive numbers, got {bad}")
        return {list(classes).index(k): float(v) for k, v in weight.items()}

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
        self.class_weight_ = self._class_weight(train.classes)
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
        if self.patch_size > 1:
            raise DataError(f"model {self.name!r} classifies {self.patch_size}x"
                            f"{self.patch_size} neighbourhoods, not single pixels")
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
