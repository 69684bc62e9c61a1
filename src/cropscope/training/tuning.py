"""Hyperparameter tuning with Optuna, scored by nested cross-validation, into a run.

A search tuned on some samples scores those samples too well: the best of many trials is
partly the luckiest. :func:`tune_model` therefore reports two figures and keeps them apart:

- **nested CV (the honest figure).** The labelled samples are split into ``cv`` outer folds
  (stratified; grouped by ``group`` when given, so a parcel or region is never on both
  sides). For each outer fold a study of ``trials`` trials searches the space on the *outer
  training part only*, scoring each trial by ``inner_cv``-fold cross-validation inside it;
  the best configuration is then trained on the whole outer training part and scores the
  outer test fold, which no trial has seen. The outer scores (mean ± sd over folds, and
  the pooled out-of-fold metrics) estimate what tuning-then-training achieves on new data.
- **inner best (optimistic).** The best inner-CV score of each study: the number the search
  maximised, biased upwards by the selection; reported separately and labelled so.

A final study on *all* labelled samples chooses the configuration that is trained on all of
them and written as a normal classifier run (``model.json``, weights, ``run.json``,
``manifest.json``; loadable by ``cropscope predict``) with the nested-CV report (``metrics.json``,
CSVs, plots, ``predictions.csv`` of the outer folds) and ``tuning.json`` (both figures, every
fold's best configuration, the search space and the fingerprint).

**Search spaces are data.** :data:`SEARCH_SPACES` holds one dict per registered model:
option name -> ``{"type": "float"|"int", "low", "high", "log"?, "step"?}`` or
``{"type": "categorical", "choices": [JSON values]}``. A key ``"a.b"`` sets option ``b``
inside the mapping option ``a`` (e.g. ``base_config.learning_rate`` of the ``resampled``
wrapper, whose space is its base model's, prefixed, plus the ``resample`` method). A user
space (``space=``, ``--space FILE.json``) replaces the built-in one; options fixed in
``config`` (``--set``) are left out of the search. Nothing in a space names code.

**Resumable.** The studies (``outer-1`` .. ``outer-K`` and ``final``) live in one SQLite file,
``OUT/.study.db`` (hidden: it keeps changing while a run in ``OUT`` stays verified by its
manifest; it is carried over when the run is rewritten). Calling :func:`tune_model` again
with the same settings continues: finished trials are kept (never rerun), a trial cut short
by a kill is marked failed and redone, each study runs until it has ``trials`` finished
trials (so a larger ``trials`` extends a finished search), and outer-fold predictions already
made for a study's best configuration are reused. Every study records a fingerprint of the
data (sha256 of values, labels, classes, bands, dates, groups), the model, the fixed options,
the space and the CV settings; a different one is refused (``resume=False`` / ``--no-resume``
starts over, or use another ``out``). One process at a time: a lock file in
``.OUT.checkpoint`` beside the run refuses a second one.

**Determinism.** The sampler is Optuna's TPE seeded with ``seed`` plus the number of trials
the study already holds (a resumed study does not redraw the first trials' values); fold
splits are seeded with ``seed``; models get ``seed`` unless ``config`` sets one. Trials are
pruned (Optuna's median rule: after 5 trials, a trial whose running inner-CV mean is below the
median of the others at the same fold stops) unless ``prune=False``. Model fits run on
cropscope's thread count (``--threads``), one trial at a time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.data.splits import make_folds
from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import CropscopeError, EvaluationError, ModelError
from cropscope.evaluation.crossval import EvaluationResult
from cropscope.evaluation.metrics import SUMMARY_KEYS, classification_metrics
from cropscope.models.base import Classifier
from cropscope.models.registry import create_model, get_model_class
from cropscope.runs import STUDY_FILE, check_replaceable, checkpoint_folder
from cropscope.training.rundir import training_record

if TYPE_CHECKING:
    import optuna

__all__ = ["METRICS", "SEARCH_SPACES", "STUDY_FILE", "TuneResult", "search_space",
           "tune_model"]

#: the run's tuning report (the Optuna studies are in ``STUDY_FILE``, from cropscope.runs)
REPORT_FILE = "tuning.json"
#: scores a study can maximise
METRICS = ("overall_accuracy", "macro_f1")
#: bump when the meaning of stored studies changes (part of the fingerprint)
_FORMAT = 1
#: prefix of the final model's resume folder in the work folder (one per configuration)
_MODEL_DIR = "model-"

_FLOAT, _INT, _CAT = "float", "int", "categorical"

#: built-in search spaces, one per registered model (see the module doc for the format)
SEARCH_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "lightgbm": {
        "n_estimators": {"type": _INT, "low": 100, "high": 800, "step": 50},
        "learning_rate": {"type": _FLOAT, "low": 0.02, "high": 0.3, "log": True},
        "num_leaves": {"type": _INT, "low": 8, "high": 128, "log": True},
        "min_child_samples": {"type": _INT, "low": 3, "high": 60, "log": True},
        "subsample": {"type": _FLOAT, "low": 0.5, "high": 1.0},
        "colsample_bytree": {"type": _FLOAT, "low": 0.2, "high": 1.0},
        "features": {"type": _CAT, "choices": [["values", "diff", "stats"],
                                               ["values", "diff", "stats", "indices"],
                                               ["values", "diff", "stats", "harmonics"]]},
    },
    "rf": {
        "n_estimators": {"type": _INT, "low": 100, "high": 1000, "step": 100},
        "max_features": {"type": _CAT, "choices": ["sqrt", "log2", 0.2, 0.33, 0.5]},
        "min_samples_leaf": {"type": _INT, "low": 1, "high": 8},
    },
    "extratrees": {
        "n_estimators": {"type": _INT, "low": 100, "high": 1000, "step": 100},
        "max_features": {"type": _CAT, "choices": ["sqrt", 0.1, 0.2, 0.33, 0.5]},
        "min_samples_leaf": {"type": _INT, "low": 1, "high": 8},
        "criterion": {"type": _CAT, "choices": ["gini", "entropy"]},
    },
    "quant": {
        "n_estimators": {"type": _INT, "low": 100, "high": 600, "step": 100},
        "max_features": {"type": _CAT, "choices": [0.05, 0.1, 0.2, 0.33]},
        "features": {"type": _CAT, "choices": [["quantiles"], ["quantiles", "values"]]},
    },
    "logreg": {
        "C": {"type": _FLOAT, "low": 1e-3, "high": 100.0, "log": True},
        "class_weight": {"type": _CAT, "choices": ["balanced", None]},
    },
    "lda": {
        "shrinkage": {"type": _CAT, "choices": ["auto", 0.01, 0.1, 0.3, 0.6]},
        "priors": {"type": _CAT, "choices": ["empirical", "balanced"]},
        "features": {"type": _CAT, "choices": [["values"], ["snv", "values"]]},
    },
    "svm": {
        "C": {"type": _FLOAT, "low": 0.1, "high": 1000.0, "log": True},
        "features": {"type": _CAT, "choices": [["values"], ["snv", "values"]]},
    },
    "tempcnn": {
        "lr": {"type": _FLOAT, "low": 3e-4, "high": 1e-2, "log": True},
        "weight_decay": {"type": _FLOAT, "low": 1e-7, "high": 1e-3, "log": True},
        "dropout": {"type": _FLOAT, "low": 0.0, "high": 0.5},
        "filters": {"type": _CAT, "choices": [32, 64, 128]},
        "kernel_size": {"type": _CAT, "choices": [3, 5, 7]},
        "hidden": {"type": _CAT, "choices": [128, 256, 512]},
    },
    "ltae": {
        "lr": {"type": _FLOAT, "low": 3e-4, "high": 1e-2, "log": True},
        "weight_decay": {"type": _FLOAT, "low": 1e-6, "high": 1e-2, "log": True},
        "dropout": {"type": _FLOAT, "low": 0.0, "high": 0.5},
        "d_model": {"type": _CAT, "choices": [64, 128, 256]},
    },
    "lstm-fcn": {
        "lr": {"type": _FLOAT, "low": 3e-4, "high": 1e-2, "log": True},
        "weight_decay": {"type": _FLOAT, "low": 1e-7, "high": 1e-3, "log": True},
        "hidden": {"type": _CAT, "choices": [8, 32, 64]},
        "lstm_dropout": {"type": _FLOAT, "low": 0.2, "high": 0.8},
    },
    "inceptiontime": {
        "lr": {"type": _FLOAT, "low": 3e-4, "high": 1e-2, "log": True},
        "depth": {"type": _INT, "low": 3, "high": 9, "step": 3},
        "filters": {"type": _CAT, "choices": [16, 32, 64]},
    },
    "minirocket": {
        "variant": {"type": _CAT, "choices": ["minirocket", "multirocket"]},
        "head": {"type": _CAT, "choices": ["ridge", "logistic"]},
    },
    "stacking": {
        "meta_C": {"type": _FLOAT, "low": 1e-2, "high": 100.0, "log": True},
    },
}
_RESAMPLE_CHOICES = ["none", "over", "under", "smote"]


def _optuna() -> Any:
    """The ``optuna`` module, or a :class:`ModelError` naming the extra that installs it."""
    try:
        import optuna
    except ImportError:
        raise ModelError("tuning needs the optional dependency optuna; install it with: "
                         "pip install 'cropscope[tune]'") from None
    return optuna


# ---------------------------------------------------------------------------- spaces
def _check_spec(model: str, key: str, spec: Any) -> dict[str, Any]:
    where = f"search space of {model!r}, option {key!r}"
    if not isinstance(spec, dict):
        raise ModelError(f"{where}: expected an object with a 'type', got {spec!r}")
    kind = spec.get("type")
    allowed = {_FLOAT: {"type", "low", "high", "log", "step"},
               _INT: {"type", "low", "high", "log", "step"},
               _CAT: {"type", "choices"}}
    if kind not in allowed:
        raise ModelError(f"{where}: 'type' must be float, int or categorical, got {kind!r}")
    unknown = sorted(set(spec) - allowed[kind])
    if unknown:
        raise ModelError(f"{where}: unknown field(s) {unknown}")
    if kind == _CAT:
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ModelError(f"{where}: 'choices' must be a non-empty list")
        try:
            texts = [json.dumps(c, sort_keys=True, allow_nan=False) for c in choices]
        except (TypeError, ValueError):
            raise ModelError(f"{where}: choices must be JSON values") from None
        if len(set(texts)) != len(texts):
            raise ModelError(f"{where}: repeated choices")
        return {"type": kind, "choices": list(choices)}
    low, high = spec.get("low"), spec.get("high")
    number = (int,) if kind == _INT else (int, float)
    if any(isinstance(v, bool) or not isinstance(v, number) or not np.isfinite(v)
           for v in (low, high)):
        raise ModelError(f"{where}: 'low' and 'high' must be finite {kind} numbers")
    assert isinstance(low, int | float) and isinstance(high, int | float)
    if not low < high:
        raise ModelError(f"{where}: 'low' must be below 'high', got {low} and {high}")
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise ModelError(f"{where}: 'log' must be true or false")
    if log and (low <= 0 or step is not None):
        raise ModelError(f"{where}: a log scale needs low > 0 and no step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, number)
                             or not 0 < step <= high - low):
        raise ModelError(f"{where}: 'step' must be a positive {kind} no larger than the range")
    out: dict[str, Any] = {"type": kind, "low": low, "high": high, "log": log}
    if step is not None:
        out["step"] = step
    return out


def _default_space(model: str, config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    if model == "resampled":
        base = str(config.get("base", get_model_class("resampled").default_config()["base"]))
        inner = _default_space(base, config.get("base_config") or {})
        return {"resample": {"type": _CAT, "choices": list(_RESAMPLE_CHOICES)},
                **{f"base_config.{k}": v for k, v in inner.items() if "." not in k}}
    if model not in SEARCH_SPACES:
        raise ModelError(f"no built-in search space for model {model!r} (built-in: "
                         f"{', '.join(sorted(SEARCH_SPACES))}, resampled); give one as a JSON "
                         "object with --space FILE")
    return {k: dict(v) for k, v in SEARCH_SPACES[model].items()}


def _is_fixed(key: str, config: Mapping[str, Any]) -> bool:
    head, _, rest = key.partition(".")
    if not rest:
        return head in config
    inner = config.get(head)
    return isinstance(inner, Mapping) and rest in inner


def search_space(model: str, config: Mapping[str, Any] | None = None,
                 space: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The space searched for ``model``: ``space`` if given, else the built-in one, without
    the options fixed in ``config``; every entry checked (a bad one is a
    :class:`~cropscope.errors.ModelError` naming it)."""
    config = dict(config or {})
    raw = dict(space) if space is not None else _default_space(model, config)
    if not isinstance(raw, dict) or not raw:
        raise ModelError(f"the search space of {model!r} must be a non-empty object")
    defaults = get_model_class(model).default_config()
    out: dict[str, dict[str, Any]] = {}
    for key, spec in raw.items():
        head, _, rest = str(key).partition(".")
        if head not in defaults or "." in rest:
            raise ModelError(f"search space of {model!r}: {key!r} is not an option of the "
                             f"model (options: {', '.join(sorted(defaults))})")
        if rest and not isinstance(defaults[head], dict):
            raise ModelError(f"search space of {model!r}: {head!r} is not a mapping option, "
                             f"so {key!r} cannot set inside it")
        if head in ("seed", "n_jobs"):
            raise ModelError(f"search space of {model!r}: {key!r} is not tuned")
        if _is_fixed(key, config):
            continue
        out[key] = _check_spec(model, key, spec)
    if not out:
        raise ModelError(f"nothing to tune for {model!r}: every option of the space is fixed "
                         "by --set/--config")
    _check_values(model, config, out)
    return out


