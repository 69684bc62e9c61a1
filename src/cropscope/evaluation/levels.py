"""Per-level segmentation scores as H2Crop reports them (h2crop.md §4).

- :func:`level_confusions` runs a (hierarchical) segmentation model over a dataset and
  accumulates one ``[K, K]`` confusion matrix per level over every pixel and, when the
  inputs carry last year's labels (``priors``, ``[B, L, H, W]``), separate matrices for the
  pixels whose crop **changed** (``prior != label``) and those that did **not**;
- :func:`level_scores` scores one matrix with the reference ("CropIoUMetric") semantics,
  with the background class counted or left out;
- :func:`evaluate_levels` gives every level × subset × background variant, plus the mean
  over levels (the reference's headline numbers); :func:`format_levels_report` and
  :func:`write_levels_report` print and save it.

Importing this module is light: torch is imported by :func:`level_confusions` only.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cropscope.errors import DataError, EvaluationError, ModelError
from cropscope.evaluation.report import _write_csv
from cropscope.io import write_json

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "LevelConfusions",
    "evaluate_levels",
    "format_levels_report",
    "level_confusions",
    "level_scores",
    "levels_result",
    "write_levels_report",
]

SUBSETS = ("all", "changed", "unchanged")
VARIANTS = ("with_background", "without_background")
#: the scores kept per level, subset and variant (and averaged over levels)
SCORE_KEYS = ("overall_accuracy", "macro_f1", "miou", "n_pixels")
CSV_COLUMNS = ("level", "subset", "background", *SCORE_KEYS)


@dataclass
class LevelConfusions:
    """Confusion matrices (rows truth, columns prediction, int64) per level, coarse to fine."""

    #: every scored pixel
    all: list[np.ndarray]
    #: pixels whose prior differs from the label (None: the inputs carry no priors)
    changed: list[np.ndarray] | None = None
    #: pixels whose prior equals the label
    unchanged: list[np.ndarray] | None = None
    n_samples: int = 0

    @property
    def n_levels(self) -> int:
        return len(self.all)

    def subsets(self) -> dict[str, list[np.ndarray]]:
        """``{"all": [...], "changed": [...], "unchanged": [...]}`` (the last two with priors)."""
        out = {"all": self.all}
        if self.changed is not None and self.unchanged is not None:
            out.update(changed=self.changed, unchanged=self.unchanged)
        return out


def level_confusions(
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    amp: bool = True,
    ignore_index: int = -1,
    prior_key: str = "priors",
    progress: bool = False,
) -> LevelConfusions:
    """Run ``model`` (eval mode, no grad) over ``dataset`` (``(inputs, labels)`` with labels
    ``[L, H, W]`` or ``[H, W]``) and count, per level, truth × argmax prediction.

    Logits are resized to the label grid when needed; the class count of a level is its
    logits' channel count. Pixels labelled ``ignore_index`` (or outside ``0..K-1``) are
    skipped. When the inputs hold ``prior_key`` (``[B, L, H, W]`` like the labels), the
    pixels are also split into changed / unchanged ones per level.
    """
    import torch
    from tqdm.auto import tqdm

    from cropscope.engine.segmentation import (
        SegmentationConfig,
        _autocast,
        _fit_size,
        _label_levels,
        _levels,
        _loader,
        _to_device,
        confusion_matrix,
        resolve_device,
    )

    dev = resolve_device(device) if isinstance(device, str) else device
    model.to(dev).eval()
    use_amp = amp and dev.type == "cuda"
    cfg = SegmentationConfig(batch_size=batch_size, ignore_index=ignore_index, augment=False)
    loader = _loader(dataset, cfg, False, 0, dev)
    sizes: list[int] | None = None
    cms: dict[str, list[torch.Tensor]] = {}
    with_priors: bool | None = None
    n_samples = 0
    with torch.no_grad():
        for inputs, labels in tqdm(loader, desc="evaluating levels", unit="batch",
                                   file=sys.stderr, disable=not progress, leave=False):
            x, y = _to_device(inputs, dev), labels.to(dev)
            with _autocast(dev, use_amp):
                outs = _levels(model(x))
            ys = _label_levels(y, len(outs))
            if sizes is None:
                sizes = [int(o.shape[1]) for o in outs]
                with_priors = prior_key in x
            elif [int(o.shape[1]) for o in outs] != sizes:
                raise ModelError(f"the model's class counts changed between batches: {sizes} "
                                 f"then {[int(o.shape[1]) for o in outs]}")
            if (prior_key in x) != with_priors:
                raise DataError(f"{prior_key!r} is in some batches' inputs but not in others")
            priors = _label_levels(x[prior_key], len(outs)) if with_priors else None
            for i, (o, t) in enumerate(zip(outs, ys, strict=True)):
                pred = _fit_size(o.float(), (int(t.shape[-2]), int(t.shape[-1]))).argmax(1)
                parts = {"all": t}
                if priors is not None:
                    prior = priors[i]
                    if prior.shape != t.shape:
                        raise DataError(f"level {i + 1}: {prior_key!r} has shape "
                                        f"{list(prior.shape)}, the labels {list(t.shape)}")
                    same = prior == t
                    parts["changed"] = torch.where(same, -1, t)
                    parts["unchanged"] = torch.where(same, t, -1)
                for name, target in parts.items():
                    cm = confusion_matrix(pred, target, sizes[i], ignore_index)
                    level_cms = cms.setdefault(name, [])
                    if len(level_cms) <= i:
                        level_cms.append(cm)
                    else:
                        level_cms[i] += cm
            n_samples += len(y)
    if sizes is None:
        raise ModelError("no samples to evaluate")

    def as_np(name: str) -> list[np.ndarray] | None:
        return [c.numpy().astype(np.int64) for c in cms[name]] if name in cms else None

    return LevelConfusions(all=as_np("all") or [], changed=as_np("changed"),
                           unchanged=as_np("unchanged"), n_samples=n_samples)


def level_scores(
    cm: np.ndarray | Sequence[Sequence[int]],
    *,
    background: int | None = 0,
    exclude_background: bool = False,
) -> dict[str, Any]:
    """OA, macro-F1, mIoU and per-class precision/recall/F1/IoU of a ``[K, K]`` confusion
    matrix (rows truth), with the reference semantics (h2crop.md §4.1).

    Per class (I = hits, P = predicted, G = true): IoU = I / (P + G - I), NaN only when the
    class is neither true nor predicted (so a predicted absent class counts as 0); recall
    = I / G, NaN when the class is absent from the truth, which makes F1 NaN too (it is left
    out of macro-F1); precision = I / P (0 when never predicted). Means are nanmeans.

    ``exclude_background``: pixels whose truth is ``background`` are dropped and that class
    is left out of the class means (its per-class values are NaN); predicting background on
    a labelled pixel still counts as an error.
    """
    m = np.array(cm, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise EvaluationError(f"a confusion matrix must be square, got shape {m.shape}")
    k = m.shape[0]
    keep = np.ones(k, dtype=bool)
    if exclude_background:
        if background is None:
            raise EvaluationError("exclude_background needs the background class index")
        if not 0 <= background < k:
            raise EvaluationError(f"background class {background} is outside 0..{k - 1}")
        m[background, :] = 0.0
        keep[background] = False
    hits = np.diag(m)
    truth, predicted = m.sum(1), m.sum(0)
    union = truth + predicted - hits
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, hits / union, np.nan)
        recall = np.where(truth > 0, hits / truth, np.nan)
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    f1[np.isnan(recall)] = np.nan
    for arr in (iou, recall, precision, f1):
        arr[~keep] = np.nan
    total = m.sum()

    def nanmean(v: np.ndarray) -> float:
        v = v[keep & ~np.isnan(v)]
        return float(v.mean()) if v.size else math.nan

    return {
        "overall_accuracy": float(hits.sum() / total) if total else math.nan,
        "macro_f1": nanmean(f1),
        "miou": nanmean(iou),
        "mean_precision": nanmean(precision),
        "mean_recall": nanmean(recall),
        "n_pixels": int(total),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "iou": iou.tolist(),
    }


def _clean(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def levels_result(
    confusions: LevelConfusions,
    *,
    background: int | None = 0,
    level_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The JSON-ready result of :func:`evaluate_levels` from already counted matrices."""
    n = confusions.n_levels
    names = list(level_names) if level_names is not None else [f"level{i + 1}"
                                                                for i in range(n)]
    if len(names) != n:
        raise EvaluationError(f"{len(names)} level names for {n} levels")
    variants = VARIANTS if background is not None else VARIANTS[:1]
    subsets = confusions.subsets()
    levels: list[dict[str, Any]] = []
    raw: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for i, name in enumerate(names):
        entry: dict[str, Any] = {"level": name, "n_classes": int(confusions.all[i].shape[0])}
        for subset, cms in subsets.items():
            entry[subset] = {}
            for variant in variants:
                s = level_scores(cms[i], background=background,
                                 exclude_background=variant == "without_background")
                raw.setdefault((subset, variant), []).append(s)
                entry[subset][variant] = {
                    "overall_accuracy": _clean(s["overall_accuracy"]),
                    "macro_f1": _clean(s["macro_f1"]), "miou": _clean(s["miou"]),
                    "n_pixels": s["n_pixels"]}
        levels.append(entry)
    mean: dict[str, Any] = {}
    for (subset, variant), scores in raw.items():
        row: dict[str, Any] = {}
        for key in ("overall_accuracy", "macro_f1", "miou"):
            vals = [s[key] for s in scores if not math.isnan(s[key])]
            row[key] = float(np.mean(vals)) if vals else None
        row["n_pixels"] = round(float(np.mean([s["n_pixels"] for s in scores])))
        mean.setdefault(subset, {})[variant] = row
    return {
        "levels": levels,
        "mean": mean,
        "subsets": list(subsets),
        "background": background,
        "n_samples": confusions.n_samples,
        "confusion_matrices": {subset: [c.tolist() for c in cms]
                               for subset, cms in subsets.items()},
    }


