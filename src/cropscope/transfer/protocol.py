"""The CropGlobe transfer protocol (cropnet.md §1, §5, §6) on any :class:`TimeSeriesSet`.

Train on a *source* (countries, regions, years), test on *targets* with no adaptation:

1. the source label space is the classes present in the source (:func:`compact_classes`);
2. target samples of a class the source lacks are dropped and counted (:func:`align_target`);
3. optionally, duplicate feature rows are removed, separately per set (:func:`drop_duplicates`);
4. predictions are remapped into the target's label space: a predicted class the target does
   not have becomes ``other`` (:func:`remap_predictions`; the CropGlobe rules for AUS, CHN
   and ARG are :data:`CROPGLOBE_TARGET_CLASSES`);
5. metrics: OA, macro-F1 over the classes present in the target truth, weighted F1; repeated
   seeds give mean ± population std (:func:`evaluate_transfer`).

Group splits (:func:`split_by_groups`, :func:`group_block_splits`) never put one group on
both sides.
"""

from __future__ import annotations

import json
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cropscope.data.readers.cropglobe import CROPGLOBE_CLASSES
from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError, EvaluationError
from cropscope.evaluation.metrics import classification_metrics
from cropscope.io import atomic_path, write_json

__all__ = [
    "CROPGLOBE_CLASSES",
    "CROPGLOBE_TARGET_CLASSES",
    "METRICS",
    "TransferResult",
    "TransferSplit",
    "align_target",
    "compact_classes",
    "drop_duplicates",
    "evaluate_transfer",
    "group_block_splits",
    "parse_groups",
    "remap_predictions",
    "score_transfer",
    "split_by_groups",
    "target_label_space",
    "transfer_splits",
]

#: target label spaces of the reference's ``remap_prediction`` (cropnet.md §6); targets not
#: listed (Europe, USA) keep every source class
CROPGLOBE_TARGET_CLASSES: dict[str, tuple[str, ...]] = {
    "AUS": ("sugarcane", "cotton", "other"),
    "CHN": ("corn", "soybeans", "rice", "other"),
    "ARG": ("corn", "soybeans", "rice", "sugarcane", "cotton", "other"),
}
#: the headline metrics, in report order
METRICS: tuple[str, ...] = ("overall_accuracy", "macro_f1", "weighted_f1")

ModelSpec = str | Callable[[int], Any]


# ---------------------------------------------------------------------------- label spaces
def compact_classes(ts: TimeSeriesSet) -> TimeSeriesSet:
    """Only the labelled samples, with ``classes`` reduced to those present (order kept)."""
    labels = ts.labels
    if labels is None:
        raise DataError("the source set has no labels")
    ts = ts.subset(labels >= 0)
    present = np.unique(labels[labels >= 0])
    classes = [ts.classes[i] for i in present]
    lookup = np.full(max(len(ts.classes), 1), -1, dtype=np.int64)
    lookup[present] = np.arange(present.size)
    return ts.replace(labels=lookup[ts.labels], classes=classes, taxonomy=None,
                      level_labels=None)


def align_target(
    target: TimeSeriesSet, source_classes: Sequence[str]
) -> tuple[TimeSeriesSet, dict[str, int]]:
    """Target samples whose class the source has, re-coded in the source's class order, and
    the number of samples dropped per (absent) class."""
    if target.labels is None:
        raise DataError("the target set has no labels")
    target = target.subset(target.labels >= 0)
    names = target.label_names
    keep = np.isin(names, list(source_classes))
    dropped = pd.Series(names[~keep]).value_counts().sort_index()
    kept = target.subset(keep)
    lookup = {c: i for i, c in enumerate(source_classes)}
    codes = np.array([lookup[c] for c in kept.label_names], dtype=np.int64)
    aligned = kept.replace(labels=codes, classes=list(source_classes), taxonomy=None,
                           level_labels=None)
    return aligned, {str(k): int(v) for k, v in dropped.items()}


def drop_duplicates(ts: TimeSeriesSet) -> TimeSeriesSet:
    """The set without repeated feature rows (all values of a sample, NaN equal to NaN); the
    first occurrence and its label are kept (cropnet.md §1, step 3), in input order."""
    flat = pd.DataFrame(ts.values.reshape(ts.n_samples, -1))
    return ts.subset(np.flatnonzero(~flat.duplicated(keep="first").to_numpy()))


