"""Cross-validation, fixed train/test evaluation and the :class:`EvaluationResult` they return.

Predictions are always matched to the truth by class *name*: a model's ``predict`` codes are
read through ``model.classes``, so train and test sets may order their classes differently.
Macro F1 is taken over the classes present in the truth (per fold, and pooled), following the
transfer protocol; per-class rows and confusion matrices still list every class.

Every cross-validation fold records its class counts (``train_class_counts``,
``test_class_counts``) and the classes its training part lacks (``missing_in_train``). Group
folds (leave-region-out, spatial blocks) can hold out every sample of a class; that fold's
model cannot predict the class, so its score says little about the class. Such a fold is a
``UserWarning`` naming the class (an :class:`EvaluationError` with ``strict=True``), checked
before any model is trained.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cropscope.data.splits import make_folds
from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import CropscopeError, EvaluationError
from cropscope.evaluation.metrics import SUMMARY_KEYS, classification_metrics
from cropscope.models.base import Classifier

__all__ = [
    "EvaluationResult",
    "check_fold_classes",
    "cross_validate",
    "evaluate_predictions",
    "evaluate_split",
]

ModelFactory = Callable[[], Classifier]
log = logging.getLogger(__name__)
#: the meta column that holds the block ids of spatial-block CV
BLOCK_COLUMN = "spatial_block"


def _jsonable(obj: Any) -> Any:
    """Plain Python containers and scalars only (numpy values, tuples and paths converted)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return str(obj)


@dataclass
class EvaluationResult:
    """Scores of one evaluation (cross-validation, fixed split or given predictions).

    ``metrics`` is :func:`classification_metrics` pooled over all (out-of-fold) predictions;
    ``y_true``/``y_pred`` are codes into ``classes``, one per evaluated sample, in the order of
    the labelled samples of the input set (``ids`` and ``fold`` align with them).
    """

    metrics: dict[str, Any]
    y_true: np.ndarray
    y_pred: np.ndarray
    classes: list[str]
    fold_metrics: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    ids: np.ndarray | None = None
    fold: np.ndarray | None = None
    #: per-level report (:func:`~cropscope.evaluation.hierarchical.hierarchy_report`)
    hierarchy: dict[str, Any] = field(default_factory=dict)

    @property
    def overall_accuracy(self) -> float:
        return float(self.metrics["overall_accuracy"])

    @property
    def macro_f1(self) -> float:
        return float(self.metrics["macro_f1"])

    def to_dict(self) -> dict[str, Any]:
        """One JSON-ready dict: the pooled metrics at the top level, plus ``summary`` (mean and
        std across folds), ``folds``, ``config`` and ``duration_s``."""
        return _jsonable(
            {
                **self.metrics,
                **self.hierarchy,
                "summary": self.summary,
                "folds": self.fold_metrics,
                "config": self.config,
                "duration_s": round(float(self.duration_s), 3),
            }
        )


