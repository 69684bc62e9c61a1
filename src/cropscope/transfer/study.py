"""The transfer study: features x models x augmentation on/off, over seeds and group splits.

Every cell trains on the source groups of a split and tests on its target groups with the
protocol of :mod:`cropscope.transfer.protocol` (source label space, absent target classes
dropped, macro-F1 over the target's classes). Cells run in worker processes with one torch
/ BLAS thread each, so a cell's numbers depend on its seed only, not on the worker count.
Finished cells are stored in ``OUT/cells/`` and reused when the study is run again with the
same settings (resumable).

Features (how each model reads them, and which cells do not apply):

| feature | tree models (rf, lightgbm) | 1-D deep models (tempcnn, ltae) | image model (cropnet) |
|---|---|---|---|
| ``raw`` | gap-filled values, flattened | the series | band x time image |
| ``median1d`` | DOY-window medians, flattened | the median series | n/a (see median2d) |
| ``median2d`` | n/a (flat = ``median1d``) | n/a (= ``median1d``) | band x time median image |
| ``harmonic`` | harmonic coefficients (order 3) | n/a (no time axis) | n/a (no time axis) |
| ``indices`` | values + indices, flattened | series with index bands | image with index bands |

Augmentation (CropNet time shift / scale / warp, 2 copies) acts on the series the model
receives, on the training samples only: deep models augment their training split inside
``fit`` (after their validation split, which stays un-augmented), tree models get augmented
copies of the source before fitting (for ``harmonic``, of the series the coefficients are
fitted to). Tree models never see a validation set.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError, ModelError
from cropscope.io import atomic_path, read_json, write_json
from cropscope.threads import current_threads, set_threads
from cropscope.transfer.protocol import (
    METRICS,
    TransferSplit,
    align_target,
    compact_classes,
    score_transfer,
    split_by_groups,
)

__all__ = [
    "FEATURES",
    "STUDY_MODELS",
    "StudyConfig",
    "StudyResult",
    "ThermalAlignment",
    "feature_set",
    "median_series",
    "not_applicable",
    "run_study",
]

FEATURES: tuple[str, ...] = ("raw", "median1d", "median2d", "harmonic", "indices")
#: default models and their study settings (shortened deep training, one thread each)
STUDY_MODELS: dict[str, dict[str, Any]] = {
    "rf": {"n_estimators": 500, "n_jobs": 1},
    "lightgbm": {"n_jobs": 1},
    "tempcnn": {"epochs": 30},
    "cropnet": {"channels": 32, "lr": 2e-3, "batch_size": 128, "lr_decay": 0.95, "epochs": 30},
    "ltae": {"epochs": 30},
}
_HARMONIC_ORDER = 3
_REF_YEAR = 2001  # a non-leap year for the dates of DOY windows


@dataclass(frozen=True)
class ThermalAlignment:
    """Resample series onto thermal time (GDD, °C·d) before the features.

    ``field`` is any :class:`cropscope.weather.covariates.FieldSource` (e.g. a
    ``GriddedField`` over a temperature NetCDF); the set needs longitude/latitude in ``meta``.
    """

    field: Any
    variable: str = "t2m"
    base: float = 10.0
    cap: float | None = 30.0
    step: float = 50.0


@dataclass
class StudyConfig:
    """What to run; see :func:`run_study`."""

    splits: list[TransferSplit]
    features: Sequence[str] = FEATURES
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: dict(STUDY_MODELS))
    augment: Sequence[bool] = (False, True)
    seeds: Sequence[int] = (0, 1, 2)
    window_days: int | None = None
    season: tuple[int, int] | None = None
    sensor: str = "sentinel2"
    thermal: ThermalAlignment | None = None
    jobs: int = 2

    def signature(self) -> str:
        """Hash of every setting that changes a cell's numbers (for resuming)."""
        data = {"models": {k: dict(v) for k, v in self.models.items()},
                "window_days": self.window_days, "season": self.season, "sensor": self.sensor,
                "thermal": None if self.thermal is None else
                [self.thermal.variable, self.thermal.base, self.thermal.cap, self.thermal.step]}
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- model kinds
def _kind(model: str) -> str:
    """``image`` (2-D band x time input), ``series`` (other deep), ``tree`` or ``other``."""
    from cropscope.models._tabular import FeatureClassifier
    from cropscope.models._torch import TorchClassifier
    from cropscope.models.registry import get_model_class

    cls = get_model_class(model)
    if issubclass(cls, TorchClassifier):
        return "image" if "image" in cls.input_layout else "series"
    if issubclass(cls, FeatureClassifier):
        return "tree"
    return "other"


