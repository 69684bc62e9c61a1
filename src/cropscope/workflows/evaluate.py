"""Evaluate a registered model on any input the command line takes: k-fold or
leave-group-out cross-validation of a dataset or table, a fixed train/test split of two
tables, or a spatially disjoint split of a hyperspectral scene (:func:`evaluate_model`,
what ``cropscope evaluate`` does)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cropscope.data.samples import attach_taxonomy, load_samples, sample_source
from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.evaluation.crossval import EvaluationResult, cross_validate, evaluate_split
from cropscope.evaluation.report import write_report
from cropscope.hyperspectral.datasets import load_scene_input
from cropscope.hyperspectral.scene import evaluate_scene
from cropscope.models.base import Classifier
from cropscope.models.registry import create_model, get_model_class, hierarchical_model
from cropscope.taxonomy.tree import Taxonomy

__all__ = ["common_time_axis", "evaluate_model"]

log = logging.getLogger(__name__)


def evaluate_model(
    model: str,
    *,
    dataset: str | None = None,
    split: str | None = None,
    table: str | Path | None = None,
    train_table: str | Path | None = None,
    test_table: str | Path | None = None,
    scene: str | Path | None = None,
    labels: str | Path | None = None,
    config: Mapping[str, Any] | None = None,
    cv: int = 5,
    seed: int = 0,
    group: str | None = None,
    hierarchical: bool = False,
    levels: bool = False,
    taxonomy: str | Path | Taxonomy | None = None,
    decoding: str = "consistent",
    background: str | None = None,
    id_col: str = "sample_id",
    time_col: str = "date",
    label_col: str = "label",
    bands: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    progress: bool = False,
    spatial_blocks: str | None = None,
    strict: bool = False,
    table_options: Mapping[str, Any] | None = None,
) -> EvaluationResult:
    """Evaluate ``model`` (a registered name, with options ``config``).

    - ``dataset`` (optionally one ``split``) or ``table``: ``cv``-fold cross-validation, or
      leave-one-group-out over the metadata column ``group``;
    - ``train_table`` and ``test_table``: train on one, score on the other;
    - ``scene`` with ``labels`` (or a registered scene dataset): a spatially disjoint split
      given by ``split`` (``blocks:B[:random[:F]]``, ``tiles``; default ``blocks:16``).

    ``levels`` also scores every level of the class hierarchy ``taxonomy`` (default: the one
    shipped with ``dataset``), decoded with ``decoding`` (``consistent``/``independent``;
    ``background``: the class left out of the ``*_no_background`` scores);
    ``hierarchical`` trains a hierarchical model (see
    :func:`~cropscope.models.hierarchical_model`) and implies ``levels``. With ``out_dir``
    the report (metrics.json, CSV, PNG) is written there.

    ``spatial_blocks`` (``"0.5deg"``, ``"10km"``) makes the CV folds groups of coordinate
    blocks; a fold whose training part lacks a class warns (``strict``: an error), see
    :func:`~cropscope.evaluation.cross_validate`. ``table_options`` go to the table reader
    (``nodata``, ``align``, ``season_start``, ``step``, ``wide``; see
    :func:`~cropscope.data.readers.table.read_table`). With a train and a test table in
    different seasons, the test samples are moved onto the training season (whole years)
    and, when both have one date grid, onto the training grid, so both share one time axis.
    """
    config = dict(config or {})
    if "seed" in get_model_class(model).default_config():
        config.setdefault("seed", seed)
    levels = hierarchical or levels
    if hierarchical:
        model, config = hierarchical_model(model, config)
    create_model(model, **config)  # fail fast on a bad option
    name, options = model, config
    level_args: dict[str, Any] = {"levels": levels, "decoding": decoding,
                                  "background": background}

    def factory() -> Classifier:
        return create_model(name, **options)

    if (train_table is None) != (test_table is None):
        raise DataError("--train-table and --test-table go together")
    columns: dict[str, Any] = {"id_col": id_col, "time_col": time_col, "label_col": label_col,
                               "bands": bands, **dict(table_options or {})}
    if spatial_blocks is not None and (group is not None or test_table is not None):
        raise DataError("--spatial-blocks makes its own folds: not with --group or a "
                        "fixed --train-table/--test-table split")
    scene_input = load_scene_input(dataset, scene, labels, table or train_table)
    if scene_input is not None:  # hyperspectral scene: spatially disjoint split
        log.info("scene evaluation of %s on %s", model, scene_input)
        result = evaluate_scene(model, scene_input, split, seed=seed, config=config,
                                progress=progress)
    elif train_table is not None and test_table is not None:
        if dataset or table:
            raise DataError("use either --train-table/--test-table or --dataset/--table")
        train = load_samples(table=train_table, **columns)
        test = load_samples(table=test_table, **columns)
        if levels:
            train = attach_taxonomy(train, taxonomy)
            test = attach_taxonomy(test, taxonomy)
        train, test = common_time_axis(train, test, (table_options or {}).get("align"),
                                       (table_options or {}).get("season_start"))
        log.info("fixed split: train %s / test %s", train, test)
        result = evaluate_split(factory, train, test, **level_args)
    else:
        ts = load_samples(dataset, table, split=split, **columns)
        if levels:
            ts = attach_taxonomy(ts, taxonomy, dataset)
        log.info("%d-fold CV of %s on %s: %s%s", cv, model, sample_source(dataset, table, split),
                 ts, f", leave-{group}-out" if group else "")
        if spatial_blocks is not None:
            log.info("spatial-block CV: blocks of %s", spatial_blocks)
        result = cross_validate(factory, ts, cv=cv, seed=seed, group=group, progress=progress,
                                spatial_blocks=spatial_blocks, strict=strict, **level_args)
    result.config.update({"model": model, "model_config": config})
    if out_dir is not None:
        write_report(result, out_dir)
        log.info("report written to %s", out_dir)
    return result


def common_time_axis(
    train: TimeSeriesSet, test: TimeSeriesSet, align: str | None = None,
    season_start: str | None = None,
) -> tuple[TimeSeriesSet, TimeSeriesSet]:
    """``train`` and ``test`` on one time axis: test samples of other seasons are moved by
    whole years onto the earliest training season (unless ``align == "none"``), and a test
    set with its own shared date grid is put on the training grid (dates the training grid
    lacks are dropped, missing ones are gaps). Sets without calendar dates are returned as
    they are."""
    import numpy as np

    from cropscope.data.readers.table import align_seasons, sample_seasons

    if align == "none" or train.dates is None or test.dates is None:
        return train, test
    tr_seasons, start = sample_seasons(train, season_start)
    te_seasons, _ = sample_seasons(test, start)
    ref = int(tr_seasons.min())
    if (te_seasons != ref).any():
        log.info("test samples of season(s) %s moved onto the training season %d (whole "
                 "years, season start %02d-%02d)", sorted(set(te_seasons.tolist())), ref,
                 *start)
        test = align_seasons(test, start, ref)
    if train.dates.ndim == 1 and test.dates is not None and test.dates.ndim == 1 \
            and not np.array_equal(train.dates, test.dates):
        grid = train.dates
        pos = np.searchsorted(grid, test.dates)
        hit = (pos < len(grid)) & (grid[np.minimum(pos, len(grid) - 1)] == test.dates)
        values = np.full((test.n_samples, len(grid), test.n_bands), np.nan, np.float32)
        mask = np.zeros((test.n_samples, len(grid)), bool)
        assert test.mask is not None
        values[:, pos[hit]] = test.values[:, hit]
        mask[:, pos[hit]] = test.mask[:, hit]
        log.info("test set put on the training date grid (%d steps; %d of its %d dates "
                 "match)", len(grid), int(hit.sum()), len(test.dates))
        test = test.replace(values=values, dates=grid, mask=mask)
    return train, test
