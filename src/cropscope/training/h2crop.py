"""The H2Crop benchmark protocol: train one configuration at one temporal window, evaluate
it per level (with and without background, changed and unchanged pixels), and the
temporal-window experiment over the four configurations (h2crop.md §3–4).

Recipe (:func:`h2crop_recipe`): the official one (``OFFICIAL_RECIPES["h2crop"]`` of
:mod:`cropscope.engine.recipe`: AdamW lr 6e-5 / weight decay 5e-4, linear warm-up from 1 % over
1000 iterations then cosine per iteration to 6e-6, flips p = 0.5 and a k·90° rotation
p = 0.5, CutMix p = 0.5, per-level cross-entropy including background summed over the
levels, AMP on CUDA, the best validation epoch by the reference's ``mFscore`` averaged over
the four levels, 100 epochs at batch 4) with three documented differences (docs/h2crop.md):
no weight decay on norms and biases, the warm-up capped at a fifth of the run, and CutMix
that also mixes the priors (the reference forgets them). ``h2crop_recipe(official=True)``
drops the first two (the third is a fix).

A run directory (:mod:`cropscope.runs`, kind ``h2crop``) holds ``run.json`` (the registered
``h2crop`` network and its arguments, classes, bands, months, normalisation), the selected
weights ``weights.safetensors``, the checkpoints of the engine, ``history.json`` and
``test/levels.{json,csv}``; ``cropscope predict --model RUN`` maps with an ``S2`` run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cropscope.errors import DataError, ModelError
from cropscope.runs import RunSpec, TimeGrid, first_process, open_run
from cropscope.training.segmentation_run import (
    finish_network_run,
    network_spec,
    open_network_run,
    start_network_run,
)

__all__ = [
    "H2CropRun",
    "evaluate_h2crop_run",
    "h2crop_recipe",
    "load_h2crop_run",
    "temporal_window_experiment",
    "train_h2crop",
]


#: where cropscope's H2Crop recipe departs from the official one (docs/h2crop.md)
RECIPE_CHANGES: dict[str, Any] = {"decay_all": False, "warmup_cap": 0.2}


def h2crop_recipe(official: bool = False, **overrides: Any) -> Any:
    """The H2Crop :class:`~cropscope.engine.segmentation.SegmentationConfig` with
    ``overrides`` (e.g. ``epochs=2, device="cpu"``); ``official``: exactly the reference's
    recipe, without :data:`RECIPE_CHANGES`."""
    from cropscope.engine.recipe import OFFICIAL_RECIPES
    from cropscope.engine.segmentation import SegmentationConfig

    base = dict(OFFICIAL_RECIPES["h2crop"])
    if not official:
        base.update(RECIPE_CHANGES)
    return SegmentationConfig.from_dict({**base, **overrides})


@dataclass
class H2CropRun:
    """Outcome of :func:`train_h2crop`."""

    config: str
    months: int
    preset: str
    params: int
    #: :func:`~cropscope.evaluation.levels.evaluate_levels` on the test split (None: no split)
    test: dict[str, Any] | None
    history: list[dict[str, float]]
    best_epoch: int
    #: wall time of this call (a resumed run counts only what it did now; the summary's
    #: ``train_seconds`` adds up every epoch's time)
    seconds: float
    out_dir: Path | None

    def summary(self) -> dict[str, Any]:
        """One flat row: configuration, window, and the test means over levels."""
        train_s = sum(float(h.get("seconds", 0.0)) for h in self.history)
        row: dict[str, Any] = {"config": self.config, "months": self.months,
                               "preset": self.preset, "params_m": self.params / 1e6,
                               "best_epoch": self.best_epoch, "train_seconds": train_s,
                               "seconds": self.seconds}
        if self.test is not None:
            for subset, variants in self.test["mean"].items():
                for variant, scores in variants.items():
                    tag = "bg" if variant == "with_background" else "nobg"
                    for key in ("overall_accuracy", "macro_f1", "miou"):
                        row[f"{subset}_{tag}_{key}"] = scores.get(key)
        return row


def _datasets(root: Path, months: int, normalise: Any, splits: Sequence[str],
              with_hyper: bool, with_priors: bool) -> dict[str, Any]:
    from cropscope.data.readers.h2crop import H2CropDataset

    out = {}
    for split in splits:
        try:
            out[split] = H2CropDataset(root, split, months=months, with_hyper=with_hyper,
                                       with_priors=with_priors, normalise=normalise)
        except DataError as exc:
            if split == "train" or "not found" not in str(exc):
                raise
    return out


def _level_sizes(root: Path, levels: Sequence[int] | None) -> list[int]:
    from cropscope.data.readers.h2crop import read_level_sizes

    if levels is not None:
        return [int(k) for k in levels]
    return list(read_level_sizes(root))


def _resolve_normalise(raw: Any, normalise: Any) -> Any:
    """``"reference"`` / None / BandStats pass through; ``"train"`` computes per-band
    statistics over ``raw``, the un-normalised training split."""
    if not (isinstance(normalise, str) and normalise == "train"):
        return normalise
    from cropscope.data.readers.h2crop import h2crop_band_stats

    return h2crop_band_stats(raw)


def _check_reference_bands(root: Path, first: Mapping[str, Any]) -> None:
    """The reference constants are per band of H2Crop's 10 S2 and 218 EnMAP bands."""
    s2_bands = first["S2"].shape[1]
    hyper = first["EnMAP"].shape[0] if "EnMAP" in first else 218
    if s2_bands != 10 or hyper != 218:
        raise DataError(f"the reference normalisation is for 10 S2 bands and 218 EnMAP bands; "
                        f"{root} has {s2_bands} and {hyper}: use normalise='train' "
                        "(--normalise train) or your own BandStats")


