"""Write an :class:`EvaluationResult` into a run directory: JSON, CSV tables and PNG plots.

Every file is written atomically (temp file + rename). matplotlib (the ``plot`` extra) is
imported only inside the plotting functions, and figures are drawn on the non-interactive
Agg canvas without touching pyplot's global state.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cropscope.errors import EvaluationError
from cropscope.evaluation.metrics import SUMMARY_KEYS
from cropscope.io import atomic_path, write_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cropscope.evaluation.crossval import EvaluationResult

__all__ = ["plot_confusion_matrix", "plot_per_class_f1", "write_report"]


def _new_figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise EvaluationError(
            "plots need matplotlib; install it with: pip install 'cropscope[plot]'"
        ) from None
    return Figure(figsize=(width, height), layout="constrained")


def _save_figure(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def _write_csv(df: pd.DataFrame, path: Path, index: bool = False) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)
    return path


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]] | np.ndarray,
    classes: Sequence[str],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Confusion matrix as a PNG: colours are row-normalised (recall per true class), cells
    show the counts, true classes on the y axis and predicted classes on the x axis."""
    counts = np.asarray(cm, dtype=np.int64)
    k = len(classes)
    if counts.shape != (k, k):
        raise EvaluationError(f"confusion matrix of shape {counts.shape} for {k} classes")
    totals = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)

    side = float(np.clip(0.5 * k + 3.0, 4.5, 30.0))
    fig = _new_figure(side + 1.0, side)
    ax = fig.subplots()
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(k), labels=list(classes), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), labels=list(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 40:
        fontsize = float(np.clip(160 / max(k, 1), 5, 10))
        for i in range(k):
            for j in range(k):
                if counts[i, j] == 0 and i != j:
                    continue
                colour = "white" if norm[i, j] > 0.5 else "black"
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize=fontsize,
                )
    if title:
        ax.set_title(title)
    return _save_figure(fig, path)


def plot_per_class_f1(
    per_class: Sequence[dict[str, Any]], path: str | Path, title: str | None = None
) -> Path:
    """Horizontal bar chart of the F1 score per class (classes top to bottom, support noted);
    classes without test samples are drawn in grey."""
    names = [str(r["class"]) for r in per_class]
    f1 = np.array([float(r["f1"]) for r in per_class])
    support = [int(r["support"]) for r in per_class]
    k = len(names)
    fig = _new_figure(7.0, float(np.clip(0.35 * k + 1.5, 2.5, 40.0)))
    ax = fig.subplots()
    colours = ["tab:blue" if n > 0 else "lightgrey" for n in support]
    ax.barh(range(k), f1, color=colours)
    ax.set_yticks(range(k), labels=names)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.2)
    ax.set_xticks(np.linspace(0.0, 1.0, 6))
    ax.set_xlabel("F1 score")
    for i, (v, n) in enumerate(zip(f1, support, strict=True)):
        ax.text(v + 0.01, i, f"{v:.2f} (n={n})", va="center", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or "F1 score per class")
    return _save_figure(fig, path)


def _title(result: EvaluationResult) -> str:
    m = result.metrics
    model = result.config.get("model")
    head = f"{model}: " if model else ""
    return (
        f"{head}OA {m['overall_accuracy']:.3f} | macro-F1 {m['macro_f1']:.3f} (n={m['n_samples']})"
    )


def _folds_table(result: EvaluationResult) -> pd.DataFrame:
    rows = []
    for f in result.fold_metrics:
        row: dict[str, Any] = {k: f[k] for k in ("fold", "n_train", "n_test") if k in f}
        row.update({k: f[k] for k in (*SUMMARY_KEYS, "duration_s") if k in f})
        if "test_groups" in f:
            row["test_groups"] = ";".join(map(str, f["test_groups"]))
        for key in ("train_class_counts", "test_class_counts"):
            if key in f:  # "class:n;class:n"
                row[key] = ";".join(f"{c}:{n}" for c, n in f[key].items())
        if "missing_in_train" in f:
            row["missing_in_train"] = ";".join(map(str, f["missing_in_train"]))
        rows.append(row)
    return pd.DataFrame(rows)


def _predictions_table(result: EvaluationResult) -> pd.DataFrame:
    names = np.asarray(result.classes, dtype=object)
    cols: dict[str, Any] = {}
    if result.ids is not None:
        cols["id"] = result.ids
    if result.fold is not None:
        cols["fold"] = np.asarray(result.fold) + 1
    cols["true"] = names[result.y_true]
    cols["predicted"] = names[result.y_pred]
    cols["correct"] = result.y_true == result.y_pred
    return pd.DataFrame(cols)


def write_report(
    result: EvaluationResult, out_dir: str | Path, plots: bool = True
) -> dict[str, Path]:
    """Write the report files into ``out_dir``; returns ``{file name: path}``.

    ``metrics.json`` (``result.to_dict()``), ``per_class.csv``, ``confusion_matrix.csv``
    (rows = true class, columns = predicted class), ``predictions.csv`` (one row per evaluated
    sample), ``folds.csv`` (cross-validation only) and, with ``plots``, ``confusion_matrix.png``
    and ``per_class_f1.png`` (skipped with a warning when matplotlib is missing).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = result.metrics
    files: dict[str, Path] = {}
    files["metrics.json"] = write_json(out / "metrics.json", result.to_dict())
    files["per_class.csv"] = _write_csv(
        pd.DataFrame(m["per_class"], columns=["class", "precision", "recall", "f1", "support"]),
        out / "per_class.csv",
    )
    cm = pd.DataFrame(m["confusion_matrix"], index=m["classes"], columns=m["classes"])
    cm.index.name = "true\\predicted"
    files["confusion_matrix.csv"] = _write_csv(cm, out / "confusion_matrix.csv", index=True)
    if len(result.y_true):
        files["predictions.csv"] = _write_csv(_predictions_table(result), out / "predictions.csv")
    if result.fold_metrics:
        files["folds.csv"] = _write_csv(_folds_table(result), out / "folds.csv")
    if plots and importlib.util.find_spec("matplotlib") is None:
        warnings.warn(
            "plots skipped: matplotlib is not installed (pip install 'cropscope[plot]')",
            UserWarning,
            stacklevel=2,
        )
    elif plots:
        files["confusion_matrix.png"] = plot_confusion_matrix(
            m["confusion_matrix"], m["classes"], out / "confusion_matrix.png", _title(result)
        )
        files["per_class_f1.png"] = plot_per_class_f1(m["per_class"], out / "per_class_f1.png")
    return files
