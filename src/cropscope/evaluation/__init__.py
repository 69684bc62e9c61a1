"""Evaluation: metrics, cross-validation (folds from :mod:`cropscope.data.splits`), fixed-split
evaluation and reports.

Importing this package stays light: matplotlib is loaded only when a plot is drawn, torch
only when a segmentation model is evaluated.
"""

from cropscope.data.splits import make_folds, train_val_split
from cropscope.evaluation.crossval import (
    EvaluationResult,
    check_fold_classes,
    cross_validate,
    evaluate_predictions,
    evaluate_split,
)
from cropscope.evaluation.hierarchical import format_levels_table
from cropscope.evaluation.levels import (
    LevelConfusions,
    evaluate_levels,
    format_levels_report,
    level_confusions,
    level_scores,
    write_levels_report,
)
from cropscope.evaluation.metrics import classification_metrics, format_metrics_table
from cropscope.evaluation.quality import (
    NoisyLabels,
    class_profiles,
    noisy_labels,
    plot_class_profiles,
)
from cropscope.evaluation.report import plot_confusion_matrix, plot_per_class_f1, write_report

__all__ = [
    "EvaluationResult",
    "LevelConfusions",
    "NoisyLabels",
    "check_fold_classes",
    "class_profiles",
    "classification_metrics",
    "cross_validate",
    "evaluate_levels",
    "evaluate_predictions",
    "evaluate_split",
    "format_levels_report",
    "format_levels_table",
    "format_metrics_table",
    "level_confusions",
    "level_scores",
    "make_folds",
    "noisy_labels",
    "plot_class_profiles",
    "plot_confusion_matrix",
    "plot_per_class_f1",
    "train_val_split",
    "write_levels_report",
    "write_report",
]
