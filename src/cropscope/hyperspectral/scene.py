"""Labelled hyperspectral scenes → samples → models → spatially disjoint evaluation.

A :class:`Scene` is an image ``[K, H, W]`` (bad bands dropped, NaN nodata) with a label
raster (0 = unlabelled) and band metadata; optionally predefined regions (tiles) with
train/validation/test roles. :func:`evaluate_scene` splits it spatially
(:mod:`cropscope.evaluation.spatial`), feeds each model what it declares
(``input_kind = "patches"``: :class:`~cropscope.data.patches.PatchSet` of the model's
``patch_size``; otherwise centre-pixel spectra as a time-series set with one time step) and
scores it on the test pixels. Every result records its split in ``config["split"]``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.data.patches import PatchSet, extract_patches
from cropscope.errors import DataError, EvaluationError

if TYPE_CHECKING:
    import xarray as xr

    from cropscope.evaluation.crossval import EvaluationResult
    from cropscope.models.base import Classifier
    from cropscope.training.rundir import RunResult

__all__ = [
    "Scene",
    "create_scene_model",
    "evaluate_scene",
    "open_scene",
    "train_scene",
]

#: split used when none is given: the scene's tiles if it has them, else this
DEFAULT_BLOCK_SPLIT = "blocks:16"


def _band_names(da: xr.DataArray, wavelengths: np.ndarray | None) -> list[str]:
    k = da.sizes["band"]
    if wavelengths is not None and np.isfinite(wavelengths).all():
        names = [f"{w:.2f}nm" for w in wavelengths]
        if len(set(names)) == k:
            return names
    return [f"band{i + 1:03d}" for i in range(k)]


@dataclass
class Scene:
    """A labelled hyperspectral scene (see the module doc).

    ``labels`` hold raster codes (``0`` = unlabelled); ``class_codes[i]`` is the code of
    ``classes[i]``. ``regions`` (``-1`` = none) index ``region_names``; ``region_roles``
    maps a region index to ``"train"``, ``"validation"`` or ``"test"``.
    """

    image: np.ndarray
    labels: np.ndarray
    bands: list[str]
    classes: list[str]
    class_codes: list[int]
    wavelengths: np.ndarray | None = None
    fwhm: np.ndarray | None = None
    name: str = ""
    regions: np.ndarray | None = None
    region_names: list[str] = field(default_factory=list)
    region_roles: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int32)
        if self.image.ndim != 3 or self.labels.shape != self.image.shape[1:]:
            raise DataError(
                f"the label raster {self.labels.shape} does not match the image grid "
                f"{self.image.shape[1:]} (image [K, H, W] {self.image.shape})"
            )
        if len(self.classes) != len(self.class_codes):
            raise DataError("one class name per class code is needed")

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape

    @classmethod
    def from_dataarrays(
        cls,
        image: xr.DataArray,
        labels: xr.DataArray,
        *,
        classes: dict[int, str] | None = None,
        drop_bad_bands: bool = True,
        name: str = "",
    ) -> Scene:
        """From a reader's ``(band, y, x)`` scene and ``(y, x)`` labels; bad bands (the
        ``bad_band`` coord, or all-NaN bands) are dropped; ``classes`` names codes."""
        if tuple(image.dims) != ("band", "y", "x"):
            raise DataError(f"scene dims must be (band, y, x), got {image.dims}")
        values = image.values.astype(np.float32)
        keep = np.ones(values.shape[0], dtype=bool)
        if drop_bad_bands:
            if "bad_band" in image.coords:
                keep &= ~image["bad_band"].values.astype(bool)
            keep &= ~np.isnan(values).all(axis=(1, 2))
        if not keep.any():
            raise DataError("every band of the scene is a bad band")
        image = image.isel(band=np.flatnonzero(keep))
        wl = image["wavelength"].values.astype(np.float64) if "wavelength" in image.coords else None
        fw = image["fwhm"].values.astype(np.float64) if "fwhm" in image.coords else None
        lab = np.asarray(labels.values, dtype=np.int32)
        codes = [int(c) for c in np.unique(lab) if c > 0]
        if not codes:
            raise DataError("the label raster has no labelled pixel (all 0)")
        names = [str((classes or {}).get(c, c)) for c in codes]
        return cls(values[keep], lab, _band_names(image, wl), names, codes, wl, fw, name)

    # ------------------------------------------------------------------ samples
    def label_index(self) -> np.ndarray:
        """Labels as indices into ``classes`` ``[H, W]`` (``-1`` = unlabelled)."""
        lut = np.full(int(self.labels.max()) + 1, -1, dtype=np.int64)
        lut[self.class_codes] = np.arange(len(self.class_codes))
        return lut[np.clip(self.labels, 0, None)]

    def samples(self, mask: np.ndarray, patch_size: int = 1) -> PatchSet:
        """Patches centred on the labelled pixels where ``mask`` is true (raster order);
        ``meta`` holds ``row``, ``col`` (and ``region`` when the scene has regions)."""
        import pandas as pd

        idx = self.label_index()
        rows, cols = np.nonzero(np.asarray(mask, dtype=bool) & (idx >= 0))
        meta = {"row": rows, "col": cols}
        if self.regions is not None:
            meta["region"] = self.regions[rows, cols]
        return PatchSet(
            values=extract_patches(self.image, rows, cols, patch_size),
            bands=list(self.bands),
            wavelengths=self.wavelengths,
            labels=idx[rows, cols],
            classes=list(self.classes),
            ids=rows * self.shape[1] + cols,
            meta=pd.DataFrame(meta),
        )

    def default_split(self) -> str:
        return "tiles" if self.region_roles else DEFAULT_BLOCK_SPLIT

    def __repr__(self) -> str:
        k, h, w = self.image.shape
        n = int((self.labels > 0).sum())
        return (f"Scene({self.name or 'unnamed'}: {k} bands x {h} x {w}, {n} labelled px, "
                f"classes={self.classes})")


def open_scene(
    image: str | Path,
    labels: str | Path,
    *,
    wavelengths: Any = None,
    classes: dict[int, str] | None = None,
    drop_bad_bands: bool = True,
) -> Scene:
    """A user's scene: any file :func:`~cropscope.hyperspectral.open_hyperspectral` reads
    (``FILE.mat:VAR`` for .mat) and a label raster or matrix (0 = unlabelled)."""
    from cropscope.hyperspectral.readers import open_hyperspectral, open_labels

    da = open_hyperspectral(image, wavelengths=wavelengths)
    lab = open_labels(labels)
    if lab.shape != da.shape[1:]:
        raise DataError(f"labels {labels} are {lab.shape[0]} x {lab.shape[1]} px but the scene "
                        f"{image} is {da.shape[1]} x {da.shape[2]} px")
    return Scene.from_dataarrays(da, lab, classes=classes, drop_bad_bands=drop_bad_bands,
                                 name=Path(str(image)).name)


def create_scene_model(name: str, **config: Any) -> Classifier:
    """A registered model with scene defaults: feature models (``rf``, ``lightgbm``) use the
    raw spectrum (``features=["values"]``) unless ``features`` is given, since temporal
    differences and statistics are meaningless for one time step."""
    from cropscope.models._tabular import FeatureClassifier
    from cropscope.models.registry import get_model_class

    cls = get_model_class(name)
    if issubclass(cls, FeatureClassifier) and "features" not in config:
        config = {**config, "features": ["values"]}
    return cls(**config)


def _input_of(model: Classifier, ps: PatchSet | None) -> Any:
    if ps is None:
        return None
    return ps if getattr(model, "input_kind", "pixels") == "patches" else ps.centre_set()


def _patch_size(model: Classifier) -> int:
    if getattr(model, "input_kind", "pixels") != "patches":
        return 1
    return int(getattr(model, "patch_size", model.config.get("patch_size", 1)))


def _split_samples(
    model: Classifier, scene: Scene, split: str | None, seed: int, margin: int | None
) -> tuple[PatchSet, PatchSet | None, PatchSet, dict[str, Any]]:
    from cropscope.evaluation.spatial import make_spatial_split

    spec = split or scene.default_split()
    size = _patch_size(model)
    sp = make_spatial_split(spec, scene.labels, regions=scene.regions,
                            region_roles=scene.region_roles, seed=seed)
    sp = sp.guarded(size // 2 if margin is None else int(margin))
    train = scene.samples(sp.train, size)
    val = scene.samples(sp.val, size) if sp.val is not None else None
    test = scene.samples(sp.test, size)
    if train.n_samples == 0 or test.n_samples == 0:
        part = "train" if train.n_samples == 0 else "test"
        raise EvaluationError(f"split {spec!r} leaves no labelled {part} pixel (after the guard "
                              "margin); use larger blocks or a smaller patch")
    if val is not None and val.n_samples == 0:
        val = None
    info = {"split": sp.spec, "split_detail": sp.detail, "patch_size": size,
            "n_train": train.n_samples, "n_val": 0 if val is None else val.n_samples,
            "n_test": test.n_samples}
    return train, val, test, info


def evaluate_scene(
    model: str | Classifier,
    scene: Scene,
    split: str | None = None,
    *,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    margin: int | None = None,
    progress: bool = False,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
) -> EvaluationResult:
    """Fit ``model`` (a registered name, with ``config``, or an unfitted classifier) on the
    training region of ``split`` and score it on every labelled test pixel.

    ``split``: ``blocks:B``, ``blocks:B:random[:F]`` or ``tiles`` (default: ``tiles`` when
    the scene has them, else ``blocks:16``). Training (and validation) pixels within
    ``margin`` (default: the model's patch radius) of the test region are dropped, so no
    training patch contains a test pixel. Validation tiles, if any, go to ``fit(val=...)``
    (deep models select their best epoch on them). ``config["split"]`` of the result holds
    the split; ``duration_s`` includes training.
    """
    from cropscope.evaluation.crossval import evaluate_split

    start = time.perf_counter()
    clf = create_scene_model(model, **(config or {})) if isinstance(model, str) else model
    if isinstance(model, str) and "seed" in clf.config and "seed" not in (config or {}):
        clf.config["seed"] = seed
    train, val, test, info = _split_samples(clf, scene, split, seed, margin)
    t0 = time.perf_counter()
    clf.fit(_input_of(clf, train), _input_of(clf, val), progress=progress,
            checkpoint_dir=checkpoint_dir, resume=resume)
    fit_s = time.perf_counter() - t0
    result = evaluate_split(clf, None, _input_of(clf, test))
    result.config.update(
        mode="scene", scene=scene.name, seed=seed, n_train=info["n_train"],
        **{k: v for k, v in info.items() if k != "n_train"},
        input_kind=getattr(clf, "input_kind", "pixels"), fit_s=round(fit_s, 3),
    )
    result.duration_s = time.perf_counter() - start
    return result


def train_scene(
    model_name: str,
    scene: Scene,
    out_dir: str | Path,
    *,
    split: str | None = None,
    config: dict[str, Any] | None = None,
    seed: int = 0,
    source: str = "",
    progress: bool = False,
    resume: bool = True,
    write_extra: Callable[[Path, dict[str, Any] | None], None] | None = None,
) -> RunResult:
    """Train on a scene and write a run directory (model, ``run.json``; with ``split`` also
    the test report). Without ``split`` every labelled pixel trains the model. Deep models
    resume an interrupted training as :func:`~cropscope.training.train_run` does.
    ``write_extra(folder, metrics)`` adds files to the run before it is sealed (``metrics``:
    the test report's dict, or None without ``split``)."""
    from cropscope.evaluation.report import write_report
    from cropscope.models.runs import save_classifier_run
    from cropscope.runs import checkpoint_folder
    from cropscope.training.rundir import RunResult, training_record

    started = time.perf_counter()
    out = Path(out_dir)
    checkpoints = checkpoint_folder(out)
    config = dict(config or {})
    clf = create_scene_model(model_name, **config)
    if "seed" in clf.config and "seed" not in config:
        clf.config["seed"] = seed
    metrics = None
    result = None
    if split:
        result = evaluate_scene(clf, scene, split, seed=seed, progress=progress,
                                checkpoint_dir=checkpoints, resume=resume)
        metrics = result.to_dict()
        n_train = result.config["n_train"]
    else:
        train = scene.samples(np.ones(scene.shape, dtype=bool), _patch_size(clf))
        clf.fit(_input_of(clf, train), progress=progress, checkpoint_dir=checkpoints,
                resume=resume)
        n_train = train.n_samples
    duration = time.perf_counter() - started
    record = training_record({"source": source, "scene": scene.name, "split": split,
                              "n_train": int(n_train), "seed": seed}, duration)
    report = result

    def add_files(folder: Path) -> None:
        if report is not None:
            write_report(report, folder)
        if write_extra is not None:
            write_extra(folder, metrics)

    save_classifier_run(clf, out, training=record, metrics=metrics, data=source,
                        write_extra=add_files)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return RunResult(run_dir=out, model=clf, metrics=metrics, duration_s=duration)
