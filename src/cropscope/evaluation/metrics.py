"""Classification metrics as one JSON-ready dict, built on :mod:`sklearn.metrics`.

Labels are integer codes into a class list. Every metric that divides by zero (a class never
predicted, a class absent from the truth) is reported as ``0.0`` without warnings; an
undefined Cohen's kappa (truth and prediction both a single, identical class) is ``0.0`` too.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from cropscope.errors import EvaluationError

__all__ = ["SUMMARY_KEYS", "classification_metrics", "format_metrics_table"]

#: the scalar scores averaged across folds and shown in summaries
SUMMARY_KEYS: tuple[str, ...] = ("overall_accuracy", "macro_f1", "weighted_f1", "kappa")


def _as_codes(y: Any, n_classes: int, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise EvaluationError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise EvaluationError(f"{name} must be integer class codes, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= n_classes)
    if bad.any():
        raise EvaluationError(
            f"{name} holds code {int(arr[bad][0])}, outside the {n_classes} classes "
            f"(valid codes 0..{n_classes - 1}); drop unlabelled samples (-1) first"
        )
    return arr


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    classes: Sequence[str],
    labels_present_only: bool = False,
    background: str | None = None,
) -> dict[str, Any]:
    """Overall accuracy, macro/weighted F1, Cohen's kappa, per-class scores, confusion matrix.

    ``y_true`` and ``y_pred`` are integer codes into ``classes``. With ``labels_present_only``
    the macro F1 averages only the classes present in ``y_true`` (the transfer protocol: a
    target region lacking a class is not penalised for it); otherwise every class counts, an
    absent class with an F1 of 0. Per-class rows and the confusion matrix (rows = truth,
    columns = prediction) always list every class, in order. All values are plain Python
    ``int``/``float``/``str``, so the dict is JSON-ready.

    ``miou`` is the mean intersection-over-union ``TP / (TP + FP + FN)`` over the same
    classes as the macro F1. With ``background`` (a class name), ``macro_f1_no_background``
    and ``miou_no_background`` leave that class out of the averages.
    """
    classes = [str(c) for c in classes]
    k = len(classes)
    if k == 0:
        raise EvaluationError("no classes given")
    yt = _as_codes(y_true, k, "y_true")
    yp = _as_codes(y_pred, k, "y_pred")
    if yt.shape != yp.shape:
        raise EvaluationError(f"{yt.size} true labels but {yp.size} predictions")
    if yt.size == 0:
        raise EvaluationError("no samples to evaluate")

    labels = np.arange(k)
    macro_labels = np.unique(yt) if labels_present_only else labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        precision, recall, f1, support = precision_recall_fscore_support(
            yt, yp, labels=labels, zero_division=0
        )
        macro_f1 = f1_score(yt, yp, labels=macro_labels, average="macro", zero_division=0)
        weighted_f1 = f1_score(yt, yp, labels=labels, average="weighted", zero_division=0)
        kappa = cohen_kappa_score(yt, yp, labels=labels)
    kappa = float(kappa)
    if not np.isfinite(kappa):
        kappa = 0.0
    cm = confusion_matrix(yt, yp, labels=labels)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)
    extra: dict[str, Any] = {"miou": float(iou[macro_labels].mean())}
    # average accuracy (AA): mean per-class recall, over the same classes as the macro F1
    extra["average_accuracy"] = float(recall[macro_labels].mean())
    if background is not None:
        if background not in classes:
            raise EvaluationError(f"background class {background!r} is not among the classes")
        fg = np.array([i for i in macro_labels if classes[i] != background], dtype=np.int64)
        extra["macro_f1_no_background"] = float(f1[fg].mean()) if fg.size else 0.0
        extra["miou_no_background"] = float(iou[fg].mean()) if fg.size else 0.0
    return {
        "overall_accuracy": float(accuracy_score(yt, yp)),
        "macro_f1": float(macro_f1),
        **extra,
        "weighted_f1": float(weighted_f1),
        "kappa": kappa,
        "n_samples": int(yt.size),
        "macro_f1_classes": [classes[i] for i in macro_labels],
        "per_class": [
            {
                "class": classes[i],
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in range(k)
        ],
        "confusion_matrix": [[int(v) for v in row] for row in cm],
        "classes": classes,
    }


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """A plain-text per-class table followed by summary lines, for terminals and logs."""
    rows = metrics["per_class"]
    width = max([len("class"), *(len(r["class"]) for r in rows)])
    header = f"{'class':<{width}}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'support':>9}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['class']:<{width}}  {r['precision']:>9.4f}  {r['recall']:>9.4f}  "
            f"{r['f1']:>9.4f}  {r['support']:>9d}"
        )
    lines.append("-" * len(header))
    labels = {
        "overall_accuracy": "overall accuracy",
        "macro_f1": "macro F1",
        "weighted_f1": "weighted F1",
        "kappa": "Cohen's kappa",
    }
    lw = max(len(v) for v in labels.values())
    summary = metrics.get("summary") or {}
    for key, label in labels.items():
        line = f"{label:<{lw}}  {metrics[key]:.4f}"
        if key in summary:
            line += f"  (folds: {summary[key]['mean']:.4f} ± {summary[key]['std']:.4f})"
        lines.append(line)
    lines.append(f"{'samples':<{lw}}  {metrics['n_samples']}")
    present = metrics.get("macro_f1_classes")
    if present is not None and len(present) != len(rows):
        lines.append(f"(macro F1 over the {len(present)} classes present in the truth)")
    return "\n".join(lines)
