"""Train a registered model into a run directory from any input the command line takes:
a registered dataset, a long table or a hyperspectral scene (:func:`train_model`, what
``cropscope train`` does)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cropscope.data.samples import attach_taxonomy, load_samples, sample_source
from cropscope.hyperspectral.datasets import load_scene_input
from cropscope.hyperspectral.scene import train_scene
from cropscope.models.registry import get_model_class, hierarchical_model
from cropscope.taxonomy.tree import Taxonomy
from cropscope.training.rundir import RunResult, train_run

__all__ = ["train_model"]

log = logging.getLogger(__name__)


def train_model(
    model: str,
    out_dir: str | Path,
    *,
    dataset: str | None = None,
    split: str | None = None,
    table: str | Path | None = None,
    scene: str | Path | None = None,
    labels: str | Path | None = None,
    config: Mapping[str, Any] | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    hierarchical: bool = False,
    taxonomy: str | Path | Taxonomy | None = None,
    id_col: str = "sample_id",
    time_col: str = "date",
    label_col: str = "label",
    bands: Sequence[str] | None = None,
    progress: bool = False,
    resume: bool = True,
) -> RunResult:
    """Train ``model`` (a registered name, with options ``config``) and write a run
    directory ``out_dir`` (weights, ``run.json``, card and, with a held-out part, metrics).

    Input: a registered ``dataset`` (optionally one ``split``) or a long ``table`` (see
    :func:`~cropscope.data.load_samples` for ``id_col``/``time_col``/``label_col``/
    ``bands``): ``holdout`` of the samples is kept out for the report (0: train on all);
    or a hyperspectral scene, ``scene`` with a label raster ``labels`` (or a registered
    scene dataset): then ``split`` is spatial (``blocks:B``, ``tiles``; none: every
    labelled pixel trains). ``hierarchical`` trains on the class hierarchy ``taxonomy``
    (default: the one shipped with ``dataset``) with cascade heads for deep models and
    per-level models otherwise (see :func:`~cropscope.models.hierarchical_model`).
    ``resume``: deep models continue an interrupted training of the same data and settings
    (see :func:`~cropscope.training.train_run`).
    """
    config = dict(config or {})
    scene_input = load_scene_input(dataset, scene, labels, table)
    if scene_input is not None:  # hyperspectral scene; the split is spatial
        log.info("training %s on %s", model, scene_input)
        return train_scene(model, scene_input, out_dir, split=split, config=config, seed=seed,
                           source=dataset or str(scene), progress=progress, resume=resume)
    ts = load_samples(dataset, table, split=split, id_col=id_col, time_col=time_col,
                      label_col=label_col, bands=bands)
    source = sample_source(dataset, table, split)
    if hierarchical:
        if "seed" in get_model_class(model).default_config():
            config.setdefault("seed", seed)
        ts = attach_taxonomy(ts, taxonomy, dataset)
        model, config = hierarchical_model(model, config)
    log.info("training %s on %s: %s", model, source, ts)
    return train_run(ts, model, out_dir, config=config, holdout=holdout, seed=seed,
                     source=source, progress=progress, resume=resume)
