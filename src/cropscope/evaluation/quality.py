"""Sample quality: class temporal profiles and out-of-fold noisy-label detection.

Before training on a field survey it pays to look at the samples: do the classes have the
temporal signature one expects, and which samples look like another class? sits users do
this with self-organising maps; the two tools here answer the same questions directly.

**Class profiles** (:func:`class_profiles`, :func:`plot_class_profiles`): per class, band
and time step, the median and the inter-quartile range (25th–75th percentile) of the valid
observations, and their count. The x axis is the shared date grid, or the step index when
dates differ per sample (align seasons first, see
:func:`~cropscope.data.readers.table.read_table`). The plot draws one panel per band, a line
per class (median) and a shaded band (IQR), on matplotlib's Agg canvas (PNG, written
atomically; no pyplot state).

**Noisy labels** (:func:`noisy_labels`): every labelled sample is predicted by a model that
did not see it (k-fold, leave-group-out or spatial-block folds, as in
:func:`~cropscope.evaluation.cross_validate`). A sample is *suspect* when that model
predicts another class with probability at least ``threshold``. Its scores: ``p_label``
(the out-of-fold probability of its own label), ``p_predicted`` and ``margin`` =
``p_predicted - p_label`` (sorting key, largest first). A suspect is a candidate for a
second look (wrong label, mixed pixel, another crop in that season), not proof of an error:
a model that cannot separate two classes flags their samples too, so read the list with the
class profiles.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cropscope.data.splits import make_folds
from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import EvaluationError
from cropscope.evaluation.crossval import (
    BLOCK_COLUMN,
    ModelFactory,
    _as_factory,
    _fit,
    _labelled,
    check_fold_classes,
)
from cropscope.models.base import Classifier

__all__ = ["NoisyLabels", "class_profiles", "noisy_labels", "plot_class_profiles"]

log = logging.getLogger(__name__)
_QUANTILES = (0.25, 0.5, 0.75)


# ---------------------------------------------------------------------------- profiles
def class_profiles(ts: TimeSeriesSet, bands: Sequence[str] | None = None) -> pd.DataFrame:
    """Median and inter-quartile range per class, band and time step (see the module doc).

    One row per (class, band, step): ``class``, ``band``, ``step``, ``date`` (shared grid;
    else missing), ``n`` (valid observations), ``q25``, ``median``, ``q75``. Unlabelled
    samples are left out; steps without a valid observation have NaN quantiles.
    """
    lab = _labelled(ts, "input")
    if bands is not None:
        lab = lab.select_bands(list(bands))
    assert lab.labels is not None and lab.mask is not None
    values = np.where(lab.mask[:, :, None], lab.values, np.nan)
    shared = lab.dates is not None and lab.dates.ndim == 1
    rows: list[pd.DataFrame] = []
    steps = np.arange(lab.n_times)
    for code, name in enumerate(lab.classes):
        members = values[lab.labels == code]
        if not len(members):
            continue
        n = np.isfinite(members).sum(axis=0)  # [T, C]
        with warnings.catch_warnings():  # "All-NaN slice": a step without observations
            warnings.simplefilter("ignore", RuntimeWarning)
            q = np.nanquantile(members, _QUANTILES, axis=0)  # [3, T, C]
        for c, band in enumerate(lab.bands):
            rows.append(pd.DataFrame({
                "class": name, "band": band, "step": steps,
                "date": lab.dates if shared else pd.NaT, "n": n[:, c],
                "q25": q[0, :, c], "median": q[1, :, c], "q75": q[2, :, c],
            }))
    return pd.concat(rows, ignore_index=True)


def plot_class_profiles(
    profiles: pd.DataFrame | TimeSeriesSet, path: str | Path, title: str | None = None,
    bands: Sequence[str] | None = None,
) -> Path:
    """Draw :func:`class_profiles` (or compute them from a set) as a PNG at ``path``: one
    panel per band, a median line and an IQR band per class."""
    from cropscope.evaluation.report import _new_figure, _save_figure

    prof = class_profiles(profiles, bands) if isinstance(profiles, TimeSeriesSet) else profiles
    needed = {"class", "band", "step", "median", "q25", "q75"}
    if not needed <= set(prof.columns):
        raise EvaluationError(f"profiles need the columns {sorted(needed)}")
    band_names = list(dict.fromkeys(prof["band"]))
    classes = list(dict.fromkeys(prof["class"]))
    if not band_names or len(band_names) > 24:
        raise EvaluationError(f"{len(band_names)} bands to plot; choose 1-24 with bands=")
    cols = min(3, len(band_names))
    rows = -(-len(band_names) // cols)
    fig = _new_figure(5.0 * cols + 2.0, 3.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    dated = "date" in prof.columns and prof["date"].notna().all()
    for ax, band in zip(axes, band_names, strict=False):
        part = prof[prof["band"] == band]
        for k, name in enumerate(classes):
            one = part[part["class"] == name].sort_values("step")
            x = pd.to_datetime(one["date"]).to_numpy() if dated else one["step"].to_numpy()
            colour = cmap(k % cmap.N)
            ax.fill_between(x, one["q25"].to_numpy(float), one["q75"].to_numpy(float),
                            color=colour, alpha=0.2, linewidth=0)
            ax.plot(x, one["median"].to_numpy(float), color=colour, label=str(name),
                    linewidth=1.6)
        ax.set_title(str(band))
        ax.set_xlabel("date" if dated else "time step")
        ax.grid(alpha=0.3)
        if dated:
            ax.tick_params(axis="x", labelrotation=30)
    for ax in axes[len(band_names):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8, loc="best", title="median, IQR")
    if title:
        fig.suptitle(title)
    return _save_figure(fig, path)


# ---------------------------------------------------------------------------- noisy labels
@dataclass
class NoisyLabels:
    """Out-of-fold scores of every labelled sample and the suspects among them.

    ``table``: one row per labelled sample (``id``, ``label``, ``predicted``, ``p_label``,
    ``p_predicted``, ``margin``, ``fold``, ``suspect``), suspects first, by decreasing
    margin. ``proba``: the out-of-fold probabilities ``[N, K]`` over ``classes``, in the
    order of the labelled samples of the input.
    """

    table: pd.DataFrame
    proba: np.ndarray
    classes: list[str]
    threshold: float
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def suspects(self) -> pd.DataFrame:
        return self.table[self.table["suspect"]]

    def write_csv(self, path: str | Path, suspects_only: bool = True) -> Path:
        """The (suspect) rows as CSV, written atomically."""
        from cropscope.io import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            (self.suspects if suspects_only else self.table).to_csv(tmp, index=False)
        return path


def _proba_by_name(model: Classifier, ts: TimeSeriesSet, classes: list[str]) -> np.ndarray:
    """``model.predict_proba`` with its columns put in the order of ``classes``."""
    proba = np.asarray(model.predict_proba(ts), dtype=np.float64)
    out = np.zeros((ts.n_samples, len(classes)))
    lookup = {c: i for i, c in enumerate(classes)}
    for j, name in enumerate(model.classes):
        if name in lookup:
            out[:, lookup[name]] = proba[:, j]
    return out


def noisy_labels(
    model_factory: ModelFactory | Classifier,
    ts: TimeSeriesSet,
    cv: int = 5,
    seed: int = 0,
    threshold: float = 0.8,
    group: str | None = None,
    spatial_blocks: str | None = None,
    progress: bool = False,
) -> NoisyLabels:
    """Out-of-fold label check of ``ts`` (see the module doc): a fresh model per fold
    (``model_factory`` as in :func:`~cropscope.evaluation.cross_validate`), folds from
    ``cv``/``seed`` and optionally ``group`` or ``spatial_blocks``; samples whose
    out-of-fold model predicts another class with probability ``>= threshold`` are
    suspects."""
    if not 0.0 < float(threshold) <= 1.0:
        raise EvaluationError(f"threshold must be in (0, 1], got {threshold!r}")
    factory = _as_factory(model_factory)
    lab = _labelled(ts, "input")
    if spatial_blocks is not None:
        from cropscope.evaluation.spatial import coordinate_blocks

        if group is not None:
            raise EvaluationError("give either a group column or spatial blocks, not both")
        assert lab.meta is not None
        blocks, _ = coordinate_blocks(lab.meta, spatial_blocks)
        lab = lab.replace(meta=lab.meta.assign(**{BLOCK_COLUMN: blocks}))
        group = BLOCK_COLUMN
    folds = make_folds(lab, cv=cv, seed=seed, group=group)
    check_fold_classes(lab, folds)
    classes = list(lab.classes)
    proba = np.zeros((lab.n_samples, len(classes)))
    fold_of = np.zeros(lab.n_samples, dtype=np.int64)
    for i, (tr, te) in enumerate(folds):
        if progress:
            log.info("noisy labels: fold %d/%d", i + 1, len(folds))
        model = factory()
        _fit(model, lab.subset(tr), f"fold {i + 1}/{len(folds)}")
        proba[te] = _proba_by_name(model, lab.subset(te), classes)
        fold_of[te] = i + 1
    assert lab.labels is not None and lab.ids is not None
    rows = np.arange(lab.n_samples)
    pred = proba.argmax(axis=1)
    p_label = proba[rows, lab.labels]
    p_pred = proba[rows, pred]
    names = np.asarray(classes, dtype=object)
    suspect = (pred != lab.labels) & (p_pred >= threshold)
    table = pd.DataFrame({
        "id": lab.ids, "label": names[lab.labels], "predicted": names[pred],
        "p_label": p_label.round(4), "p_predicted": p_pred.round(4),
        "margin": (p_pred - p_label).round(4), "fold": fold_of, "suspect": suspect,
    })
    table = table.sort_values(["suspect", "margin"], ascending=[False, False], kind="stable")
    config = {"cv": len(folds), "seed": seed, "group": None if spatial_blocks else group,
              "spatial_blocks": spatial_blocks, "threshold": float(threshold),
              "n_samples": int(lab.n_samples), "n_suspects": int(suspect.sum())}
    return NoisyLabels(table.reset_index(drop=True), proba, classes, float(threshold), config)
