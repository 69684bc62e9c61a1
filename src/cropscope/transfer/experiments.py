"""Transfer experiments from the inputs the command line takes (a registered dataset, a
long table or a folder of CropGlobe files): :func:`run_transfer` (``cropscope transfer
evaluate``) and :func:`run_transfer_study` (``cropscope transfer study``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cropscope.data.readers.cropglobe import read_cropglobe
from cropscope.data.samples import load_samples, sample_source
from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.models._tabular import FeatureClassifier
from cropscope.models.registry import create_model, get_model_class
from cropscope.transfer.protocol import (
    CROPGLOBE_TARGET_CLASSES,
    TransferResult,
    evaluate_transfer,
    split_by_groups,
    transfer_splits,
)
from cropscope.transfer.study import (
    FEATURES,
    STUDY_MODELS,
    StudyConfig,
    StudyResult,
    ThermalAlignment,
    run_study,
)
from cropscope.weather.covariates import GriddedField
from cropscope.weather.readers import open_weather

__all__ = ["run_transfer", "run_transfer_study"]

log = logging.getLogger(__name__)


def run_transfer(
    model: str,
    *,
    dataset: str | None = None,
    table: str | Path | None = None,
    group: str | None = None,
    train: str | Sequence[Any] | None = None,
    test: str | Sequence[Any] | None = None,
    per_group: bool = False,
    cropglobe: str | Path | None = None,
    source: str | None = None,
    targets: Sequence[str] | None = None,
    kind: str = "median",
    seeds: Sequence[int] = (0, 1, 2),
    config: Mapping[str, Any] | None = None,
    other: str | None = None,
    target_classes: Sequence[str] | None = None,
    dedupe: bool | None = None,
    out_dir: str | Path | None = None,
    id_col: str = "sample_id",
    time_col: str = "date",
    label_col: str = "label",
    bands: Sequence[str] | None = None,
    progress: bool = False,
) -> TransferResult:
    """Train ``model`` (a registered name, with ``config``) on a source once per seed and
    test it on the targets without adaptation (:func:`evaluate_transfer`).

    Source and targets: the ``train``/``test`` groups (e.g. ``"2000-2007,2015"``) of the
    metadata column ``group`` of a ``dataset`` or ``table`` (``per_group``: score every
    target group separately); or, with ``cropglobe`` (a folder of CropGlobe ``.npz``
    files of feature ``kind``), the ``source`` country and the ``targets`` countries, with
    the reference label-space rules and duplicate removal. ``other``: the class that
    predictions outside a target's label space become, with ``target_classes`` that
    space. Feature models use the flat vector (``features=["values"]``) unless ``config``
    says otherwise. With ``out_dir``, ``transfer.json`` and ``runs.csv`` are written there.
    """
    config = dict(config or {})
    if issubclass(get_model_class(model), FeatureClassifier):
        config.setdefault("features", ["values"])  # the flat vector, as the reference RF
    create_model(model, **config)  # fail fast on a bad option
    space: Any = None
    tgts: dict[str, TimeSeriesSet]
    if cropglobe is not None:
        if dataset or table or group:
            raise DataError("--cropglobe replaces --dataset/--table/--group")
        if not source or not targets:
            raise DataError("--cropglobe needs --source CC and --targets CC,CC,...")
        codes = [c.strip().upper() for c in targets if c.strip()]
        src = read_cropglobe(cropglobe, source, kind)[source.upper()]
        tgts = read_cropglobe(cropglobe, codes, kind)
        other = other or "other"
        space = CROPGLOBE_TARGET_CLASSES
        dedupe = True if dedupe is None else dedupe
        desc = f"CropGlobe {kind}: {source.upper()} -> {','.join(codes)}"
    else:
        ts = load_samples(dataset, table, id_col=id_col, time_col=time_col,
                          label_col=label_col, bands=bands)
        split = transfer_splits(ts, group, train, test)[0]
        src, tgt = split_by_groups(ts, split)
        if per_group:
            values = np.array([str(v) for v in tgt.group_values(str(group))])
            tgts = {g: tgt.subset(values == g) for g in split.test_groups}
        else:
            tgts = {"+".join(split.test_groups): tgt}
        dedupe = bool(dedupe)
        desc = f"{sample_source(dataset, table)}: {split.name} ({group})"
    if target_classes is not None:
        if other is None:
            raise DataError("--target-classes needs --other CLASS")
        space = [c.strip() for c in target_classes if c.strip()]
    elif other is not None and space is None:
        raise DataError("--other needs --target-classes (the target label space)")
    log.info("transfer evaluation of %s on %s, seeds %s", model, desc, list(seeds))
    result = evaluate_transfer(model, src, tgts, list(seeds), config, space, other or "other",
                               dedupe, progress=progress)
    if out_dir is not None:
        result.write(out_dir)
    return result


def run_transfer_study(
    out_dir: str | Path,
    *,
    dataset: str | None = None,
    table: str | Path | None = None,
    group: str | None = None,
    train: str | Sequence[Any] | None = None,
    test: str | Sequence[Any] | None = None,
    blocks: int | None = None,
    features: Sequence[str] = FEATURES,
    models: Sequence[str] = tuple(STUDY_MODELS),
    augment: Sequence[bool] = (False, True),
    seeds: Sequence[int] = (0, 1, 2),
    jobs: int = 2,
    epochs: int | None = None,
    window_days: int | None = None,
    season: tuple[int, int] | None = None,
    sensor: str = "sentinel2",
    temperature: str | Path | None = None,
    temperature_var: str = "t2m",
    gdd_base: float = 10.0,
    thermal_step: float = 50.0,
    plot: bool = True,
    id_col: str = "sample_id",
    time_col: str = "date",
    label_col: str = "label",
    bands: Sequence[str] | None = None,
    progress: bool = False,
) -> StudyResult:
    """Features x models x augmentation on the group splits of a ``dataset`` or ``table``
    (``train``/``test`` groups of the metadata column ``group``, or ``blocks`` blocks of
    whole groups, each the target once), resumable in ``out_dir`` (see :func:`run_study`).

    ``models``: registered names with the study's settings (:data:`STUDY_MODELS`);
    ``epochs`` overrides the deep models' epochs. ``window_days``/``season`` (days of year)
    shape the median features, ``sensor`` names the bands for the indices. With
    ``temperature`` (a gridded NetCDF/Zarr/GRIB field of ``temperature_var``) the series
    are aligned on thermal time (growing degree days over ``gdd_base``, steps of
    ``thermal_step`` °C·d). ``jobs``: worker processes (one thread each).
    """
    ts = load_samples(dataset, table, id_col=id_col, time_col=time_col, label_col=label_col,
                      bands=bands)
    splits = transfer_splits(ts, group, train, test, blocks)
    model_cfg: dict[str, dict[str, Any]] = {}
    for name in models:
        cfg = dict(STUDY_MODELS.get(name, {}))
        if epochs is not None and "epochs" in get_model_class(name).default_config():
            cfg["epochs"] = epochs
        model_cfg[name] = cfg
    thermal = None
    if temperature is not None:
        thermal = ThermalAlignment(GriddedField(open_weather(temperature)), temperature_var,
                                   gdd_base, step=thermal_step)
    if jobs < 1:
        raise DataError("--jobs must be >= 1")
    config = StudyConfig(
        splits=splits, features=list(features), models=model_cfg, augment=tuple(augment),
        seeds=list(seeds), window_days=window_days, season=season, sensor=sensor,
        thermal=thermal, jobs=jobs,
    )
    log.info("transfer study on %s: %s", sample_source(dataset, table),
             "; ".join(s.name for s in splits))
    return run_study(ts, config, out_dir, progress=progress, plot=plot, log=log.info)