def train_h2crop(
    root: str | Path,
    config: str = "S2+H+P",
    *,
    months: int = 6,
    preset: str = "tiny",
    out_dir: str | Path | None = None,
    training: Mapping[str, Any] | None = None,
    levels: Sequence[int] | None = None,
    normalise: Any = "reference",
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    recipe: str = "cropscope",
    init_agrifm: str | Path | None = None,
    **model_kw: Any,
) -> H2CropRun:
    """Train configuration ``config`` on the first ``months`` months of the H2Crop-layout
    folder ``root`` (splits ``train``, ``val``, ``test``), then evaluate the test split.

    ``recipe``: ``"cropscope"`` or ``"official"`` (:func:`h2crop_recipe`), ``training``: its
    overrides; ``init_agrifm``: an AgriFM checkpoint to start the S2 encoder from, as the
    official configurations do (:func:`~cropscope.models.h2crop_checkpoint.init_s2_from_agrifm`;
    not read when a run resumes); ``levels``: classes per level with
    background (default: the folder's ``taxonomy.json`` if it has one, else H2Crop's
    7/37/83/102); ``normalise``: ``"reference"`` (the paper's constants), ``"train"``
    (statistics of the training split), a ``BandStats`` or None. Extra keywords go to
    :class:`~cropscope.models.h2crop.H2CropNet`.
    """
    import torch

    from cropscope.data.readers.h2crop import H2CropDataset, sample_contents
    from cropscope.engine.segmentation import train_segmentation
    from cropscope.evaluation.levels import evaluate_levels, write_levels_report
    from cropscope.models.h2crop import H2CROP_CONFIGS, H2CropNet

    root = Path(root)
    if config not in H2CROP_CONFIGS:
        raise ModelError(f"unknown configuration {config!r}; choose from {list(H2CROP_CONFIGS)}")
    if recipe not in ("cropscope", "official"):
        raise ModelError(f"recipe must be 'cropscope' or 'official', got {recipe!r}")
    cfg = h2crop_recipe(official=recipe == "official", **dict(training or {}))
    sizes = _level_sizes(root, levels)
    probe = H2CropDataset(root, "train", with_hyper=False, normalise=None)
    has = sample_contents(probe.files[0])
    uses_hyper, uses_priors = H2CROP_CONFIGS[config]
    for what, used in (("EnMAP", uses_hyper), ("priors", uses_priors)):
        if used and what not in has:
            raise DataError(f"{config} needs {what}, but the samples of {root} have none "
                            f"({probe.names[0]} holds {sorted(has)})")
    # priors are read whenever present: the crop-change analysis needs them
    with_hyper, with_priors = "EnMAP" in has, "priors" in has
    raw = H2CropDataset(root, "train", months=months, with_hyper=with_hyper, normalise=None)
    first = raw.read_raw(0)
    if isinstance(normalise, str) and normalise == "reference":
        _check_reference_bands(root, first)
    stats = _resolve_normalise(raw, normalise)
    data = _datasets(root, months, stats, ("train", "val", "test"), with_hyper, with_priors)
    train = data["train"]
    hyper_bands = int(first["EnMAP"].shape[0]) if "EnMAP" in first else None
    hyper_size = int(first["EnMAP"].shape[-1]) if "EnMAP" in first else 64
    top = [int(first["label"][k].max()) for k in range(len(sizes))]
    if len(first["label"]) != len(sizes) or any(t >= n for t, n in zip(top, sizes, strict=True)):
        raise DataError(f"the labels of {train.names[0]} (levels {len(first['label'])}, "
                        f"largest codes {top}) do not fit the level sizes {sizes}: pass "
                        "levels=")
    model_args = {"levels": sizes, "config": config, "preset": preset, "months": months,
                  "hyper_bands": hyper_bands, "hyper_size": hyper_size, **model_kw}
    torch.manual_seed(cfg.seed)
    model = H2CropNet(**model_args)
    out = None if out_dir is None else Path(out_dir)
    training_record: dict[str, Any] = {"recipe": recipe, **cfg.to_dict()}
    if init_agrifm is not None:
        training_record["init_agrifm"] = _init_from_agrifm(model, Path(init_agrifm), out,
                                                           resume)
    spec = h2crop_spec(root, model_args, stats, training_record)
    if out is not None:
        start_network_run(out, spec, resume=resume)
    t0 = time.perf_counter()
    result = train_segmentation(model, train, data.get("val"), config=cfg, out_dir=out,
                                resume=resume, progress=progress, stop_after=stop_after)
    test = None
    finished = result.epochs_done == cfg.epochs
    if "test" in data and finished:
        test = evaluate_levels(model, data["test"], batch_size=cfg.batch_size,
                               device=cfg.device, amp=cfg.amp, ignore_index=cfg.ignore_index,
                               progress=progress)
        if out is not None and first_process():
            write_levels_report(test, out / "test")
    if out is not None and finished and first_process():
        spec.training.update({"best_epoch": result.best_epoch,
                              "epochs_done": result.epochs_done})
        finish_network_run(out, spec, model)
    return H2CropRun(config=model.config, months=months, preset=preset,
                     params=sum(p.numel() for p in model.parameters()), test=test,
                     history=result.history, best_epoch=result.best_epoch,
                     seconds=time.perf_counter() - t0, out_dir=out)


