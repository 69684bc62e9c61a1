"""Class-imbalance resampling of a *training* set, and the ``resampled`` wrapper model.

Class weights (``class_weight="balanced"`` of the tree and linear models, the balanced
cross-entropy of the deep models) reweight the loss; resampling changes the samples a model
learns from instead. Methods (:data:`METHODS`), all seeded with ``numpy.random.default_rng``:

- ``none``: the set as it is;
- ``over``: random over-sampling; every class is topped up to the size of the largest one by
  drawing its own samples again (with replacement); the originals are all kept;
- ``under``: random under-sampling; every class is cut to the size of the smallest one
  (drawn without replacement);
- ``smote``: SMOTE (Chawla et al. 2002, through imbalanced-learn): every class is topped up to
  the size of the largest one with synthetic samples ``x_i + u (x_j - x_i)``, ``u ~ U(0, 1)``,
  between a sample ``x_i`` and one of its ``k_neighbors`` nearest neighbours ``x_j`` *of the
  same class*. A class of one sample has no neighbour: it is over-sampled at random instead.

:func:`resample_arrays` works on a table ``x [N, D]`` (e.g. a model's feature table).
:func:`resample_set` works on a :class:`~cropscope.data.TimeSeriesSet` ``[N, T, C]``: SMOTE
sees each series as one row of ``T * C`` values (gaps filled by linear interpolation along
time first, so the synthetic series have no gaps); for the values/diff features of the tree
and linear models (linear in the series) this is SMOTE on their feature table. A synthetic
sample takes dates (when per sample), metadata and per-level labels from its nearest original
of the same class, and a new id (negative for integer ids).

**Where it applies: the training set only.** The ``resampled`` model (registry name) wraps any
registered model (``base``, ``base_config``) and resamples what its ``fit`` receives. Whatever
evaluates it — ``cross_validate``'s folds, ``cropscope tune``'s inner and outer folds, a
stacking ensemble's inner folds — hands ``fit`` the training part only, and validation or
test samples reach the model through ``predict`` alone, never resampled. When the base model
splits a validation share off its training set (``val_fraction`` of the deep models), the
wrapper makes that split *before* resampling and passes it as ``val``, so copies or
interpolations of one sample never sit on both sides of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError, ModelError
from cropscope.models.base import Classifier

__all__ = ["METHODS", "Resampled", "resample_arrays", "resample_set"]

#: the resampling methods (``resample`` option)
METHODS = ("none", "over", "under", "smote")
_BASE_DIR = "base"


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ModelError(f"resample must be one of {', '.join(METHODS)}; got {method!r}")


def _random_indices(y: np.ndarray, method: str, rng: np.random.Generator) -> np.ndarray:
    """Positions (sorted, with repeats for ``over``) of a randomly over/under-sampled set."""
    codes, counts = np.unique(y, return_counts=True)
    parts = []
    for code, count in zip(codes, counts, strict=True):
        own = np.flatnonzero(y == code)
        if method == "over":
            extra = rng.choice(own, size=int(counts.max() - count), replace=True)
            parts.append(np.concatenate([own, extra]))
        else:
            parts.append(rng.choice(own, size=int(counts.min()), replace=False))
    return np.sort(np.concatenate(parts))


def _smote_rows(x: np.ndarray, y: np.ndarray, k_neighbors: int, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic rows and their labels topping every class up to the largest one."""
    try:
        from imblearn.over_sampling import SMOTE
    except ImportError:
        raise ModelError("resample='smote' needs the optional dependency imbalanced-learn; "
                         "install it with: pip install 'cropscope[tune]'") from None
    codes, counts = np.unique(y, return_counts=True)
    target = int(counts.max())
    rng = np.random.default_rng(seed)
    singles = [c for c, n in zip(codes, counts, strict=True) if n < 2 and n < target]
    new_x, new_y = [], []
    for code in singles:  # no neighbour to interpolate towards: plain copies
        own = np.flatnonzero(y == code)
        pick = rng.choice(own, size=target - own.size, replace=True)
        new_x.append(x[pick])
        new_y.append(y[pick])
    smote_classes = [c for c, n in zip(codes, counts, strict=True) if 2 <= n < target]
    if smote_classes:
        k = int(min(k_neighbors, *(int((y == c).sum()) - 1 for c in smote_classes)))
        strategy = {int(c): target for c in smote_classes}
        sampler = SMOTE(sampling_strategy=strategy, k_neighbors=k, random_state=seed)
        xs, ys = sampler.fit_resample(x, y)
        # imbalanced-learn returns the input rows first, then the synthetic ones
        if xs.shape[0] < x.shape[0] or not np.array_equal(xs[: x.shape[0]], x):
            raise RuntimeError("imbalanced-learn's SMOTE did not keep the input rows first")
        new_x.append(np.asarray(xs[x.shape[0]:], dtype=x.dtype))
        new_y.append(np.asarray(ys[x.shape[0]:], dtype=y.dtype))
    if not new_x:
        return x[:0], y[:0]
    return np.concatenate(new_x), np.concatenate(new_y)


