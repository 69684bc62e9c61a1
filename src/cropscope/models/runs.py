"""Models to and from run directories (the format of :mod:`cropscope.runs`).

:func:`save_classifier_run` writes any fitted :class:`~cropscope.models.base.Classifier` as a
complete run (staged in a temporary folder, renamed into place with its manifest), and
:func:`load_run_model` opens *any* run directory — classifier, segmentation (AgriFM),
H2Crop — and returns the model it holds, built only from registered names:

- ``classifier`` runs → the registered :class:`Classifier` (``model.json`` + safe weights);
- ``segmentation`` / ``h2crop`` runs → a :class:`~cropscope.models.segmentation_map.
  SegmentationRunModel` (the registered network with the run's weights), which maps cubes;
- ``pretrained-encoder`` runs are loaded into a network with
  :func:`cropscope.training.pretraining.load_pretrained`, not mapped.

A bare model folder (``Classifier.save``: ``model.json`` and weights, no ``run.json`` and
manifest) is refused: nothing tells a complete one from a half-written or damaged one. The
weights of a verified run that still cannot be read (a file that was valid when the
manifest was written but is not what its model expects) are one :class:`ModelError`.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cropscope.errors import ModelError
from cropscope.io import to_jsonable
from cropscope.models.base import MODEL_FILE, Classifier
from cropscope.runs import (
    MANIFEST_FILE,
    RUN_FILE,
    RunDir,
    RunSpec,
    TimeGrid,
    file_sha256,
    finish_run,
    open_run,
    staged_run,
)

__all__ = [
    "classifier_spec",
    "load_classifier_run",
    "load_run_model",
    "package_versions",
    "save_classifier_run",
]


def package_versions() -> dict[str, str]:
    """Python, platform and the versions of the packages a run depends on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("cropscope", "numpy", "scikit-learn", "torch", "lightning", "lightgbm"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def classifier_spec(model: Classifier, *, training: dict[str, Any] | None = None,
                    metrics: dict[str, Any] | None = None, data: str = "") -> RunSpec:
    """The ``run.json`` of a fitted classifier (bands, time grid, classes from its card)."""
    card = model._require_card()
    grid = TimeGrid.from_dict(card.time_grid) if card.time_grid else (
        TimeGrid(kind="steps", n_times=card.n_times) if card.n_times else TimeGrid.any())
    norm = None
    if card.norm_mean is not None and card.norm_std is not None:
        norm = {"mean": {"input": list(card.norm_mean)}, "std": {"input": list(card.norm_std)}}
    wavelengths = card.extra.get("wavelengths")
    return RunSpec(
        kind="classifier",
        model={"name": model.name, "config": to_jsonable(model.config)},
        classes=list(card.classes), taxonomy=card.taxonomy,
        sources={"input": {"bands": list(card.bands),
                           "wavelengths": list(wavelengths) if wavelengths else None}},
        time_grid=grid, normalisation=norm, training=to_jsonable(training or {}),
        metrics=None if metrics is None else to_jsonable(metrics), versions=package_versions(),
        data=data, extra={"input_layout": card.input_layout,
                          "input_kind": getattr(model, "input_kind", "pixels")})


def save_classifier_run(
    model: Classifier, out_dir: str | Path, *, training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None, data: str = "",
    write_extra: Callable[[Path], None] | None = None,
) -> RunDir:
    """Write ``model`` as a complete run at ``out_dir`` (replacing a previous one only on
    success). ``write_extra(folder)`` adds files (e.g. an evaluation report) before the
    manifest is written."""
    with staged_run(out_dir) as stage:
        model.save(stage)
        if write_extra is not None:
            write_extra(stage)
        finish_run(stage, classifier_spec(model, training=training, metrics=metrics,
                                          data=data))
    run = open_run(out_dir, verify=False)
    model.run_digest = file_sha256(run.path / MANIFEST_FILE)  # the model is now this run
    return run


def load_classifier_run(run_dir: str | Path) -> Classifier:
    """The classifier of a run directory (verified), or of a bare model directory."""
    model = load_run_model(run_dir)
    if not isinstance(model, Classifier):
        raise ModelError(f"{run_dir} holds a {type(model).__name__}, not a classifier of "
                         "pixel series or patches")
    return model


def load_run_model(run_dir: str | Path) -> Any:
    """The model of any run directory (see the module docstring)."""
    root = Path(run_dir)
    if root.is_dir() and not (root / RUN_FILE).is_file() and (root / MODEL_FILE).is_file():
        # a bare model folder (Classifier.save, or a run of an early version): nothing says
        # it is complete or undamaged, so it is not loaded (a truncated LightGBM file crashes
        # the process); save_classifier_run writes it as a run
        raise ModelError(
            f"{root} holds a {MODEL_FILE} but is not a complete run (no {RUN_FILE} and "
            f"{MANIFEST_FILE}); train it again, or write the model with "
            "cropscope.models.save_classifier_run")
    run = open_run(root)  # not found, not a run, incomplete or damaged: one ModelError
    digest = file_sha256(root / MANIFEST_FILE)
    if run.spec.kind == "classifier":
        model = _load_classifier(root)
        if model.name != run.spec.name:
            raise ModelError(f"{root}: run.json names model {run.spec.name!r} but model.json "
                             f"holds {model.name!r}")
        model.run_digest = digest
        return model
    if run.spec.kind in ("segmentation", "h2crop"):
        from cropscope.models.segmentation_map import SegmentationRunModel

        seg = SegmentationRunModel.from_run(run)
        seg.run_digest = digest
        return seg
    raise ModelError(f"{root} is a {run.spec.kind} run: it cannot be used as a model here")


def _load_classifier(root: Path) -> Classifier:
    """:meth:`Classifier.load` of a verified run, whatever a weights reader raises on a file
    it cannot parse turned into one :class:`ModelError` naming the run."""
    from cropscope.io import ARRAY_READ_ERRORS

    unreadable: tuple[type[BaseException], ...] = (*ARRAY_READ_ERRORS, IndexError, TypeError,
                                                   RuntimeError)
    try:
        return Classifier.load(root)
    except ModelError:
        raise
    except unreadable as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{root}: the model's files cannot be read ({type(exc).__name__}: "
                         f"{first})") from None
    except Exception as exc:  # readers' own error types (safetensors, LightGBM)
        if type(exc).__module__.split(".")[0] in ("safetensors", "lightgbm", "skops"):
            raise ModelError(f"{root}: the model's files cannot be read ({exc})") from None
        raise