def not_applicable(feature: str, model: str) -> str | None:
    """Why the cell (feature, model) is not run, or ``None`` when it is."""
    if feature not in FEATURES:
        raise DataError(f"unknown feature {feature!r}; options: {list(FEATURES)}")
    kind = _kind(model)
    if feature == "median2d" and kind != "image":
        return "the 2D median is the band x time image of CropNet; read flat or as a series it " \
               "equals median1d"
    if feature == "median1d" and kind == "image":
        return "an image model reads the medians as a band x time image: see median2d"
    if feature == "harmonic" and kind != "tree":
        return "harmonic coefficients have no time axis for a sequence model (a reconstructed " \
               "series would be a smoothed copy of raw)"
    return None


# ---------------------------------------------------------------------------- features
def _mode(values: np.ndarray) -> int:
    vals, counts = np.unique(values, return_counts=True)
    return int(vals[counts.argmax()])


def median_series(
    ts: TimeSeriesSet, window_days: int | None = None, season: tuple[int, int] | None = None
) -> TimeSeriesSet:
    """The CropGlobe DOY-window medians (:func:`cropscope.features.median_features_2d`) as a
    set on the window grid, with window start dates in a reference year.

    ``window_days`` defaults to the data's own step (at least 5 days: 5-day medians for
    Sentinel-2, 16 for 16-day MODIS composites); ``season`` ``(start_doy, end_doy)`` to the
    most common first and last day of year of the series (wrapping over New Year when
    start > end).
    """
    from cropscope.augment import infer_step_days
    from cropscope.features import median_features_2d, median_windows

    if ts.dates is None:
        raise DataError("median features need calendar dates")
    wd = int(window_days) if window_days else max(5, round(infer_step_days(ts)))
    if season is None:
        day_of_year = ts.day_of_year
        assert day_of_year is not None  # dates checked above
        doy = np.broadcast_to(day_of_year, (ts.n_samples, ts.n_times))
        season = (_mode(doy[:, 0]), _mode(doy[:, -1]))
    start, end = int(season[0]), int(season[1])
    img = median_features_2d(ts, wd, start, end)[:, 0]  # [N, C, T']
    windows = median_windows(wd, start, end)
    wrap = np.concatenate([[0], np.cumsum(np.diff(windows) < 0)])
    dates = (np.array([f"{_REF_YEAR + w}-01-01" for w in wrap], dtype="datetime64[D]")
             + (windows * wd).astype("timedelta64[D]"))
    return TimeSeriesSet(values=img.transpose(0, 2, 1), bands=list(ts.bands), dates=dates,
                         labels=ts.labels, classes=list(ts.classes), ids=ts.ids, meta=ts.meta)


def _index_names(ts: TimeSeriesSet, sensor: str) -> list[str]:
    from cropscope.features import available_indices, index_bands, resolve_bands

    present = {b.lower() for b in ts.bands}
    return [name for name in available_indices() if name.lower() not in present
            and len(resolve_bands(ts.bands, index_bands(name), sensor)) == len(index_bands(name))]


def feature_set(
    ts: TimeSeriesSet, feature: str, window_days: int | None = None,
    season: tuple[int, int] | None = None, sensor: str = "sentinel2",
) -> TimeSeriesSet:
    """The set a model receives for ``feature`` (``harmonic``: the series the coefficients
    are fitted to; ``median1d``/``median2d``: the same median series, read differently)."""
    if feature in ("raw", "harmonic"):
        return ts
    if feature in ("median1d", "median2d"):
        return median_series(ts, window_days, season)
    if feature == "indices":
        from cropscope.features import add_indices

        names = _index_names(ts, sensor)
        if not names:
            raise DataError(f"no spectral index can be computed from the bands {ts.bands}")
        return add_indices(ts, names, sensor=sensor)
    raise DataError(f"unknown feature {feature!r}; options: {list(FEATURES)}")


def _model_config(model: str, feature: str, base: Mapping[str, Any], augment: bool,
                  seed: int) -> dict[str, Any]:
    cfg = {**base, "seed": seed}
    kind = _kind(model)
    if kind in ("image", "series"):
        cfg["augment"] = augment
    elif kind == "tree":
        cfg["features"] = ["harmonics"] if feature == "harmonic" else ["values"]
        if feature == "harmonic":
            cfg["harmonic_order"] = _HARMONIC_ORDER
    return cfg