def target_label_space(
    target: str | None,
    source_classes: Sequence[str],
    target_classes: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
) -> list[str] | None:
    """The classes predictions may take on ``target``: ``target_classes[target]`` when a
    mapping lists it, the sequence itself when one is given, else ``None`` (no remap)."""
    if target_classes is None:
        return None
    if isinstance(target_classes, Mapping):
        space = target_classes.get(str(target)) if target is not None else None
        return None if space is None else [str(c) for c in space]
    return [str(c) for c in target_classes]


def remap_predictions(
    predicted: Sequence[str] | np.ndarray, label_space: Sequence[str], other: str = "other"
) -> np.ndarray:
    """Predicted class names outside ``label_space`` become ``other`` (cropnet.md §6).

    E.g. the space of AUS is (sugarcane, cotton, other): a corn prediction becomes other.
    """
    space = [str(c) for c in label_space]
    if other not in space:
        raise DataError(f"the remap class {other!r} is not in the target label space {space}")
    pred = np.asarray(predicted).astype(str)
    return np.where(np.isin(pred, space), pred, other)


# ---------------------------------------------------------------------------- group splits
@dataclass(frozen=True)
class TransferSplit:
    """Train on ``train_groups`` of a metadata column, test on ``test_groups`` (disjoint)."""

    column: str
    train_groups: tuple[str, ...]
    test_groups: tuple[str, ...]
    name: str = ""

    def __post_init__(self) -> None:
        both = sorted(set(self.train_groups) & set(self.test_groups))
        if both:
            raise EvaluationError(
                f"groups {both} of {self.column!r} are both in training and test; "
                "a transfer split needs disjoint groups"
            )
        if not self.train_groups or not self.test_groups:
            raise EvaluationError("a transfer split needs at least one training and one test group")
        if not self.name:
            object.__setattr__(self, "name", f"{_short(self.train_groups)}->"
                                             f"{_short(self.test_groups)}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "column": self.column, "train": list(self.train_groups),
                "test": list(self.test_groups)}