def _init_from_agrifm(model: Any, path: Path, out: Path | None, resume: bool
                      ) -> dict[str, Any]:
    """Start ``model``'s S2 encoder from the AgriFM checkpoint ``path`` (unless a run in
    ``out`` resumes from its own state); what was loaded, for ``run.json``."""
    from cropscope.engine.checkpoints import has_last
    from cropscope.models.h2crop_checkpoint import init_s2_from_agrifm
    from cropscope.runs.store import file_sha256

    if not path.is_file():
        raise DataError(f"AgriFM checkpoint not found: {path}")
    record: dict[str, Any] = {"file": path.name, "sha256": file_sha256(path)}
    if out is not None and resume and has_last(out):
        return record  # the resumed state already holds (and supersedes) these weights
    report = init_s2_from_agrifm(model, path)
    record.update({"loaded": len(report.loaded), "initialised": report.initialised})
    return record


def _h2crop_classes(root: Path, sizes: Sequence[int]) -> list[str]:
    """Finest-level class names (background first) of an H2Crop-layout folder."""
    path = root / "taxonomy.json"
    if path.is_file():
        from cropscope.taxonomy.sources import read_taxonomy

        names = read_taxonomy(path).classes(-1)
        if len(names) + 1 == sizes[-1]:
            return ["background", *names]
    return ["background", *(str(i) for i in range(1, sizes[-1]))]


