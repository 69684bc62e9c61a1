"""Cross-validation folds and train/validation splits on a :class:`TimeSeriesSet`.

Built on :mod:`sklearn.model_selection`. Indices are positions into the set, sorted; samples
without a label (``-1``) are left out of every fold.

Fold strategies of :func:`make_folds`:

- no ``group``, ``stratify=True``: ``StratifiedKFold(cv, shuffle=True, random_state=seed)``;
  every class needs at least ``cv`` samples.
- no ``group``, ``stratify=False``: ``KFold(cv, shuffle=True, random_state=seed)``.
- ``group`` (a metadata column such as ``region``, ``year`` or ``polygon_id``): no group is
  ever split between train and test.

  - ``cv`` equal to the number of groups: leave-one-group-out (``LeaveOneGroupOut``), one
    fold per group, independent of ``seed``.
  - ``cv`` below the number of groups: ``StratifiedGroupKFold(cv, shuffle=True,
    random_state=seed)`` (class proportions kept as far as whole groups allow), or
    ``GroupKFold(cv)`` (balanced fold sizes, deterministic) with ``stratify=False``.
  - ``cv`` above the number of groups: an :class:`EvaluationError`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import (
    GroupKFold,
    KFold,
    LeaveOneGroupOut,
    StratifiedGroupKFold,
    StratifiedKFold,
    train_test_split,
)

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError, EvaluationError

__all__ = ["make_folds", "train_val_split"]

Fold = tuple[np.ndarray, np.ndarray]


def _labelled_positions(ts: TimeSeriesSet, need_labels: bool) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the labelled samples and their labels (all samples if unlabelled allowed)."""
    if ts.labels is None:
        if need_labels:
            raise DataError("stratified folds need labels, but this time-series set has none")
        return np.arange(ts.n_samples), np.zeros(ts.n_samples, dtype=np.int64)
    pos = np.flatnonzero(ts.labels >= 0)
    return pos, ts.labels[pos]


def _check_class_counts(y: np.ndarray, classes: list[str], cv: int) -> None:
    codes, counts = np.unique(y, return_counts=True)
    small = [(classes[c], int(n)) for c, n in zip(codes, counts, strict=True) if n < cv]
    if not small:
        return
    if len(small) == 1:
        name, n = small[0]
        raise EvaluationError(
            f"class {name!r} has {n} sample{'s' if n != 1 else ''}, fewer than the {cv} folds; "
            "use fewer folds or drop the class"
        )
    listed = ", ".join(f"{name!r} ({n})" for name, n in small)
    raise EvaluationError(
        f"classes {listed} have fewer samples than the {cv} folds; "
        "use fewer folds or drop these classes"
    )


def _group_labels(ts: TimeSeriesSet, group: str, pos: np.ndarray) -> np.ndarray:
    values = ts.group_values(group)[pos]
    missing = pd.isna(values)
    if missing.any():
        raise DataError(
            f"metadata column {group!r} has {int(missing.sum())} missing values; "
            "fill them or drop those samples before group cross-validation"
        )
    return values


def make_folds(
    ts: TimeSeriesSet,
    cv: int = 5,
    seed: int = 0,
    group: str | None = None,
    stratify: bool = True,
) -> list[Fold]:
    """``cv`` folds ``(train_idx, test_idx)`` of positions into ``ts`` (see the module doc).

    Each labelled sample lands in exactly one test fold; the same ``seed`` gives the same folds.
    """
    if isinstance(cv, bool) or not isinstance(cv, int | np.integer) or cv < 2:
        raise EvaluationError(f"cross-validation needs at least 2 folds, got cv={cv!r}")
    cv = int(cv)
    pos, y = _labelled_positions(ts, need_labels=stratify)
    if pos.size < cv:
        raise EvaluationError(f"{pos.size} labelled samples cannot be split into {cv} folds")

    if group is None:
        if stratify:
            _check_class_counts(y, ts.classes, cv)
            splitter = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
        else:
            splitter = KFold(n_splits=cv, shuffle=True, random_state=seed)
        splits = splitter.split(pos, y)
    else:
        groups = _group_labels(ts, group, pos)
        uniq = pd.unique(groups)
        n_groups = len(uniq)
        if cv > n_groups:
            shown = ", ".join(map(str, sorted(uniq, key=str)[:10]))
            more = ", ..." if n_groups > 10 else ""
            raise EvaluationError(
                f"cv={cv} folds but metadata column {group!r} has only {n_groups} group"
                f"{'s' if n_groups != 1 else ''} ({shown}{more}); use cv <= {n_groups}"
            )
        if cv == n_groups:
            splitter = LeaveOneGroupOut()
        elif stratify:
            splitter = StratifiedGroupKFold(n_splits=cv, shuffle=True, random_state=seed)
        else:
            splitter = GroupKFold(n_splits=cv)
        with warnings.catch_warnings():
            # "least populated class has only n members": stratification is best effort here
            warnings.simplefilter("ignore", UserWarning)
            splits = list(splitter.split(pos, y, groups))

    folds: list[Fold] = []
    for i, (tr, te) in enumerate(splits):
        if te.size == 0 or tr.size == 0:
            raise EvaluationError(
                f"fold {i + 1} of {cv} has an empty {'test' if te.size == 0 else 'train'} part; "
                "use fewer folds"
            )
        folds.append((np.sort(pos[tr]), np.sort(pos[te])))
    return folds


def train_val_split(
    ts: TimeSeriesSet, val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split all samples into ``(train_idx, val_idx)`` positions, stratified by label if possible.

    Stratification needs labels, at least 2 samples in every class and at least one sample per
    class on each side; otherwise the split is a plain random one. Both parts are non-empty.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise EvaluationError(f"val_fraction must be between 0 and 1, got {val_fraction!r}")
    n = ts.n_samples
    if n < 2:
        raise EvaluationError(f"cannot split {n} sample(s) into train and validation parts")
    n_val = min(max(1, round(n * float(val_fraction))), n - 1)
    idx = np.arange(n)
    stratify = None
    if ts.labels is not None:
        _, counts = np.unique(ts.labels, return_counts=True)
        n_strata = counts.size
        if counts.min() >= 2 and n_strata <= n_val and n_strata <= n - n_val:
            stratify = ts.labels
    train_idx, val_idx = train_test_split(
        idx, test_size=n_val, random_state=seed, stratify=stratify
    )
    return np.sort(train_idx), np.sort(val_idx)