def _short(groups: Sequence[str]) -> str:
    """``2000..2007+2015`` for runs of consecutive integers, else ``a+b+c``."""
    try:
        nums = sorted(int(g) for g in groups)
    except ValueError:
        return "+".join(groups)
    runs: list[str] = []
    start = prev = nums[0]
    for v in [*nums[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        runs.append(str(start) if start == prev else f"{start}..{prev}")
        if v is not None:
            start = prev = v
    return "+".join(runs)


def _group_strings(ts: TimeSeriesSet, column: str) -> np.ndarray:
    values = ts.group_values(column)
    if pd.isna(values).any():
        raise DataError(f"metadata column {column!r} has missing values; fill or drop them")
    return np.array([str(v) for v in values])


def parse_groups(spec: str | Iterable[Any], available: Iterable[Any]) -> tuple[str, ...]:
    """Group names from ``"2000-2007,2015"`` (integer ranges allowed) or a list; every name
    must exist in ``available``."""
    avail = sorted({str(a) for a in available}, key=lambda s: (len(s), s))
    if isinstance(spec, str):
        items = [s.strip() for s in spec.split(",")]
    else:
        items = [str(s) for s in spec]
    out: list[str] = []
    for item in filter(None, items):
        m = re.fullmatch(r"(-?\d+)\s*(?:-|\.\.)\s*(-?\d+)", item)
        if m and item not in avail:
            lo, hi = int(m.group(1)), int(m.group(2))
            out += [str(v) for v in range(lo, hi + 1) if str(v) in avail]
        else:
            out.append(item)
    missing = [g for g in out if g not in avail]
    if missing:
        raise DataError(f"groups {missing} not found; available: {', '.join(avail)}")
    if not out:
        raise DataError(f"no groups in {spec!r}; available: {', '.join(avail)}")
    return tuple(dict.fromkeys(out))


def split_by_groups(ts: TimeSeriesSet, split: TransferSplit) -> tuple[TimeSeriesSet, TimeSeriesSet]:
    """The source (training groups) and target (test groups) parts of ``ts``."""
    groups = _group_strings(ts, split.column)
    train = np.isin(groups, split.train_groups)
    test = np.isin(groups, split.test_groups)
    assert not (train & test).any()
    return ts.subset(np.flatnonzero(train)), ts.subset(np.flatnonzero(test))


def group_block_splits(ts: TimeSeriesSet, column: str, k: int = 2) -> list[TransferSplit]:
    """``k`` transfer splits from ``k`` blocks of whole groups of similar size
    (scikit-learn ``GroupKFold``, deterministic): block ``i`` is the target of split ``i``,
    the other blocks its source."""
    from sklearn.model_selection import GroupKFold

    groups = _group_strings(ts, column)
    uniq = np.unique(groups)
    if k < 2 or k > uniq.size:
        raise EvaluationError(f"{k} blocks need 2 <= k <= {uniq.size} groups of {column!r}")
    out = []
    for tr, te in GroupKFold(n_splits=k).split(groups, groups=groups):
        out.append(TransferSplit(column, _sorted_groups(groups[tr]), _sorted_groups(groups[te])))
    return out


def _sorted_groups(values: np.ndarray) -> tuple[str, ...]:
    return tuple(sorted(set(values.tolist()), key=lambda s: (len(s), s)))


def transfer_splits(
    ts: TimeSeriesSet,
    group: str | None,
    train: str | Iterable[Any] | None = None,
    test: str | Iterable[Any] | None = None,
    blocks: int | None = None,
) -> list[TransferSplit]:
    """The transfer splits of ``ts`` over its metadata column ``group``: one split from the
    ``train``/``test`` groups (see :func:`parse_groups`), or else ``blocks`` (default 2)
    splits from :func:`group_block_splits`."""
    if group is None:
        raise DataError("give --group COLUMN (a metadata column such as year or region)")
    columns = [] if ts.meta is None else list(ts.meta.columns)
    if group not in columns:
        raise DataError(f"no metadata column {group!r}; available: {columns}")
    if (train is None) != (test is None):
        raise DataError("--train and --test go together")
    if train is not None and test is not None:
        if blocks is not None:
            raise DataError("use either --train/--test or --blocks")
        available = pd.unique(ts.group_values(group))
        return [TransferSplit(group, parse_groups(train, available),
                              parse_groups(test, available))]
    return group_block_splits(ts, group, blocks or 2)


# ---------------------------------------------------------------------------- evaluation
def score_transfer(
    y_true: Sequence[str] | np.ndarray,
    y_pred: Sequence[str] | np.ndarray,
    classes: Sequence[str],
    label_space: Sequence[str] | None = None,
    other: str = "other",
) -> dict[str, Any]:
    """Metrics of one transfer run from class *names*: predictions remapped into
    ``label_space`` first (when given), macro-F1 over the classes present in the truth."""
    classes = [str(c) for c in classes]
    pred = np.asarray(y_pred).astype(str)
    if label_space is not None:
        pred = remap_predictions(pred, label_space, other)
    lookup = {c: i for i, c in enumerate(classes)}
    truth = np.asarray(y_true).astype(str)
    unknown = sorted(set(truth) - set(lookup))
    if unknown:
        raise DataError(f"true classes {unknown} are not among the source classes")
    yt = np.array([lookup[c] for c in truth], dtype=np.int64)
    yp = np.array([lookup[c] for c in pred], dtype=np.int64)
    return classification_metrics(yt, yp, classes, labels_present_only=True)


def _create(model: ModelSpec, config: Mapping[str, Any] | None, seed: int) -> Any:
    if callable(model):
        return model(seed)
    from cropscope.models.registry import create_model, get_model_class

    cfg = dict(config or {})
    if "seed" in get_model_class(model).default_config():
        cfg.setdefault("seed", seed)
    return create_model(model, **cfg)


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std())}