def evaluate_levels(
    model: nn.Module,
    dataset: Any,
    *,
    background: int | None = 0,
    level_names: Sequence[str] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Per-level scores of ``model`` on ``dataset`` (JSON-ready; NaN written as None).

    ``levels[i][subset][variant]`` holds ``overall_accuracy``, ``macro_f1``, ``miou`` and
    ``n_pixels`` for subset ``all`` (and ``changed``/``unchanged`` when the inputs carry
    priors) and variant ``with_background``/``without_background`` (only the former when
    ``background`` is None); ``mean[subset][variant]`` averages the scores over the levels
    (nanmean; ``n_pixels``: the mean pixel count). ``confusion_matrices[subset]`` keeps the
    counts. ``kw`` goes to :func:`level_confusions`.
    """
    return levels_result(level_confusions(model, dataset, **kw), background=background,
                         level_names=level_names)


def _rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    entries = [*result["levels"], {"level": "mean", **result["mean"]}]
    for entry in entries:
        for subset in result["subsets"]:
            for variant, s in entry[subset].items():
                rows.append({"level": entry["level"], "subset": subset,
                             "background": variant.split("_")[0], **s})
    return rows


def format_levels_report(result: dict[str, Any]) -> str:
    """A plain-text table of :func:`evaluate_levels`: one row per level and subset, the
    scores in % with and without background."""
    variants = [v for v in VARIANTS if v in result["mean"]["all"]]
    head = f"{'level':<12}{'subset':<11}{'pixels':>11}"
    sub = " " * len(head)
    for v in variants:
        head += f" | {'OA':>7}{'mF1':>7}{'mIoU':>7}"
        sub += f" | {v.replace('_', ' '):>21}"
    lines = [sub, head, "-" * len(head)]

    def pct(x: float | None) -> str:
        return f"{'-':>7}" if x is None else f"{100 * x:>7.2f}"

    for entry in [*result["levels"], {"level": "mean", **result["mean"]}]:
        if entry["level"] == "mean":
            lines.append("-" * len(head))
        for subset in result["subsets"]:
            s = entry[subset]
            line = f"{entry['level']:<12}{subset:<11}{s[variants[0]]['n_pixels']:>11d}"
            for v in variants:
                line += (f" | {pct(s[v]['overall_accuracy'])}{pct(s[v]['macro_f1'])}"
                         f"{pct(s[v]['miou'])}")
            lines.append(line)
    return "\n".join(lines)


def write_levels_report(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``levels.json`` (the whole result) and ``levels.csv`` (one row per level, subset
    and background variant, plus the ``mean`` rows) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = write_json(out / "levels.json", result)
    csv_path = _write_csv(pd.DataFrame(_rows(result), columns=list(CSV_COLUMNS)),
                          out / "levels.csv")
    return [json_path, csv_path]