def h2crop_spec(root: Path, model_args: Mapping[str, Any], stats: Any,
                training: Mapping[str, Any]) -> RunSpec:
    """The ``run.json`` of an H2Crop run: the registered ``h2crop`` network, the finest
    level's classes, S2 (and EnMAP) bands, months, normalisation."""
    from cropscope.data.readers.h2crop import H2CROP_NORMALISATION, H2CROP_S2_BANDS

    mode = stats if isinstance(stats, str) or stats is None else "stats"
    norm = (H2CROP_NORMALISATION if stats == "reference" else stats)
    bands: dict[str, list[str]] = {"S2": list(H2CROP_S2_BANDS)}
    if model_args.get("hyper_bands") and model_args.get("config", "S2") in ("S2+H", "S2+H+P"):
        bands["EnMAP"] = [f"band_{i + 1}" for i in range(int(model_args["hyper_bands"]))]
    sizes = list(model_args["levels"])
    return network_spec(
        "h2crop", "h2crop", model_args, classes=_h2crop_classes(root, sizes), bands=bands,
        time_grid=TimeGrid(kind="steps", n_times=int(model_args["months"])),
        normalisation=None if norm is None else norm.to_dict(), training=dict(training),
        data=f"h2crop:{root}", extra={"root": str(root), "normalise": mode,
                                       "levels": sizes})


def load_h2crop_run(run_dir: str | Path, weights: str = "final") -> Any:
    """The trained :class:`~cropscope.models.h2crop.H2CropNet` of a run directory
    (``weights``: ``"final"`` — the selected weights — ``"best"`` or ``"last"``), in eval
    mode."""
    net, run = open_network_run(run_dir, weights)
    if run.spec.kind != "h2crop":
        raise DataError(f"{run_dir} is a {run.spec.kind} run, not an H2Crop run")
    return net


def evaluate_h2crop_run(run_dir: str | Path, root: str | Path | None = None, *,
                        split: str = "test", weights: str = "final", batch_size: int = 4,
                        device: str = "auto") -> Any:
    """Per-level scores (:func:`~cropscope.evaluation.levels.evaluate_levels`) of an H2Crop
    run on ``split`` of ``root`` (default: the folder it was trained on)."""
    from cropscope.data.readers.h2crop import H2CropDataset, sample_contents
    from cropscope.evaluation.levels import evaluate_levels

    model = load_h2crop_run(run_dir, weights)
    spec = open_run(run_dir, verify=False).spec
    data_root = Path(root) if root is not None else Path(str(spec.extra.get("root", ".")))
    probe = H2CropDataset(data_root, split, with_hyper=False, normalise=None)
    ds = H2CropDataset(data_root, split, months=model.months, with_hyper=model.use_hyper,
                       with_priors="priors" in sample_contents(probe.files[0]),
                       normalise=run_normalisation(run_dir))
    return evaluate_levels(model, ds, batch_size=batch_size, device=device)


def run_normalisation(run_dir: str | Path) -> Any:
    """The normalisation a run was trained with (``"reference"``, None or ``BandStats``)."""
    from cropscope.data.readers.h5patches import BandStats

    spec = open_run(run_dir, verify=False).spec
    mode = spec.extra.get("normalise")
    if mode == "reference" or spec.normalisation is None:
        return None if spec.normalisation is None else mode
    return BandStats.from_dict(spec.normalisation)


def temporal_window_experiment(
    root: str | Path,
    out_dir: str | Path,
    *,
    configs: Sequence[str] = ("S2", "S2+P", "S2+H", "S2+H+P"),
    months: Sequence[int] = (6, 8, 10, 12),
    **kw: Any,
) -> Any:
    """Train and test every configuration at every window (h2crop.md §4.3); each run in
    ``out_dir/<config>_<months>m`` (resumable). Returns a pandas table (one row per run, the
    test means over levels) with ``enmap_gain_f1``: macro-F1 (without background, all
    pixels) minus that of the same configuration without EnMAP; written to
    ``out_dir/experiment.csv``."""
    import pandas as pd

    out = Path(out_dir)
    rows = []
    for m in months:
        for config in configs:
            tag = config.replace("+", "_")
            print(f"[h2crop] {config} on {m} months", file=sys.stderr)
            run = train_h2crop(root, config, months=m, out_dir=out / f"{tag}_{m}m", **kw)
            rows.append(run.summary())
    table = pd.DataFrame(rows)
    key = "all_nobg_macro_f1"
    if key in table:
        gains = []
        for _, r in table.iterrows():
            base = r["config"].replace("+H", "")
            ref = table[(table["config"] == base) & (table["months"] == r["months"])]
            has = "+H" in r["config"] and len(ref) and r[key] is not None
            gains.append(r[key] - ref[key].iloc[0] if has else None)
        table["enmap_gain_f1"] = gains
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "experiment.csv", index=False)
    return table