@dataclass
class TransferResult:
    """Per target and seed metrics of a transfer evaluation, and their mean ± std."""

    runs: list[dict[str, Any]]
    classes: list[str]
    config: dict[str, Any] = field(default_factory=dict)
    confusion: dict[str, list[list[int]]] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{target: {metric: {mean, std}}}`` over seeds (population std)."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for target in dict.fromkeys(r["target"] for r in self.runs):
            rows = [r for r in self.runs if r["target"] == target]
            out[target] = {m: _mean_std([r[m] for r in rows]) for m in METRICS}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "runs": self.runs, "classes": self.classes,
                "confusion_matrix": self.confusion, "config": self.config}

    def write(self, out_dir: str | Path) -> Path:
        """``transfer.json`` (:meth:`to_dict`) and ``runs.csv`` (one row per target and
        seed) in ``out_dir``, written atomically."""
        out = Path(out_dir)
        write_json(out / "transfer.json", self.to_dict())
        runs = pd.DataFrame(self.runs).drop(columns=["macro_f1_classes"])
        runs["dropped"] = runs["dropped"].map(json.dumps)
        with atomic_path(out / "runs.csv") as tmp:
            runs.to_csv(tmp, index=False, float_format="%.4f")
        return out

    def format_table(self) -> str:
        """Mean ± std per target (what ``cropscope transfer evaluate`` prints)."""

        def fmt(s: dict[str, float]) -> str:
            return f"{s['mean']:.3f} ± {s['std']:.3f}"

        lines = [f"{'target':<24} {'OA':>15} {'macro-F1':>15} {'weighted-F1':>15} {'n':>6}  "
                 "dropped"]
        for name, s in self.summary.items():
            run = next(r for r in self.runs if r["target"] == name)
            lines.append(f"{name:<24} {fmt(s['overall_accuracy']):>15} "
                         f"{fmt(s['macro_f1']):>15} {fmt(s['weighted_f1']):>15} "
                         f"{run['n_target']:>6}  {run['dropped'] or ''}")
        return "\n".join(lines)


def evaluate_transfer(
    model: ModelSpec,
    source: TimeSeriesSet,
    targets: TimeSeriesSet | Mapping[str, TimeSeriesSet],
    seeds: Sequence[int] = (0, 1, 2),
    config: Mapping[str, Any] | None = None,
    target_classes: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    other: str = "other",
    dedupe: bool = False,
    progress: bool = False,
) -> TransferResult:
    """Train on ``source`` once per seed and test on every target without adaptation.

    ``model`` is a registered name (with ``config``; ``seed`` is set per run) or a factory
    ``seed -> Classifier``. ``target_classes`` gives each target's label space for the
    prediction remap (e.g. :data:`CROPGLOBE_TARGET_CLASSES`). Target samples of classes the
    source lacks are dropped (``runs[i]["dropped"]``); ``dedupe`` removes repeated feature
    rows in each set. The model's own validation split (if any) comes from the source only.
    """
    if not seeds:
        raise EvaluationError("give at least one seed")
    if isinstance(targets, TimeSeriesSet):
        targets = {"target": targets}
    src = compact_classes(source)
    if dedupe:
        src = drop_duplicates(src)
    if len(src.classes) < 2:
        raise DataError("the source needs at least two classes")
    prepared: dict[str, tuple[TimeSeriesSet, dict[str, int], list[str] | None]] = {}
    for name, tgt in targets.items():
        aligned, dropped = align_target(tgt, src.classes)
        if dedupe:
            aligned = drop_duplicates(aligned)
        if aligned.n_samples == 0:
            raise DataError(f"target {name!r} has no sample of a class the source has")
        prepared[name] = (aligned, dropped, target_label_space(name, src.classes, target_classes))
    runs: list[dict[str, Any]] = []
    confusion: dict[str, np.ndarray] = {}
    for i, seed in enumerate(seeds):
        if progress:
            print(f"seed {seed} ({i + 1}/{len(seeds)})", flush=True, file=sys.stderr)
        t0 = time.perf_counter()
        clf = _create(model, config, int(seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            clf.fit(src)
        fit_s = time.perf_counter() - t0
        for name, (tgt, dropped, space) in prepared.items():
            pred = np.asarray(clf.classes)[clf.predict(tgt)]
            m = score_transfer(tgt.label_names, pred, src.classes, space, other)
            confusion[name] = confusion.get(name, 0) + np.asarray(m["confusion_matrix"])
            runs.append({
                "target": name, "seed": int(seed),
                **{k: m[k] for k in METRICS},
                "macro_f1_classes": m["macro_f1_classes"],
                "n_source": int(src.n_samples), "n_target": int(tgt.n_samples),
                "dropped": dropped, "fit_s": round(fit_s, 3),
            })
    return TransferResult(
        runs=runs, classes=list(src.classes),
        config={"model": model if isinstance(model, str) else getattr(model, "__name__", "?"),
                "model_config": dict(config or {}), "seeds": [int(s) for s in seeds],
                "dedupe": dedupe, "other": other},
        confusion={k: v.tolist() for k, v in confusion.items()},
    )
