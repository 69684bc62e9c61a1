"""Scores for predictions on every level of a taxonomy.

- per level (coarse to fine): overall accuracy, macro F1 (with and without a background
  class), mIoU, kappa, from :func:`classification_metrics`;
- hierarchical precision / recall / F1 (Kiritchenko et al. 2006): a prediction and its truth
  are the sets of their nodes on every level; overlaps are counted over the levels where the
  truth is known, so a correct "cereal" with a wrong "barley" earns partial credit;
- how often independent per-level decoding contradicts the tree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cropscope.errors import EvaluationError
from cropscope.evaluation.metrics import classification_metrics
from cropscope.taxonomy.tree import Taxonomy

__all__ = ["LEVEL_KEYS", "format_levels_table", "hierarchical_prf", "hierarchy_report"]

#: the per-level scores kept in a report (besides the level's name and class count)
LEVEL_KEYS = (
    "overall_accuracy", "macro_f1", "macro_f1_no_background", "miou", "miou_no_background",
    "weighted_f1", "kappa", "n_samples",
)


def hierarchical_prf(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Hierarchical precision, recall and F1 of per-level codes ``[N, L]`` (``-1`` in the
    truth: level unknown, ignored; ``-1`` in a prediction: no prediction on that level)."""
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yt.shape != yp.shape or yt.ndim != 2:
        raise EvaluationError(f"per-level labels must be [N, L] alike, got {yt.shape}, {yp.shape}")
    known = yt >= 0
    predicted = known & (yp >= 0)
    hit = float((predicted & (yt == yp)).sum())
    n_pred, n_true = float(predicted.sum()), float(known.sum())
    precision = hit / n_pred if n_pred else 0.0
    recall = hit / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"hierarchical_precision": precision, "hierarchical_recall": recall,
            "hierarchical_f1": f1}


def hierarchy_report(
    taxonomy: Taxonomy,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    y_pred_independent: np.ndarray | None = None,
    decoding: str = "consistent",
    background: str | None = None,
) -> dict[str, Any]:
    """Per-level metrics (``levels``, coarse to fine), hierarchical P/R/F1 and, given the
    independent decoding, the fraction of its predictions that contradict the tree.

    ``y_true``/``y_pred`` are ``[N, L]`` codes into each level's classes; ``background``
    is a class name left out of ``*_no_background`` averages on the levels that have it.
    """
    yt, yp = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    levels = []
    for k, level in enumerate(taxonomy.levels):
        keep = yt[:, k] >= 0
        entry: dict[str, Any] = {"level": level, "n_classes": taxonomy.n_classes(k)}
        if keep.any():
            classes = taxonomy.classes(k)
            bg = background if background in classes else None
            m = classification_metrics(yt[keep, k], yp[keep, k], classes,
                                       labels_present_only=True, background=bg)
            entry.update({key: m[key] for key in LEVEL_KEYS if key in m})
        levels.append(entry)
    out: dict[str, Any] = {
        "levels": levels,
        "decoding": decoding,
        **hierarchical_prf(yt, yp),
        "inconsistent_fraction": float((~taxonomy.check_consistent(yp)).mean()),
    }
    if y_pred_independent is not None:
        ind = np.asarray(y_pred_independent, dtype=np.int64)
        out["independent_inconsistent_fraction"] = float((~taxonomy.check_consistent(ind)).mean())
        out["independent"] = {
            "levels": [
                {"level": lv, "overall_accuracy": float((ind[yt[:, k] >= 0, k]
                                                         == yt[yt[:, k] >= 0, k]).mean())}
                for k, lv in enumerate(taxonomy.levels) if (yt[:, k] >= 0).any()
            ],
            **hierarchical_prf(yt, ind),
        }
    return out


def format_levels_table(report: dict[str, Any]) -> str:
    """A plain-text table of a :func:`hierarchy_report`: one row per level."""
    lines = [f"{'level':<16}{'classes':>8}{'OA':>8}{'macro-F1':>10}{'mIoU':>8}{'kappa':>8}"]
    for lv in report["levels"]:
        if "overall_accuracy" not in lv:
            continue
        lines.append(
            f"{lv['level']:<16}{lv['n_classes']:>8}{lv['overall_accuracy']:>8.4f}"
            f"{lv['macro_f1']:>10.4f}{lv['miou']:>8.4f}{lv['kappa']:>8.4f}"
        )
    lines.append(
        f"hierarchical P/R/F1 {report['hierarchical_precision']:.4f} / "
        f"{report['hierarchical_recall']:.4f} / {report['hierarchical_f1']:.4f} "
        f"({report['decoding']} decoding)"
    )
    if "independent_inconsistent_fraction" in report:
        lines.append(
            "independent decoding contradicts the tree for "
            f"{100 * report['independent_inconsistent_fraction']:.2f} % of samples"
        )
    return "\n".join(lines)
