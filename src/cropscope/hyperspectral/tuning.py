"""Tuning a scene model by spatial cross-validation inside the training region.

A labelled scene is one image: pixels next to each other look alike, so random folds of
pixels score a model far too well, and choosing options on the test region reports the
tuned-on accuracy. :func:`tune_scene` keeps the test region out of the search entirely:

1. the scene's split (``blocks:B`` or ``tiles``, as for ``cropscope evaluate``) gives the
   training region and the test region;
2. the training region is cut into its own groups (its ``B x B`` blocks, or its tiles for
   ``tiles``), dealt into ``inner_cv`` folds (seeded);
3. every trial (Optuna TPE over the model's search space; for feature models also
   ``patch_size`` 1, 3 or 5 unless fixed) trains on the other folds, minus the training
   pixels within the neighbourhood radius of the held-out fold (the guard of the scene
   split), and scores the held-out fold; its score is the mean over folds;
4. the best configuration is trained on the training region and scored **once** on the test
   region: the figure to report. The best inner score is reported beside it and labelled
   optimistic.

The result is a normal run (``cropscope train --dataset SCENE --split ...`` with the best
configuration: model, test report, ``run.json``) plus ``tuning.json`` (both figures, the best
options, every trial's count, the space and the fingerprint). The study is kept in
``OUT/.study.db`` and resumes like :func:`cropscope.training.tuning.tune_model`'s (same
fingerprint check, same lock). ``benchmarks/select_scene_model.py`` is the exhaustive
version of steps 1-4 over a fixed grid.
"""

from __future__ import annotations

import functools
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cropscope.errors import EvaluationError, ModelError
from cropscope.hyperspectral.scene import (
    Scene,
    _input_of,
    _patch_size,
    create_scene_model,
    train_scene,
)

__all__ = ["SCENE_FEATURES", "InnerFolds", "fold_predictions", "inner_folds",
           "scene_search_space", "tune_scene"]

#: feature choices for one-step spectra (temporal differences and statistics mean nothing)
SCENE_FEATURES = [["values"], ["snv", "values"]]
#: neighbourhood sizes searched for feature models
_PATCH_SIZES = [1, 3, 5]
_STUDY = "scene"
_FORMAT = 1