# ---------------------------------------------------------------------------- helpers
def _summarise(fold_metrics: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and (population) standard deviation across folds of the summary scores."""
    if not fold_metrics:
        return {}
    out = {}
    for key in SUMMARY_KEYS:
        vals = np.array([m[key] for m in fold_metrics], dtype=float)
        out[key] = {"mean": float(vals.mean()), "std": float(vals.std())}
    return out


def _names_to_codes(names: np.ndarray, classes: list[str]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[str(n)] for n in names], dtype=np.int64)


def _extend_classes(classes: list[str], names: Sequence[str]) -> list[str]:
    """``classes`` followed by any name in ``names`` it lacks (in first-seen order)."""
    out = list(classes)
    for n in names:
        if n not in out:
            out.append(str(n))
    return out


def _predict_names(model: Classifier, ts: TimeSeriesSet) -> np.ndarray:
    codes = np.asarray(model.predict(ts))
    return np.asarray(model.classes, dtype=object)[codes]


def _model_config(model: Any) -> dict[str, Any]:
    name = getattr(model, "name", "") or type(model).__name__
    return {"model": name, "model_config": dict(getattr(model, "config", {}) or {})}


def _labelled(ts: TimeSeriesSet, what: str) -> TimeSeriesSet:
    if ts.labels is None:
        raise EvaluationError(f"the {what} set has no labels to evaluate against")
    keep = ts.labels >= 0
    if not keep.any():
        raise EvaluationError(f"the {what} set has no labelled samples")
    return ts if keep.all() else ts.subset(keep)


def _as_factory(model: ModelFactory | Classifier) -> ModelFactory:
    if isinstance(model, Classifier):
        template = model
        return lambda: type(template)(**template.config)
    if not callable(model):
        raise EvaluationError(f"expected a model factory or a Classifier, got {model!r}")
    return model


def _level_predictions(
    model: Classifier, ts: TimeSeriesSet, decoding: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-level predictions ``[N, L]``: decoded by ``decoding``, and independent."""
    from cropscope.taxonomy.decoding import decode

    probas = model.predict_proba_levels(ts)
    tax = model._require_taxonomy()
    return decode(tax, probas, decoding), decode(tax, probas, "independent")


def _check_levels(ts: TimeSeriesSet) -> None:
    if ts.taxonomy is None or ts.level_labels is None:
        raise EvaluationError(
            "per-level evaluation needs samples with a class hierarchy "
            "(TimeSeriesSet.with_taxonomy, or --taxonomy / a dataset that ships one)"
        )


def _fit(model: Classifier, train: TimeSeriesSet, context: str, progress: bool = False) -> None:
    try:
        model.fit(train, progress=progress)
    except CropscopeError as exc:
        raise type(exc)(f"{context}: {exc}") from None


# ---------------------------------------------------------------------------- public API
def cross_validate(
    model_factory: ModelFactory | Classifier,
    ts: TimeSeriesSet,
    cv: int = 5,
    seed: int = 0,
    group: str | None = None,
    progress: bool = False,
    levels: bool = False,
    decoding: str = "consistent",
    background: str | None = None,
    spatial_blocks: str | None = None,
    strict: bool = False,
) -> EvaluationResult:
    """K-fold cross-validation of a fresh model per fold (folds from :func:`make_folds`).

    ``model_factory()`` must return an unfitted :class:`Classifier` (a model class works; an
    unfitted instance is used as a template for fresh copies); each is fitted on the
    training part only (no ``val``: models split their own inner validation set) and predicts
    the test part. Unlabelled samples are dropped. Every class of ``ts`` stays in the class
    list, so a fold whose training part lacks a class still works. ``progress`` shows a tqdm
    bar ("fold i/k") on stderr, and the fold's training progress (epochs of deep models)
    below it.

    ``levels=True`` (a set with a taxonomy) also scores every taxonomy level: out-of-fold
    per-level predictions decoded by ``decoding`` go into ``result.hierarchy`` (see
    :func:`~cropscope.evaluation.hierarchical.hierarchy_report`).

    ``spatial_blocks`` (e.g. ``"0.5deg"``, ``"10km"``; not with ``group``) groups the folds
    by square blocks of the sample coordinates
    (:func:`~cropscope.evaluation.spatial.coordinate_blocks`); the block ids become the
    groups (``test_groups`` of each fold) and the block description goes into ``config``.
    A fold whose training part lacks a class warns, naming the class (``strict=True``: an
    :class:`EvaluationError` before any training); every fold lists its class counts.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    model_factory = _as_factory(model_factory)
    lab = _labelled(ts, "input")
    if levels:
        _check_levels(lab)
    block_detail: dict[str, Any] = {}
    if spatial_blocks is not None:
        if group is not None:
            raise EvaluationError("give either a group column or spatial blocks, not both")
        from cropscope.evaluation.spatial import coordinate_blocks

        meta = lab.meta
        assert meta is not None  # set by TimeSeriesSet.__post_init__
        blocks, block_detail = coordinate_blocks(meta, spatial_blocks)
        lab = lab.replace(meta=meta.assign(**{BLOCK_COLUMN: blocks}))
        log.info("spatial blocks of %s: %d blocks from %s", block_detail["spatial_blocks"],
                 block_detail["n_blocks"], block_detail["coordinates"])
        group = BLOCK_COLUMN
    folds = make_folds(lab, cv=cv, seed=seed, group=group)
    k = len(folds)
    groups = lab.group_values(group) if group is not None else None
    fold_counts = check_fold_classes(lab, folds, strict=strict)

    pred_names = np.empty(lab.n_samples, dtype=object)
    fold_of = np.full(lab.n_samples, -1, dtype=np.int64)
    n_levels = lab.taxonomy.n_levels if levels and lab.taxonomy is not None else 0
    lv_pred = np.full((lab.n_samples, n_levels), -1, dtype=np.int64)
    lv_ind = lv_pred.copy()
    per_fold: list[tuple[np.ndarray, np.ndarray, dict[str, Any]]] = []
    model_info: dict[str, Any] = {}
    with tqdm(total=k, desc="cross-validation", file=sys.stderr, disable=not progress) as bar:
        for i, (tr, te) in enumerate(folds):
            bar.set_description(f"fold {i + 1}/{k}")
            t0 = time.perf_counter()
            model = model_factory()
            _fit(model, lab.subset(tr), f"fold {i + 1}/{k}", progress)
            pred_names[te] = _predict_names(model, lab.subset(te))
            if levels:
                lv_pred[te], lv_ind[te] = _level_predictions(model, lab.subset(te), decoding)
            fold_of[te] = i
            info: dict[str, Any] = {
                "fold": i + 1,
                "n_train": int(tr.size),
                "n_test": int(te.size),
                "duration_s": round(time.perf_counter() - t0, 3),
                **fold_counts[i],
            }
            if groups is not None:
                info["test_groups"] = sorted({_jsonable(g) for g in groups[te]}, key=str)
            per_fold.append((tr, te, info))
            model_info = model_info or _model_config(model)
            bar.update(1)

    classes = _extend_classes(lab.classes, sorted(set(pred_names)))
    assert lab.labels is not None and lab.ids is not None  # _labelled; ids are always set
    y_true = lab.labels.copy()
    y_pred = _names_to_codes(pred_names, classes)
    fold_metrics = []
    for _, te, info in per_fold:
        m = classification_metrics(y_true[te], y_pred[te], classes, labels_present_only=True)
        fold_metrics.append({**info, **m})
    return EvaluationResult(
        metrics=classification_metrics(y_true, y_pred, classes, labels_present_only=True),
        y_true=y_true,
        y_pred=y_pred,
        classes=classes,
        fold_metrics=fold_metrics,
        summary=_summarise(fold_metrics),
        config=_jsonable(
            {
                "mode": "cross-validation",
                "cv": k,
                "seed": seed,
                "group": None if spatial_blocks is not None else group,
                "stratify": True,
                **block_detail,
                "folds_missing_classes": {
                    str(i + 1): c["missing_in_train"] for i, c in enumerate(fold_counts)
                    if c["missing_in_train"]
                },
                **model_info,
            }
        ),
        duration_s=time.perf_counter() - start,
        ids=lab.ids.copy(),
        fold=fold_of,
        hierarchy=_hierarchy(lab, lv_pred, lv_ind, decoding, background) if levels else {},
    )


def check_fold_classes(
    ts: TimeSeriesSet, folds: Sequence[tuple[np.ndarray, np.ndarray]], strict: bool = False
) -> list[dict[str, Any]]:
    """Class counts of every fold's parts, and the classes its training part lacks.

    Returns one dict per fold: ``train_class_counts`` and ``test_class_counts``
    (``{class: n}``, classes with samples only) and ``missing_in_train`` (classes of ``ts``
    with labelled samples but none in the training part). Each fold with missing classes is
    one ``UserWarning`` naming them; ``strict=True`` raises an :class:`EvaluationError`
    listing every such fold instead.
    """
    assert ts.labels is not None
    labels = ts.labels
    k = len(folds)
    present = np.bincount(labels[labels >= 0], minlength=len(ts.classes)) > 0
    out: list[dict[str, Any]] = []
    problems: list[str] = []
    plurals: list[bool] = []
    for i, (tr, te) in enumerate(folds):
        n_tr = np.bincount(labels[tr][labels[tr] >= 0], minlength=len(ts.classes))
        n_te = np.bincount(labels[te][labels[te] >= 0], minlength=len(ts.classes))
        missing = [ts.classes[c] for c in np.flatnonzero(present & (n_tr == 0))]
        out.append({
            "train_class_counts": {ts.classes[c]: int(n_tr[c]) for c in np.flatnonzero(n_tr)},
            "test_class_counts": {ts.classes[c]: int(n_te[c]) for c in np.flatnonzero(n_te)},
            "missing_in_train": missing,
        })
        if missing:
            listed = ", ".join(
                f"{name!r} ({int(n_te[ts.classes.index(name)])} test samples)"
                for name in missing)
            plural = "es" if len(missing) > 1 else ""
            problems.append(f"fold {i + 1}/{k} trains without class{plural} {listed}")
            plurals.append(len(missing) > 1)
    if problems and strict:
        raise EvaluationError(
            "; ".join(problems) + ": its model cannot predict "
            f"{'them' if len(problems) > 1 else 'it'} (strict mode); use fewer folds or "
            "other blocks, or add samples of the class from elsewhere")
    for text, many in zip(problems, plurals, strict=True):
        what = "these classes" if many else "the class"
        warnings.warn(f"{text}; its model cannot predict {what} there, so the scores of that "
                      f"fold say little about {'them' if many else 'it'}", UserWarning,
                      stacklevel=3)
    return out


def _hierarchy(ts: TimeSeriesSet, pred: np.ndarray, ind: np.ndarray, decoding: str,
               background: str | None) -> dict[str, Any]:
    from cropscope.evaluation.hierarchical import hierarchy_report

    assert ts.taxonomy is not None and ts.level_labels is not None
    return hierarchy_report(ts.taxonomy, ts.level_labels, pred, ind, decoding, background)


def evaluate_split(
    model: ModelFactory | Classifier,
    train: TimeSeriesSet | None,
    test: TimeSeriesSet,
    levels: bool = False,
    decoding: str = "consistent",
    background: str | None = None,
) -> EvaluationResult:
    """Fit on ``train`` and score on ``test`` (a fixed split, e.g. region or year transfer).

    ``model`` is a factory returning an unfitted :class:`Classifier`, an unfitted classifier
    (fitted on ``train``), or an already fitted one (used as is; ``train`` may then be
    ``None``). Test labels are matched to the model's classes by name. Test samples of a class
    the model never learnt are kept and count as errors (the class is appended to the class
    list), with a warning naming the classes. Unlabelled test samples are dropped.
    ``levels=True`` adds per-level scores as in :func:`cross_validate`.
    """
    start = time.perf_counter()
    test = _labelled(test, "test")
    if levels:
        _check_levels(test)
    clf = model if isinstance(model, Classifier) else _as_factory(model)()
    if clf.card is None:
        if train is None:
            raise EvaluationError("an unfitted model needs a training set")
        _fit(clf, _labelled(train, "training"), "training")
    true_names = test.label_names
    model_classes = list(clf.classes)
    unseen = [c for c in dict.fromkeys(true_names) if c not in model_classes]
    if unseen:
        counts = {c: int((true_names == c).sum()) for c in unseen}
        listed = ", ".join(f"{c!r} ({n} samples)" for c, n in counts.items())
        warnings.warn(
            f"test classes unseen by the model count as errors: {listed}",
            UserWarning,
            stacklevel=2,
        )
    pred_names = _predict_names(clf, test)
    hierarchy: dict[str, Any] = {}
    if levels:
        if clf.taxonomy != test.taxonomy:
            raise EvaluationError("the model and the test set have different taxonomies")
        pred, ind = _level_predictions(clf, test, decoding)
        hierarchy = _hierarchy(test, pred, ind, decoding, background)
    classes = _extend_classes(model_classes, [*unseen, *sorted(set(pred_names))])
    assert test.ids is not None  # set by TimeSeriesSet.__post_init__
    y_true = _names_to_codes(true_names, classes)
    y_pred = _names_to_codes(pred_names, classes)
    return EvaluationResult(
        metrics=classification_metrics(y_true, y_pred, classes, labels_present_only=True),
        y_true=y_true,
        y_pred=y_pred,
        classes=classes,
        config=_jsonable(
            {
                "mode": "split",
                "n_train": None if train is None else int(train.n_samples),
                "n_test": int(test.n_samples),
                "unseen_classes": unseen,
                **_model_config(clf),
            }
        ),
        duration_s=time.perf_counter() - start,
        ids=test.ids.copy(),
        hierarchy=hierarchy,
    )


def evaluate_predictions(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    classes: Sequence[str],
) -> EvaluationResult:
    """Score given predictions: integer codes into ``classes`` or class names.

    Samples whose truth is ``-1`` (or an empty name) are unlabelled and dropped.
    """
    start = time.perf_counter()
    classes = [str(c) for c in classes]
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yt.shape != yp.shape:
        raise EvaluationError(f"{yt.size} true labels but {yp.size} predictions")

    def codes(y: np.ndarray, name: str) -> np.ndarray:
        if y.dtype.kind in "OUS":
            lookup = {c: i for i, c in enumerate(classes)}
            unknown = sorted({str(v) for v in y} - set(lookup) - {""})
            if unknown:
                raise EvaluationError(f"{name} holds names not among the classes: {unknown[:5]}")
            return np.array([lookup.get(str(v), -1) for v in y], dtype=np.int64)
        if y.size and y.dtype.kind not in "iu" and not np.all(np.mod(y, 1) == 0):
            raise EvaluationError(f"{name} must be integer class codes or class names")
        return y.astype(np.int64)

    yt, yp = codes(yt, "y_true"), codes(yp, "y_pred")
    keep = yt >= 0
    yt, yp = yt[keep], yp[keep]
    return EvaluationResult(
        metrics=classification_metrics(yt, yp, classes, labels_present_only=True),
        y_true=yt,
        y_pred=yp,
        classes=classes,
        config={"mode": "predictions"},
        duration_s=time.perf_counter() - start,
    )