def resample_arrays(x: np.ndarray, y: np.ndarray, method: str = "over", *, seed: int = 0,
                    k_neighbors: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Resample a table ``x [N, D]`` with labels ``y [N]`` (see the module doc).

    ``over``/``under`` return the chosen rows in their original order (``over`` repeats rows);
    ``smote`` returns the original rows followed by the synthetic ones. ``x`` must be finite
    for ``smote``."""
    _check_method(method)
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise DataError(f"resampling needs x [N, D] and y [N], got {x.shape} and {y.shape}")
    if method == "none" or y.size == 0:
        return x, y
    if method in ("over", "under"):
        idx = _random_indices(y, method, np.random.default_rng(seed))
        return x[idx], y[idx]
    if not np.isfinite(x).all():
        raise DataError("SMOTE needs finite values; fill the gaps first")
    sx, sy = _smote_rows(x, y, k_neighbors, seed)
    return np.concatenate([x, sx]), np.concatenate([y, sy])


def _new_ids(ids: np.ndarray, n: int) -> np.ndarray:
    """``n`` ids that no sample of ``ids`` has: negative integers below every id (-1, -2,
    ... for the usual non-negative ids, so they cannot meet the ids of samples elsewhere in
    the data, e.g. a test fold), else ``smote-i`` names."""
    if ids.dtype.kind in "iu":
        start = min(int(ids.min(initial=0)), 0) - 1
        return (start - np.arange(n)).astype(np.int64)
    taken = {str(i) for i in ids}
    out: list[str] = []
    i = 0
    while len(out) < n:
        name = f"smote-{i}"
        if name not in taken:
            out.append(name)
        i += 1
    return np.asarray(out, dtype=object)


def resample_set(ts: TimeSeriesSet, method: str = "over", *, seed: int = 0,
                 k_neighbors: int = 5) -> TimeSeriesSet:
    """``ts`` resampled by ``method`` (see the module doc); unlabelled samples are dropped."""
    _check_method(method)
    if ts.labels is None:
        raise DataError("resampling needs labelled samples")
    if method == "none":
        return ts
    labelled = ts if (ts.labels >= 0).all() else ts.subset(ts.labels >= 0)
    assert labelled.labels is not None
    y = labelled.labels
    if method in ("over", "under"):
        return labelled.subset(_random_indices(y, method, np.random.default_rng(seed)))
    from cropscope.features.gapfill import interpolate_gaps

    n, t, c = labelled.values.shape
    filled = interpolate_gaps(labelled).values.reshape(n, t * c).astype(np.float64)
    sx, sy = _smote_rows(filled, y, k_neighbors, seed)
    if sy.size == 0:
        return labelled
    donors = _nearest_same_class(filled, y, sx, sy)
    donor_set = labelled.subset(donors)
    assert labelled.ids is not None
    synthetic = donor_set.replace(values=sx.reshape(-1, t, c).astype(np.float32),
                                  ids=_new_ids(labelled.ids, sy.size))
    return _concat(labelled, synthetic)


def _nearest_same_class(x: np.ndarray, y: np.ndarray, sx: np.ndarray, sy: np.ndarray
                        ) -> np.ndarray:
    """For each synthetic row, the position of the nearest original row of its class."""
    from sklearn.neighbors import NearestNeighbors

    out = np.empty(sy.size, dtype=np.int64)
    for code in np.unique(sy):
        own = np.flatnonzero(y == code)
        rows = np.flatnonzero(sy == code)
        nn = NearestNeighbors(n_neighbors=1).fit(x[own])
        out[rows] = own[nn.kneighbors(sx[rows], return_distance=False)[:, 0]]
    return out


def _concat(a: TimeSeriesSet, b: TimeSeriesSet) -> TimeSeriesSet:
    """Two sets with the same bands, time steps and classes, one after the other."""
    import pandas as pd

    dates = a.dates
    if a.dates is not None and a.dates.ndim == 2:
        assert b.dates is not None
        dates = np.concatenate([a.dates, b.dates])
    assert a.ids is not None and b.ids is not None and a.mask is not None \
        and b.mask is not None and a.labels is not None and b.labels is not None
    ids = np.concatenate([a.ids.astype(object), b.ids.astype(object)]) \
        if a.ids.dtype != b.ids.dtype else np.concatenate([a.ids, b.ids])
    levels = None if a.level_labels is None or b.level_labels is None \
        else np.concatenate([a.level_labels, b.level_labels])
    return TimeSeriesSet(
        values=np.concatenate([a.values, b.values]), bands=list(a.bands), dates=dates,
        mask=np.concatenate([a.mask, b.mask]), labels=np.concatenate([a.labels, b.labels]),
        classes=list(a.classes), ids=ids,
        meta=pd.concat([a.meta, b.meta], ignore_index=True), taxonomy=a.taxonomy,
        level_labels=levels)


class Resampled(Classifier):
    """Any registered model trained on a resampled (over/under/SMOTE) training set."""

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {
            "base": "lightgbm",
            "base_config": {},
            "resample": "over",
            "k_neighbors": 5,
            "seed": 0,
        }

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        _check_method(self.config["resample"])
        k = self.config["k_neighbors"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ModelError(f"k_neighbors must be a positive integer, got {k!r}")
        if not isinstance(self.config["base_config"], dict):
            raise ModelError("base_config must be a mapping of the base model's options")
        if self.config["base"] == "resampled":
            raise ModelError("a resampled model cannot wrap another resampled model")
        self._new_base()  # unknown base names and bad options fail now
        self.base_: Classifier | None = None

    def _new_base(self) -> Classifier:
        from cropscope.models.registry import create_model, get_model_class

        name = str(self.config["base"])
        options = dict(self.config["base_config"])
        if "seed" in get_model_class(name).default_config():
            options.setdefault("seed", self.config["seed"])
        return create_model(name, **options)

    def _fit(self, train: TimeSeriesSet, val: TimeSeriesSet | None, progress: bool) -> None:
        base = self._new_base()
        share = base.config.get("val_fraction")
        if val is None and isinstance(share, int | float) and 0 < share < 1:
            # the base model would split its validation share off the resampled set: split
            # first, so no copy or interpolation of a sample lands on both sides
            from cropscope.data.splits import train_val_split

            tr, va = train_val_split(train, float(share), int(self.config["seed"]))
            train, val = train.subset(tr), train.subset(va)
        seed, k = int(self.config["seed"]), int(self.config["k_neighbors"])
        before = train.class_counts()
        train = resample_set(train, self.config["resample"], seed=seed, k_neighbors=k)
        folder = self.checkpoint_dir
        self.base_ = base.fit(train, val, progress=progress, resume=self.resume,
                              checkpoint_dir=None if folder is None else folder / _BASE_DIR)
        self._require_card().extra.update(class_counts_before=before,
                                          class_counts_after=train.class_counts())

    def _require_base(self) -> Classifier:
        if self.base_ is None:
            raise ModelError("the resampled model is not fitted yet")
        return self.base_

    def _predict_proba(self, ts: TimeSeriesSet) -> np.ndarray:
        return self._require_base().predict_proba(ts)

    def predict_proba_pixels(self, values: np.ndarray, mask: np.ndarray | None = None,
                             dates: np.ndarray | None = None) -> np.ndarray:
        """The base model's own pixel route (the feature-table models' shorter one):
        resampling changed what it learnt from, not what it predicts from."""
        self._require_card()
        return self._require_base().predict_proba_pixels(values, mask, dates)

    def _save_weights(self, directory: Path) -> None:
        self._require_base().save(directory / _BASE_DIR)

    def _load_weights(self, directory: Path) -> None:
        from cropscope.runs import inside

        base = Classifier.load(inside(directory, _BASE_DIR))
        if base.name != self.config["base"]:
            raise ModelError(f"{directory}: the saved base model is {base.name!r}, the "
                             f"configuration names {self.config['base']!r}")
        self.base_ = base
