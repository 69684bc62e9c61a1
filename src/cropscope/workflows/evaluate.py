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
from cropscope.errors import DataError
from cropscope.evaluation.crossval import EvaluationResult, cross_validate, evaluate_split
from cropscope.evaluation.report import write_report
from cropscope.hyperspectral.datasets import load_scene_input
from cropscope.hyperspectral.scene import evaluate_scene
from cropscope.models.base import Classifier
from cropscope.models.registry import create_model, get_model_class, hierarchical_model
from cropscope.taxonomy.tree import Taxonomy

__all__ = ["evaluate_model"]

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
                               "bands": bands}
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
        log.info("fixed split: train %s / test %s", train, test)
        result = evaluate_split(factory, train, test, **level_args)
    else:
        ts = load_samples(dataset, table, split=split, **columns)
        if levels:
            ts = attach_taxonomy(ts, taxonomy, dataset)
        log.info("%d-fold CV of %s on %s: %s%s", cv, model, sample_source(dataset, table, split),
                 ts, f", leave-{group}-out" if group else "")
        result = cross_validate(factory, ts, cv=cv, seed=seed, group=group, progress=progress,
                                **level_args)
    result.config.update({"model": model, "model_config": config})
    if out_dir is not None:
        write_report(result, out_dir)
        log.info("report written to %s", out_dir)
    return result