def scene_search_space(model_name: str, config: Mapping[str, Any] | None = None,
                       space: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The search space for a scene: ``space`` if given, else the model's built-in space
    with feature choices for spectra (:data:`SCENE_FEATURES`) and, for feature models,
    ``patch_size`` in 1, 3, 5; options fixed in ``config`` are left out."""
    from cropscope.models._tabular import FeatureClassifier
    from cropscope.models.registry import get_model_class
    from cropscope.training.tuning import SEARCH_SPACES, search_space

    fixed = dict(config or {})
    if space is None:
        base = {k: dict(v) for k, v in SEARCH_SPACES.get(model_name, {}).items()}
        if "features" in base:
            base["features"] = {"type": "categorical", "choices": SCENE_FEATURES}
        if issubclass(get_model_class(model_name), FeatureClassifier):
            base.setdefault("patch_size", {"type": "categorical", "choices": _PATCH_SIZES})
        space = {k: v for k, v in base.items() if k not in fixed}
        if not space:
            raise ModelError(f"no built-in search space for scene model {model_name!r} (or "
                             "every option in it is fixed); give one with --space")
    return search_space(model_name, fixed, space)


@dataclass
class InnerFolds:
    """Folds of a scene split's training region: ``train`` (the region, ``[H, W]``),
    ``held`` (per fold, the whole region of its groups, unlabelled pixels included, so that
    the guard around it is the scene split's) and the groups dealt into them (``unit``,
    ``count``: those with labelled pixels)."""

    train: np.ndarray
    held: list[np.ndarray]
    unit: str
    count: int


def inner_folds(scene: Scene, split: str, *, folds: int, seed: int = 0) -> InnerFolds:
    """Deal the groups of ``split``'s training region (its tiles for ``tiles``, else its
    ``B x B`` blocks) into ``folds`` seeded folds (module doc, step 2)."""
    from cropscope.evaluation.spatial import block_ids, make_spatial_split

    sp = make_spatial_split(split, scene.labels, regions=scene.regions,
                            region_roles=scene.region_roles, seed=seed)
    train = np.asarray(sp.train, dtype=bool)
    if sp.detail.get("kind") == "blocks":
        block = int(sp.detail["block"])
        group_id, unit = block_ids(scene.labels.shape, block), f"{block} x {block} px blocks"
    else:  # predefined regions (make_spatial_split checked the scene has them)
        group_id, unit = np.asarray(scene.regions), "tiles"
    ids = np.unique(group_id[train & (scene.label_index() >= 0)])  # groups with labels
    if ids.size < folds:
        raise EvaluationError(f"the training region of split {split!r} has {ids.size} {unit}; "
                              f"the inner CV needs at least {folds} (lower --inner-cv)")
    np.random.default_rng(seed).shuffle(ids)
    held = [train & np.isin(group_id, part) for part in np.array_split(ids, folds)]
    return InnerFolds(train, held, unit, int(ids.size))


def fold_predictions(scene: Scene, model_name: str, options: Mapping[str, Any],
                     train: np.ndarray, held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train ``options`` on ``train`` minus the pixels within the model's patch radius of
    ``held`` (the scene split's guard) and predict ``held``: its labels and predicted codes."""
    from cropscope.evaluation.spatial import apply_guard

    model = create_scene_model(model_name, **options)
    size = _patch_size(model)
    fit_on = scene.samples(apply_guard(train, held, size // 2), size)
    score_on = scene.samples(held, size)
    if fit_on.n_samples == 0:
        raise EvaluationError("an inner fold leaves no training pixel after the guard")
    model.fit(_input_of(model, fit_on))
    assert score_on.labels is not None
    return score_on.labels, np.asarray(model.predict(_input_of(model, score_on)),
                                       dtype=np.int64)


def _scene_digest(scene: Scene) -> str:
    """sha256 of what the study's scores depend on in the scene."""
    from cropscope.io import digest

    return digest(scene.image, scene.labels, scene.regions,
                  [list(scene.bands), list(scene.classes)])


def _fold_score(scene: Scene, model_name: str, metric: str, train: np.ndarray,
                held: np.ndarray, options: Mapping[str, Any]) -> float:
    from cropscope.evaluation.metrics import classification_metrics

    y, pred = fold_predictions(scene, model_name, options, train, held)
    m = classification_metrics(y, pred, list(scene.classes), labels_present_only=True)
    return float(m[metric])


def tune_scene(
    scene: Scene,
    model_name: str,
    out_dir: str | Path,
    *,
    split: str | None = None,
    config: Mapping[str, Any] | None = None,
    space: Mapping[str, Any] | None = None,
    trials: int = 20,
    inner_cv: int = 5,
    seed: int = 0,
    metric: str = "overall_accuracy",
    resume: bool = True,
    prune: bool = True,
    source: str = "",
    progress: bool = False,
) -> dict[str, Any]:
    """Tune ``model_name`` on the training region of ``scene`` (module doc) and write the
    best configuration, trained on that region and scored on the test region, as a run at
    ``out_dir``. Returns the report written as ``tuning.json`` (``test`` holds the figure to
    report, ``inner_best`` the optimistic one)."""
    from tqdm import tqdm

    from cropscope.io import write_json
    from cropscope.training.tuning import (
        REPORT_FILE,
        STUDY_FILE,
        _decode,
        _fail_stale,
        _finished,
        _jsonify,
        _lock,
        _optuna,
        _value,
        copy_studies,
        fixed_options,
        run_study,
        study_storage,
        tuning_folders,
    )

    optuna = _optuna()
    started = time.perf_counter()
    fixed = fixed_options(model_name, config, seed=seed, metric=metric, trials=trials,
                          folds={"inner cv": inner_cv})
    tuned = scene_search_space(model_name, fixed, space)
    spec = split or scene.default_split()
    inner = inner_folds(scene, spec, folds=inner_cv, seed=seed)
    scorers = [functools.partial(_fold_score, scene, model_name, metric, inner.train, held)
               for held in inner.held]
    fingerprint = _jsonify({
        "format": _FORMAT, "kind": "scene", "data": _scene_digest(scene), "split": spec,
        "model": model_name, "config": fixed, "space": tuned, "inner_cv": inner_cv,
        "seed": seed, "metric": metric, "prune": prune,
    })
    out, workdir = tuning_folders(out_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with _lock(workdir):
        db = workdir / STUDY_FILE
        if resume and not db.exists() and (out / STUDY_FILE).is_file():
            shutil.copyfile(out / STUDY_FILE, db)  # a finished tuning: extend or rewrite it
        with study_storage(db, fingerprint, resume=resume, shown=out / STUDY_FILE) as storage:
            study = optuna.create_study(storage=storage, study_name=_STUDY,
                                        direction="maximize", load_if_exists=True)
            if "fingerprint" not in study.user_attrs:
                study.set_user_attr("fingerprint", fingerprint)
            _fail_stale(study)
            with tqdm(total=trials, initial=min(_finished(study), trials), desc="tuning",
                      unit="trial", file=sys.stderr, disable=not progress) as bar:
                best = run_study(study, model_name, fixed, tuned, scorers, trials=trials,
                                 seed=seed, prune=prune, bar=bar)
            params = _decode(best.params, tuned)
            n_finished = _finished(study)
        best_config = {**fixed, **params}
        report: dict[str, Any] = {
            "model": model_name, "metric": metric, "trials": trials, "inner_cv": inner_cv,
            "seed": seed, "prune": prune, "source": source, "split": spec,
            "inner_groups": {"unit": inner.unit, "count": inner.count},
            "inner_best": {
                "what": "best inner-CV score (folds of the training region): the figure the "
                        "search maximised, optimistic (not an estimate of accuracy on new "
                        "data)",
                "value": _value(best), "fold_scores": best.user_attrs.get("fold_scores"),
                "best_trial": best.number, "n_trials": n_finished,
            },
            "final": {"best_params": params, "config": best_config},
            "space": tuned, "fingerprint": fingerprint,
        }

        def write_extra(folder: Path, metrics: dict[str, Any] | None) -> None:
            m = metrics or {}
            report["test"] = {
                "what": f"{metric} of the tuned configuration, trained on the training "
                        "region, on the test region, which no trial saw: the figure to report",
                "value": m.get(metric),
                **{k: m[k] for k in ("overall_accuracy", "average_accuracy", "macro_f1",
                                     "kappa", "n_samples") if k in m},
            }
            write_json(folder / REPORT_FILE, _jsonify(report))
            copy_studies(db, folder)

        # the final training's own checkpoints (deep models) share the work folder
        train_scene(model_name, scene, out, split=spec, config=best_config, seed=seed,
                    source=source, progress=progress, write_extra=write_extra)
    shutil.rmtree(workdir, ignore_errors=True)
    report["run_dir"] = str(out)
    report["duration_s"] = round(time.perf_counter() - started, 2)
    return report
