"""Plot of the transfer study: OA per (feature, model), without and with augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cropscope.io import atomic_path

__all__ = ["plot_study"]


def plot_study(table: pd.DataFrame, path: str | Path, metric: str = "overall_accuracy") -> Path:
    """Bars of ``metric`` mean ± std over seeds, one panel per split, one group of bars per
    feature x model (no augmentation / augmentation side by side); n/a cells are left out."""
    from matplotlib.figure import Figure

    ran = table[table["n_seeds"] > 0]
    splits = list(dict.fromkeys(ran["split"]))
    fig = Figure(figsize=(max(6.0, 0.55 * ran.groupby(["feature", "model"]).ngroups + 2),
                          3.2 * max(len(splits), 1)), layout="constrained")
    axes = fig.subplots(max(len(splits), 1), 1, squeeze=False)[:, 0]
    for ax, split in zip(axes, splits, strict=False):
        sub = ran[ran["split"] == split]
        pairs = list(dict.fromkeys(zip(sub["feature"], sub["model"], strict=True)))
        x = np.arange(len(pairs))
        for j, (aug, colour) in enumerate(((False, "#8da0cb"), (True, "#fc8d62"))):
            mean, std = [], []
            for f, m in pairs:
                r = sub[(sub["feature"] == f) & (sub["model"] == m) & (sub["augment"] == aug)]
                mean.append(r[f"{metric}_mean"].iloc[0] if len(r) else np.nan)
                std.append(r[f"{metric}_std"].iloc[0] if len(r) else 0.0)
            ax.bar(x + (j - 0.5) * 0.4, mean, 0.4, yerr=std, capsize=2, color=colour,
                   label="augmentation" if aug else "no augmentation")
        ax.set_xticks(x, [f"{f}\n{m}" for f, m in pairs], fontsize=7)
        lo = np.nanmin(sub[f"{metric}_mean"] - sub[f"{metric}_std"])
        ax.set_ylim(max(0.0, lo - 0.05), 1.0)
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(f"transfer {split}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path