def _check_values(model: str, config: Mapping[str, Any],
                  space: Mapping[str, dict[str, Any]]) -> None:
    """Create the model with each end of every range and each choice (over ``config``), so
    that a value the model refuses (a wrong type, an option unknown inside ``base_config``)
    is one error now rather than a failure of every trial."""
    for key, spec in space.items():
        values = spec["choices"] if spec["type"] == _CAT else [spec["low"], spec["high"]]
        for value in values:
            try:
                create_model(model, **_apply(config, {key: value}))
            except ModelError as exc:
                raise ModelError(f"search space of {model!r}, option {key!r}: the value "
                                 f"{value!r} is refused: {exc}") from None


def _suggest(trial: optuna.Trial, space: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """One value per option of ``space`` (categorical choices travel as JSON text)."""
    out: dict[str, Any] = {}
    for key, spec in space.items():
        if spec["type"] == _CAT:
            texts = [json.dumps(c, sort_keys=True) for c in spec["choices"]]
            out[key] = json.loads(trial.suggest_categorical(key, texts))
        elif spec["type"] == _INT:
            out[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]),
                                         step=int(spec.get("step", 1)), log=spec["log"])
        else:
            out[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]),
                                           step=spec.get("step"), log=spec["log"])
    return out


def _decode(params: Mapping[str, Any], space: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """A stored trial's parameters as option values (categorical JSON text decoded)."""
    return {k: json.loads(v) if space[k]["type"] == _CAT else v for k, v in params.items()}


def _apply(config: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with ``params`` set (``"a.b"`` inside the mapping option ``a``)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for key, value in params.items():
        head, _, rest = key.partition(".")
        if rest:
            inner = out.get(head)
            out[head] = {**(inner if isinstance(inner, dict) else {}), rest: value}
        else:
            out[head] = value
    return out


# ---------------------------------------------------------------------------- fingerprint
def _data_digest(ts: TimeSeriesSet, group: str | None) -> str:
    """sha256 of what a study's scores depend on in the data."""
    from cropscope.io import digest

    assert ts.labels is not None
    return digest(ts.values, ts.labels, ts.dates, [ts.classes, ts.bands],
                  None if group is None else [str(g) for g in ts.group_values(group)])


def _jsonify(data: Any) -> Any:
    from cropscope.io import to_jsonable

    return json.loads(json.dumps(to_jsonable(data), sort_keys=True))


# ---------------------------------------------------------------------------- result
@dataclass
class TuneResult:
    """What :func:`tune_model` produced.

    ``report`` is ``tuning.json``; ``evaluation`` the nested cross-validation (outer folds'
    predictions pooled, per-fold metrics); ``folds`` the outer ``(train, test)`` positions
    into ``labelled`` (the labelled samples tuned on)."""

    run_dir: Path
    model: Classifier
    report: dict[str, Any]
    evaluation: EvaluationResult
    folds: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    labelled: TimeSeriesSet | None = None

    @property
    def nested_score(self) -> float:
        """Mean outer-fold score of the tuned metric: the honest figure."""
        return float(self.report["nested"]["mean"])

    @property
    def inner_best(self) -> float:
        """Mean over outer folds of the best inner-CV score: optimistic."""
        return float(self.report["inner_best"]["mean"])


# ---------------------------------------------------------------------------- helpers
def _score(model_name: str, config: Mapping[str, Any], train: TimeSeriesSet,
           test: TimeSeriesSet, metric: str) -> tuple[float, np.ndarray]:
    """Fit on ``train``, predict ``test``: the ``metric`` and the predicted codes."""
    model = create_model(model_name, **config).fit(train)
    pred = np.asarray(model.predict(test), dtype=np.int64)
    assert test.labels is not None
    m = classification_metrics(test.labels, pred, test.classes, labels_present_only=True)
    return float(m[metric]), pred


def _interrupted(study: optuna.Study) -> set[int]:
    """Numbers of the trials a kill or an interrupt cut short (redone, not counted)."""
    return {int(n) for n in study.user_attrs.get("interrupted", [])}


def _finished(study: optuna.Study) -> int:
    """Trials that count towards the study's total: all but running and interrupted ones."""
    from optuna.trial import TrialState

    cut = _interrupted(study)
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state != TrialState.RUNNING and t.number not in cut
               and not t.user_attrs.get("interrupted"))


def _fail_stale(study: optuna.Study) -> None:
    """Trials left running by a killed process (one process per study: see the lock) are
    recorded as interrupted and told failed, so they are redone."""
    from optuna.trial import TrialState

    stale = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    if stale:
        study.set_user_attr("interrupted", sorted(_interrupted(study) | set(stale)))
        for number in stale:
            study.tell(number, state=TrialState.FAIL)


def _value(trial: optuna.trial.FrozenTrial) -> float:
    if trial.value is None:  # a best trial is a complete one
        raise RuntimeError(f"trial {trial.number} has no value")
    return float(trial.value)


@contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """An exclusive lock file in ``folder`` for the time of the tuning (POSIX)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tune.lock"
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ModelError(f"another 'cropscope tune' is writing {folder.parent}; wait for "
                             "it to finish or use another --out") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _mismatch(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    names = {"data": "the data", "model": "the model", "config": "the fixed options",
             "space": "the search space"}
    return ", ".join(names.get(k, k) for k in changed) or "the settings"


def _open_storage(db: Path) -> Any:
    """Optuna's SQLite storage of ``db`` (a file that is not one is one ModelError).

    Optuna's RDB storage keeps parameters, distributions and attributes as JSON text and
    numbers in SQL tables: opening a study file runs no code from it."""
    optuna = _optuna()
    from sqlalchemy.engine import URL
    from sqlalchemy.exc import SQLAlchemyError

    url = URL.create("sqlite", database=str(db.resolve())).render_as_string()
    try:
        return optuna.storages.RDBStorage(url)
    except (SQLAlchemyError, RuntimeError) as exc:  # not SQLite; another schema version
        raise ModelError(f"{db} is not a usable Optuna study file ({type(exc).__name__}); "
                         "start over with --no-resume") from None


def _check_existing(storage: Any, fingerprint: Mapping[str, Any], path: Path) -> None:
    import optuna

    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        old = summary.user_attrs.get("fingerprint")
        if old is None and summary.n_trials == 0:
            continue  # created by a process killed before it could record its fingerprint
        if old != fingerprint:
            what = _mismatch(old or {}, fingerprint)
            raise ModelError(f"cannot resume the tuning in {path.parent}: {what} changed since "
                             "its studies were started (use --no-resume to start over, or "
                             "another --out)")


# ---------------------------------------------------------------------------- tuning
def copy_studies(db: Path, folder: Path) -> None:
    """Copy the study file ``db`` into a run being written (``folder / STUDY_FILE``; hidden,
    outside the manifest: see the module doc), with SQLite's online backup."""
    import sqlite3

    src, dst = sqlite3.connect(db), sqlite3.connect(folder / STUDY_FILE)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def tuning_folders(out_dir: str | Path) -> tuple[Path, Path]:
    """The run folder of a tuning and its work folder (lock, resume state)."""
    out = Path(out_dir)
    check_replaceable(out)  # before any trial: a folder of other files is refused now
    return out, checkpoint_folder(out)


def fixed_options(model_name: str, config: Mapping[str, Any] | None, *, seed: int,
                  metric: str, trials: int, folds: Mapping[str, int]) -> dict[str, Any]:
    """Check a tuning's settings and return its fixed options (``config`` plus ``seed`` when
    the model takes one); the model is created once so that an unknown model or a bad fixed
    option fails before any trial. ``folds``: name -> fold count (each at least 2)."""
    if metric not in METRICS:
        raise EvaluationError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ModelError(f"trials must be a positive integer, got {trials!r}")
    for name, k in folds.items():
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise EvaluationError(f"{name} needs at least 2 folds, got {k!r}")
    fixed = dict(config or {})
    if "seed" not in fixed and "seed" in get_model_class(model_name).default_config():
        fixed["seed"] = seed
    create_model(model_name, **fixed)
    return fixed


@contextmanager
def study_storage(db: Path, fingerprint: Mapping[str, Any], *, resume: bool,
                  shown: Path) -> Iterator[Any]:
    """Optuna storage on the SQLite file ``db``, checked against ``fingerprint`` when
    resuming, started afresh (the file deleted) otherwise; ``shown``: the path named in
    errors. Closed on exit."""
    if not resume:
        for stale in (db, db.with_name(db.name + "-journal")):
            stale.unlink(missing_ok=True)
    storage = _open_storage(db)
    try:
        if resume:
            _check_existing(storage, fingerprint, shown)
        yield storage
    finally:
        storage.remove_session()
        storage.engine.dispose()


def _fold_score(model_name: str, part: TimeSeriesSet, train: np.ndarray, test: np.ndarray,
                metric: str, options: Mapping[str, Any]) -> float:
    """One inner fold's score of ``options`` (the subsets are made per call, not kept)."""
    return _score(model_name, options, part.subset(train), part.subset(test), metric)[0]


def run_study(study: optuna.Study, model_name: str, fixed: Mapping[str, Any],
              tuned: Mapping[str, dict[str, Any]],
              scorers: Sequence[Callable[[Mapping[str, Any]], float]], *, trials: int,
              seed: int, prune: bool, bar: Any = None) -> optuna.trial.FrozenTrial:
    """Run ``study`` until it has ``trials`` finished trials and return its best trial.

    A trial draws options from ``tuned`` (on top of ``fixed``) and scores them by the mean of
    ``scorers`` (one per inner fold: options -> score), reporting the running mean after each
    fold so that the median pruner can stop it. A :class:`~cropscope.errors.CropscopeError`
    fails the trial (its message is kept, its score is NaN); an interrupt is recorded and
    re-raised. TPE is seeded with ``seed`` plus the trials the study already holds. ``bar``
    (tqdm) advances by one per trial. Used for the nested CV of :func:`tune_model` and for scenes
    (:func:`cropscope.hyperspectral.tuning.tune_scene`)."""
    import optuna

    def objective(trial: optuna.Trial) -> float:
        options = _apply(fixed, _suggest(trial, tuned))
        scores: list[float] = []
        try:
            for j, scorer in enumerate(scorers):
                scores.append(float(scorer(options)))
                trial.report(float(np.mean(scores)), j)
                if prune and j < len(scorers) - 1 and trial.should_prune():
                    trial.set_user_attr("fold_scores", scores)
                    raise optuna.TrialPruned()
        except CropscopeError as exc:  # a failed trial, not a traceback on stderr: a NaN
            trial.set_user_attr("error", str(exc))  # score fails it with Optuna's one line
            return float("nan")
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        trial.set_user_attr("fold_scores", scores)
        return float(np.mean(scores))

    todo = trials - _finished(study)
    if todo > 0:
        n_startup = min(10, max(1, trials // 2))
        study.sampler = optuna.samplers.TPESampler(
            seed=seed + len(study.get_trials(deepcopy=False)), n_startup_trials=n_startup)
        study.pruner = optuna.pruners.MedianPruner(n_startup_trials=5) if prune \
            else optuna.pruners.NopPruner()

        def tick(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if bar is not None:
                bar.set_postfix_str(study.study_name)
                bar.update(1)

        study.optimize(objective, n_trials=todo, catch=(CropscopeError,),
                       callbacks=[tick], gc_after_trial=False)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        errors = [t.user_attrs.get("error") for t in study.get_trials(deepcopy=False)]
        first = next((e for e in errors if e), "every trial was pruned or failed")
        raise ModelError(f"tuning {model_name!r}: no trial of study {study.study_name} "
                         f"completed ({first})")
    return study.best_trial


def tune_model(
    ts: TimeSeriesSet,
    model_name: str,
    out_dir: str | Path,
    *,
    config: Mapping[str, Any] | None = None,
    space: Mapping[str, Any] | None = None,
    trials: int = 20,
    cv: int = 5,
    inner_cv: int = 3,
    seed: int = 0,
    group: str | None = None,
    metric: str = "overall_accuracy",
    resume: bool = True,
    prune: bool = True,
    source: str = "",
    progress: bool = False,
) -> TuneResult:
    """Tune ``model_name`` on the labelled samples of ``ts`` with nested CV and write the best
    configuration, trained on every labelled sample, as a run at ``out_dir`` (module doc).

    ``config``: fixed options (left out of the search); ``space``: a search space replacing
    the built-in one; ``trials`` per study (``cv`` outer studies and a final one);
    ``inner_cv`` folds score a trial; ``group`` groups both fold levels; ``metric``
    (:data:`METRICS`) is maximised; ``resume=False`` discards the stored studies."""
    optuna = _optuna()
    started = time.perf_counter()
    fixed = fixed_options(model_name, config, seed=seed, metric=metric, trials=trials,
                          folds={"cv": cv, "inner cv": inner_cv})
    tuned = search_space(model_name, fixed, space)
    if ts.labels is None:
        raise EvaluationError("tuning needs labelled samples")
    lab = ts if (ts.labels >= 0).all() else ts.subset(ts.labels >= 0)
    assert lab.labels is not None
    outer = make_folds(lab, cv=cv, seed=seed, group=group)
    fingerprint = _jsonify({
        "format": _FORMAT, "data": _data_digest(lab, group), "model": model_name,
        "config": fixed, "space": tuned, "cv": cv, "inner_cv": inner_cv, "seed": seed,
        "group": group, "metric": metric, "prune": prune,
    })
    out, workdir = tuning_folders(out_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with _lock(workdir):
        out.mkdir(parents=True, exist_ok=True)
        db = out / STUDY_FILE
        if not resume:
            for stale_dir in workdir.glob(f"{_MODEL_DIR}*"):  # the final model's resume state
                shutil.rmtree(stale_dir, ignore_errors=True)
        with study_storage(db, fingerprint, resume=resume, shown=db) as storage:
            result = _tune(lab, model_name, out, workdir, storage, fixed, tuned, outer,
                           fingerprint, trials=trials, inner_cv=inner_cv, seed=seed,
                           group=group, metric=metric, prune=prune, source=source,
                           progress=progress, started=started)
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def _tune(lab: TimeSeriesSet, model_name: str, out: Path, workdir: Path, storage: Any,
          fixed: dict[str, Any], tuned: dict[str, dict[str, Any]],
          outer: list[tuple[np.ndarray, np.ndarray]], fingerprint: dict[str, Any], *,
          trials: int, inner_cv: int, seed: int, group: str | None, metric: str,
          prune: bool, source: str, progress: bool, started: float) -> TuneResult:
    import optuna
    from tqdm import tqdm

    assert lab.labels is not None
    k = len(outer)
    names = [f"outer-{i + 1}" for i in range(k)] + ["final"]
    studies = []
    for name in names:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                    load_if_exists=True)
        if "fingerprint" not in study.user_attrs:
            study.set_user_attr("fingerprint", fingerprint)
        _fail_stale(study)
        studies.append(study)
    done = sum(min(_finished(s), trials) for s in studies)
    bar = tqdm(total=len(studies) * trials, initial=done, desc="tuning", unit="trial",
               file=sys.stderr, disable=not progress)

    def run(study: optuna.Study, part: TimeSeriesSet) -> optuna.trial.FrozenTrial:
        folds = make_folds(part, cv=inner_cv, seed=seed, group=group)
        scorers = [functools.partial(_fold_score, model_name, part, tr, te, metric)
                   for tr, te in folds]
        return run_study(study, model_name, fixed, tuned, scorers, trials=trials, seed=seed,
                         prune=prune, bar=bar)

    try:
        fold_rows: list[dict[str, Any]] = []
        pred_names = np.empty(lab.n_samples, dtype=object)
        fold_of = np.full(lab.n_samples, -1, dtype=np.int64)
        for i, (tr, te) in enumerate(outer):
            part, test = lab.subset(tr), lab.subset(te)
            best = run(studies[i], part)
            params = _decode(best.params, tuned)
            cached = studies[i].user_attrs.get("outer")
            if isinstance(cached, dict) and cached.get("params") == _jsonify(params) \
                    and len(cached.get("pred", [])) == te.size:
                pred = np.asarray(cached["pred"], dtype=np.int64)
                score = float(cached["score"])
            else:
                score, pred = _score(model_name, _apply(fixed, params), part, test, metric)
                studies[i].set_user_attr("outer", {"params": _jsonify(params), "score": score,
                                                   "pred": pred.tolist()})
            pred_names[te] = np.asarray(lab.classes, dtype=object)[pred]
            fold_of[te] = i
            fold_rows.append({"fold": i + 1, "n_train": int(tr.size), "n_test": int(te.size),
                              "score": score, "inner_best": _value(best),
                              "best_trial": best.number, "best_params": params,
                              "n_trials": _finished(studies[i])})
        final = run(studies[-1], lab)
    finally:
        bar.close()
    final_params = _decode(final.params, tuned)
    evaluation = _nested_result(lab, pred_names, fold_of, outer, fold_rows, model_name, fixed,
                                seed, group)
    scores = np.array([r["score"] for r in fold_rows])
    inner = np.array([r["inner_best"] for r in fold_rows])
    best_config = _apply(fixed, final_params)
    report = _jsonify({
        "model": model_name, "metric": metric, "trials": trials, "cv": len(outer),
        "inner_cv": inner_cv, "seed": seed, "group": group, "prune": prune, "source": source,
        "nested": {
            "what": f"{metric} of the tuned model on outer test folds that no trial saw",
            "mean": float(scores.mean()), "std": float(scores.std()),
            "pooled": {key: evaluation.metrics[key] for key in SUMMARY_KEYS},
            "folds": fold_rows,
        },
        "inner_best": {
            "what": "best inner-CV score of each outer study: the figure the search "
                    "maximised, optimistic (not an estimate of accuracy on new data)",
            "mean": float(inner.mean()), "folds": inner.tolist(),
        },
        "final": {"best_params": final_params, "config": best_config,
                  "inner_best": _value(final), "best_trial": final.number,
                  "n_trials": _finished(studies[-1])},
        "space": tuned, "fingerprint": fingerprint,
    })
    model = _write_run(lab, model_name, best_config, out, workdir, storage, evaluation, report,
                       seed, source, progress, started)
    report["run_dir"] = str(out)
    report["duration_s"] = round(time.perf_counter() - started, 2)
    return TuneResult(run_dir=out, model=model, report=report, evaluation=evaluation,
                      folds=outer, labelled=lab)


def _nested_result(lab: TimeSeriesSet, pred_names: np.ndarray, fold_of: np.ndarray,
                   outer: list[tuple[np.ndarray, np.ndarray]], rows: list[dict[str, Any]],
                   model_name: str, fixed: dict[str, Any], seed: int, group: str | None
                   ) -> EvaluationResult:
    """The outer folds' predictions as one cross-validation result (pooled and per fold)."""
    assert lab.labels is not None and lab.ids is not None
    lookup = {c: i for i, c in enumerate(lab.classes)}
    y_true = lab.labels.copy()
    y_pred = np.array([lookup[str(n)] for n in pred_names], dtype=np.int64)
    fold_metrics = []
    for (_, te), row in zip(outer, rows, strict=True):
        m = classification_metrics(y_true[te], y_pred[te], lab.classes, labels_present_only=True)
        fold_metrics.append({"fold": row["fold"], "n_train": row["n_train"],
                             "n_test": row["n_test"], **m})
    summary = {key: {"mean": float(np.mean([m[key] for m in fold_metrics])),
                     "std": float(np.std([m[key] for m in fold_metrics]))}
               for key in SUMMARY_KEYS}
    return EvaluationResult(
        metrics=classification_metrics(y_true, y_pred, lab.classes, labels_present_only=True),
        y_true=y_true, y_pred=y_pred, classes=list(lab.classes), fold_metrics=fold_metrics,
        summary=summary,
        config={"mode": "nested cross-validation", "cv": len(outer), "seed": seed,
                "group": group, "model": model_name, "model_config": _jsonify(fixed),
                "tuned": "per outer fold (see tuning.json)"},
        ids=lab.ids.copy(), fold=fold_of)


def _write_run(lab: TimeSeriesSet, model_name: str, config: dict[str, Any], out: Path,
               workdir: Path, storage: Any, evaluation: EvaluationResult,
               report: dict[str, Any], seed: int, source: str, progress: bool,
               started: float) -> Classifier:
    """Train ``config`` on every labelled sample and write it as a run with the reports."""

    from cropscope.evaluation.report import write_report
    from cropscope.io import write_json
    from cropscope.models.runs import save_classifier_run
    from cropscope.runs import first_process

    model = create_model(model_name, **config)
    # the resume state of a final training cut short is kept per configuration: a longer
    # search may choose another one, whose training must not continue from it
    key = hashlib.sha256(json.dumps(_jsonify(config), sort_keys=True).encode()).hexdigest()
    resume_dir = workdir / f"{_MODEL_DIR}{key[:16]}"
    for stale in workdir.glob(f"{_MODEL_DIR}*"):
        if stale != resume_dir:
            shutil.rmtree(stale, ignore_errors=True)
    model.fit(lab, progress=progress, checkpoint_dir=resume_dir, resume=True)
    record = training_record({
        "source": source, "n_train": lab.n_samples, "n_holdout": 0, "holdout": 0.0,
        "seed": seed, "class_counts": lab.class_counts(),
        "tuning": {"metric": report["metric"], "trials": report["trials"],
                   "nested_mean": report["nested"]["mean"],
                   "nested_std": report["nested"]["std"],
                   "inner_best_mean": report["inner_best"]["mean"]},
    }, time.perf_counter() - started)
    db = out / STUDY_FILE
    storage.remove_session()
    storage.engine.dispose()

    def write_extra(folder: Path) -> None:
        write_report(evaluation, folder)
        write_json(folder / REPORT_FILE, report)
        copy_studies(db, folder)

    if first_process():
        save_classifier_run(model, out, training=record, metrics=evaluation.to_dict(),
                            data=source, write_extra=write_extra)
    return model