# ---------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cell:
    split: str
    feature: str
    model: str
    augment: bool
    seed: int

    @property
    def key(self) -> str:
        safe = "".join(c if c.isalnum() or c in "._+-" else "_" for c in self.split)
        return f"{safe}__{self.feature}__{self.model}__aug{int(self.augment)}__s{self.seed}"


_STATE: dict[str, Any] = {}


def _init_worker(ts: TimeSeriesSet, config: StudyConfig) -> None:
    """Worker start: one thread for torch and BLAS, the data and settings kept in memory."""
    set_threads(1)
    _STATE.clear()
    _STATE.update(ts=ts, config=config, cache={})


def _thermal(ts: TimeSeriesSet, source_mask: np.ndarray, th: ThermalAlignment) -> TimeSeriesSet:
    from cropscope.weather.covariates import align_on_thermal_time, thermal_time

    tt = thermal_time(ts, th.field, th.variable, th.base, th.cap)
    n_steps = int(np.nanmax(tt.cumulative[source_mask]) // th.step) + 1
    out = align_on_thermal_time(ts, tt, th.step, n_steps)
    keep = out.mask.sum(axis=1) >= 2
    return out.subset(np.flatnonzero(keep))


def _prepared(split_name: str, feature: str) -> tuple[TimeSeriesSet, TimeSeriesSet, dict]:
    """Source and aligned target of a split for a feature (cached per worker)."""
    cache = _STATE["cache"]
    key = (split_name, feature)
    if key not in cache:
        cfg: StudyConfig = _STATE["config"]
        split = next(s for s in cfg.splits if s.name == split_name)
        ts: TimeSeriesSet = _STATE["ts"]
        if cfg.thermal is not None:
            groups = np.array([str(v) for v in ts.group_values(split.column)])
            ts = _thermal(ts, np.isin(groups, split.train_groups), cfg.thermal)
        fs = feature_set(ts, feature, cfg.window_days, cfg.season, cfg.sensor)
        source, target = split_by_groups(fs, split)
        source = compact_classes(source)
        target, dropped = align_target(target, source.classes)
        cache[key] = (source, target, dropped)
    return cache[key]


def _run_cell(cell: Cell) -> dict[str, Any]:
    """Fit one model on one split's source and score it on the target."""
    import warnings

    from cropscope.augment import TemporalAugmentation, augment_training_set
    from cropscope.engine.seeding import seed_everything
    from cropscope.models.registry import create_model

    cfg: StudyConfig = _STATE["config"]
    t0 = time.perf_counter()
    source, target, dropped = _prepared(cell.split, cell.feature)
    mcfg = _model_config(cell.model, cell.feature, cfg.models[cell.model], cell.augment,
                         cell.seed)
    train = source
    if cell.augment and _kind(cell.model) not in ("image", "series"):
        train = augment_training_set(source, None, TemporalAugmentation(), cell.seed)
    seed_everything(cell.seed)
    model = create_model(cell.model, **mcfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(train)
    fit_s = time.perf_counter() - t0
    pred = np.asarray(model.classes)[model.predict(target)]
    m = score_transfer(target.label_names, pred, source.classes)
    return {**asdict(cell), **{k: m[k] for k in METRICS},
            "n_source": int(source.n_samples), "n_train": int(train.n_samples),
            "n_target": int(target.n_samples), "dropped": dropped,
            "fit_s": round(fit_s, 2), "total_s": round(time.perf_counter() - t0, 2)}


# ---------------------------------------------------------------------------- the study
@dataclass
class StudyResult:
    """Per-run rows, the aggregated table and where the files are."""

    runs: pd.DataFrame
    table: pd.DataFrame
    augmentation: pd.DataFrame
    wall_s: float
    files: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"wall_s": round(self.wall_s, 1),
                "table": json.loads(self.table.to_json(orient="records")),
                "augmentation": json.loads(self.augmentation.to_json(orient="records")),
                "files": {k: str(v) for k, v in self.files.items()}}


def _cells(config: StudyConfig) -> tuple[list[Cell], list[dict[str, Any]]]:
    cells, skipped = [], []
    for split in config.splits:
        for feature in config.features:
            for model in config.models:
                reason = not_applicable(feature, model)
                if reason is None and config.thermal is not None and "median" in feature:
                    reason = "thermal-time series have no calendar dates for DOY medians"
                if reason is not None:
                    skipped.append({"split": split.name, "feature": feature, "model": model,
                                    "reason": reason})
                    continue
                for aug in config.augment:
                    for seed in config.seeds:
                        cells.append(Cell(split.name, feature, model, bool(aug), int(seed)))
    # longest first (deep, augmented) so the workers finish together
    weight = {"image": 3, "series": 2, "tree": 1, "other": 1}
    cells.sort(key=lambda c: -(weight[_kind(c.model)] * (3 if c.augment else 1)))
    return cells, skipped


def _aggregate(runs: pd.DataFrame, skipped: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    keys = ["split", "feature", "model", "augment"]
    for key, grp in runs.groupby(keys, sort=False):
        row = dict(zip(keys, key, strict=True))
        row["n_seeds"] = len(grp)
        for m in METRICS:
            row[f"{m}_mean"] = grp[m].mean()
            row[f"{m}_std"] = grp[m].std(ddof=0)
        row["fit_s_mean"] = grp["fit_s"].mean()
        row["n_source"] = int(grp["n_source"].iloc[0])
        row["n_target"] = int(grp["n_target"].iloc[0])
        row["note"] = ""
        rows.append(row)
    for s in skipped:
        rows.append({**s, "augment": None, "n_seeds": 0, "note": "n/a: " + s.pop("reason")})
    table = pd.DataFrame(rows)
    order = {f: i for i, f in enumerate(FEATURES)}
    table["_f"] = table["feature"].map(order)
    table = table.sort_values(["split", "_f", "model", "augment"], na_position="last",
                              kind="stable").drop(columns="_f")
    return table.reset_index(drop=True)


def _augmentation_effect(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (split, feature, model): OA and macro-F1 with minus without augmentation, paired
    by seed, and how many seeds improved."""
    rows = []
    for key, grp in runs.groupby(["split", "feature", "model"], sort=False):
        on = grp[grp["augment"]].set_index("seed")
        off = grp[~grp["augment"]].set_index("seed")
        seeds = on.index.intersection(off.index)
        if seeds.empty:
            continue
        row = dict(zip(["split", "feature", "model"], key, strict=True))
        for m in ("overall_accuracy", "macro_f1"):
            d = on.loc[seeds, m] - off.loc[seeds, m]
            row[f"d_{m}_mean"] = d.mean()
            row[f"d_{m}_std"] = d.std(ddof=0)
        row["seeds_oa_better"] = int((on.loc[seeds, "overall_accuracy"]
                                      > off.loc[seeds, "overall_accuracy"]).sum())
        row["n_seeds"] = len(seeds)
        rows.append(row)
    return pd.DataFrame(rows)


def format_markdown(table: pd.DataFrame, augmentation: pd.DataFrame) -> str:
    """The study table as Markdown: one row per (split, feature, model), OA and macro-F1
    mean ± std without and with augmentation."""
    lines = []
    for split, sub in table.groupby("split", sort=False):
        lines += [f"### {split}", "",
                  "| feature | model | OA (no aug) | OA (aug) | macro-F1 (no aug) | "
                  "macro-F1 (aug) | fit s (no aug / aug) |",
                  "|---|---|---|---|---|---|---|"]
        for (feature, model), grp in sub.groupby(["feature", "model"], sort=False):
            note = grp["note"].iloc[0]
            if isinstance(note, str) and note.startswith("n/a"):
                lines.append(f"| {feature} | {model} | {note} | | | | |")
                continue
            cells = {}
            for aug in (False, True):
                r = grp[grp["augment"] == aug]
                cells[aug] = None if r.empty else r.iloc[0]

            def fmt(r: Any, m: str) -> str:
                return "-" if r is None else f"{r[m + '_mean']:.3f} ± {r[m + '_std']:.3f}"

            def sec(r: Any) -> str:
                return "-" if r is None else f"{r['fit_s_mean']:.0f}"

            lines.append(
                f"| {feature} | {model} | {fmt(cells[False], 'overall_accuracy')} | "
                f"{fmt(cells[True], 'overall_accuracy')} | {fmt(cells[False], 'macro_f1')} | "
                f"{fmt(cells[True], 'macro_f1')} | {sec(cells[False])} / {sec(cells[True])} |")
        lines.append("")
    if not augmentation.empty:
        lines += ["### Augmentation effect (aug minus no aug, paired by seed)", "",
                  "| split | feature | model | ΔOA | Δmacro-F1 | seeds better (OA) |",
                  "|---|---|---|---|---|---|"]
        for _, r in augmentation.iterrows():
            lines.append(
                f"| {r['split']} | {r['feature']} | {r['model']} | "
                f"{r['d_overall_accuracy_mean']:+.3f} ± {r['d_overall_accuracy_std']:.3f} | "
                f"{r['d_macro_f1_mean']:+.3f} ± {r['d_macro_f1_std']:.3f} | "
                f"{r['seeds_oa_better']}/{r['n_seeds']} |")
        lines.append("")
    return "\n".join(lines)


def _write_csv(df: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4f")
    return path


def run_study(
    ts: TimeSeriesSet,
    config: StudyConfig,
    out_dir: str | Path,
    progress: bool = True,
    plot: bool = True,
    log: Callable[[str], None] | None = None,
) -> StudyResult:
    """Run every applicable cell (resuming finished ones) and write, atomically, into
    ``out_dir``: ``runs.csv`` (one row per fit), ``study.csv`` / ``study.md`` (mean ± std
    over seeds), ``augmentation.csv`` (paired aug - no-aug differences), ``study.json`` and
    ``study.png``."""
    if ts.labels is None:
        raise DataError("the study needs labelled samples")
    unknown = [m for m in config.models if m not in _known_models()]
    if unknown:
        raise ModelError(f"unknown model(s) {unknown}")
    bad = [f for f in config.features if f not in FEATURES]
    if bad:
        raise DataError(f"unknown feature(s) {bad}; options: {list(FEATURES)}")
    if not config.seeds:
        raise DataError("give at least one seed")
    names = [s.name for s in config.splits]
    if len(set(names)) != len(names):
        raise DataError(f"split names must be unique, got {names}")
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out_dir)
    cell_dir = out / "cells"
    cell_dir.mkdir(parents=True, exist_ok=True)
    signature = config.signature()
    cells, skipped = _cells(config)
    done: dict[str, dict[str, Any]] = {}
    for c in cells:
        path = cell_dir / f"{c.key}.json"
        if path.is_file():
            stored = read_json(path)
            if stored.get("signature") == signature:
                done[c.key] = stored["result"]
    todo = [c for c in cells if c.key not in done]
    say(f"transfer study: {len(cells)} runs ({len(done)} done before), "
        f"{len(skipped)} cells not applicable, {config.jobs} worker(s)")
    t0 = time.perf_counter()

    def store(c: Cell, result: dict[str, Any]) -> None:
        write_json(cell_dir / f"{c.key}.json", {"signature": signature, "result": result})
        done[c.key] = result

    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="cells", file=sys.stderr, leave=False)
    if todo and config.jobs > 1:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(config.jobs, mp_context=ctx, initializer=_init_worker,
                                 initargs=(ts, config)) as pool:
            futures = {pool.submit(_run_cell, c): c for c in todo}
            for fut in as_completed(futures):
                store(futures[fut], fut.result())
                if bar is not None:
                    bar.update()
    elif todo:
        threads = current_threads()
        saved = dict(_STATE)
        try:
            _init_worker(ts, config)
            for c in todo:
                store(c, _run_cell(c))
                if bar is not None:
                    bar.update()
        finally:
            set_threads(threads)
            _STATE.clear()
            _STATE.update(saved)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    runs = pd.DataFrame([done[c.key] for c in cells])
    if runs.empty:
        raise DataError("no applicable cell: check the features and models")
    runs = runs.sort_values(["split", "feature", "model", "augment", "seed"]).reset_index(drop=True)
    runs["dropped"] = runs["dropped"].map(lambda d: json.dumps(d, sort_keys=True))
    table = _aggregate(runs, [dict(s) for s in skipped])
    effect = _augmentation_effect(runs)
    files = {
        "runs.csv": _write_csv(runs, out / "runs.csv"),
        "study.csv": _write_csv(table, out / "study.csv"),
        "augmentation.csv": _write_csv(effect, out / "augmentation.csv"),
    }
    md = out / "study.md"
    with atomic_path(md) as tmp:
        tmp.write_text(format_markdown(table, effect))
    files["study.md"] = md
    result = StudyResult(runs, table, effect, wall, files)
    meta = {"wall_s": round(wall, 1), "n_runs": len(cells), "n_run_now": len(todo),
            "jobs": config.jobs, "signature": signature,
            "splits": [s.to_dict() for s in config.splits], "features": list(config.features),
            "models": {k: dict(v) for k, v in config.models.items()},
            "augment": [bool(a) for a in config.augment], "seeds": list(config.seeds),
            "window_days": config.window_days, "season": config.season,
            "thermal": None if config.thermal is None else {
                k: v for k, v in asdict(config.thermal).items() if k != "field"}}
    files["study.json"] = write_json(out / "study.json", meta)
    if plot:
        from cropscope.transfer.plot import plot_study

        try:
            files["study.png"] = plot_study(table, out / "study.png")
        except ImportError:
            say("warning: matplotlib is missing; study.png not written")
    return result


def _known_models() -> set[str]:
    from cropscope.models.registry import list_models

    return set(list_models())
