"""The demo as one Python call: compare models by cross-validation, train the best into a
run directory, and map the Sinop MODIS cube through the same road as ``cropscope predict``.

:func:`run_demo` cross-validates several models on the sits Mato Grosso MODIS NDVI samples
(reports in ``OUT/cv/<model>``), trains the best one on every sample (``OUT/run``, a complete
run directory), then calls :func:`cropscope.workflows.predict_run` with that run on the
real 12-date MODIS NDVI cube over Sinop: ``OUT/sinop_crop_map.tif`` (+ probabilities,
uncertainty, PNG quick-look and area table), the same product ``cropscope predict`` delivers.
``OUT/summary.json`` records the CV table, the chosen model and the areas.

Next to random (stratified) k-fold CV, every model is also cross-validated on spatial
blocks (``spatial_blocks``, default 0.5° blocks of the sample coordinates; reports in
``OUT/cv_blocks/<model>``): neighbouring pixels are correlated, and random folds put them on
both sides, so random CV overstates what a map of a new area will reach. On these samples
every Forest sample lies in one 0.5° block, so one block fold trains without Forest (the
warning names it) and Forest's F1 is 0 there. The best model is still chosen by random CV.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEMO_BLOCKS", "DEMO_CONFIGS", "DEMO_CUBE", "DEMO_DATASET", "DEMO_MODELS", "DemoResult",
           "run_demo"]

DEMO_DATASET = "sits-matogrosso-ndvi"
DEMO_CUBE = "sits_matogrosso/modis_sinop_ndvi_cube"
DEMO_MODELS = ("rf", "lightgbm", "tempcnn", "cropnet")
DEMO_BLOCKS = "0.5deg"
#: lighter settings so the whole demo stays within a few minutes on 2 CPU cores
DEMO_CONFIGS: dict[str, dict[str, object]] = {
    "rf": {"n_estimators": 300},
    "lightgbm": {"n_estimators": 300},
    "tempcnn": {"epochs": 40},
    "cropnet": {"epochs": 30, "channels": 32, "lr": 2e-3, "batch_size": 128},
}
log = logging.getLogger("cropscope")


@dataclass
class DemoResult:
    """The demo's CV table, chosen model, run directory and map product."""

    rows: list[dict[str, Any]]
    best: dict[str, Any]
    n_samples: int
    run_dir: Path
    map_paths: dict[str, Path]
    areas: Mapping[str, Mapping[str, float]]
    seconds: float


def run_demo(out_dir: str | Path, *, models: Sequence[str] = DEMO_MODELS, cv: int = 5,
             seed: int = 0, progress: bool = True,
             spatial_blocks: str | None = DEMO_BLOCKS) -> DemoResult:
    """Run the demo into ``out_dir`` (see the module docstring); ``spatial_blocks=None``
    skips the spatial-block CV."""
    from cropscope.data.registry import load_dataset
    from cropscope.evaluation import cross_validate, write_report
    from cropscope.io import write_json
    from cropscope.models.registry import create_model
    from cropscope.settings import data_dir
    from cropscope.training.rundir import train_run
    from cropscope.workflows.predict import predict_run

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ts = load_dataset(DEMO_DATASET)
    log.info("samples: %s %s", DEMO_DATASET, ts)
    rows = []
    for name in models:
        config = {**DEMO_CONFIGS.get(name, {}), "seed": seed}
        t0 = time.perf_counter()
        log.info("%d-fold CV: %s", cv, name)
        result = cross_validate(functools.partial(create_model, name, **config), ts, cv=cv,
                                seed=seed, progress=progress)
        result.config.update({"model": name, "model_config": config})
        write_report(result, out / "cv" / name)
        m = result.metrics
        row: dict[str, Any] = {"model": name, "overall_accuracy": m["overall_accuracy"],
                               "macro_f1": m["macro_f1"], "kappa": m["kappa"],
                               "seconds": time.perf_counter() - t0, "config": config}
        if spatial_blocks is not None:
            t0 = time.perf_counter()
            log.info("%d-fold spatial-block CV (%s): %s", cv, spatial_blocks, name)
            blocks = cross_validate(functools.partial(create_model, name, **config), ts,
                                    cv=cv, seed=seed, progress=progress,
                                    spatial_blocks=spatial_blocks)
            blocks.config.update({"model": name, "model_config": config})
            write_report(blocks, out / "cv_blocks" / name)
            row["blocks"] = {
                "spatial_blocks": spatial_blocks,
                "overall_accuracy": blocks.metrics["overall_accuracy"],
                "macro_f1": blocks.metrics["macro_f1"], "kappa": blocks.metrics["kappa"],
                "folds_missing_classes": blocks.config.get("folds_missing_classes", {}),
                "seconds": time.perf_counter() - t0,
            }
        rows.append(row)
    best = max(rows, key=lambda r: (r["overall_accuracy"], r["macro_f1"]))
    log.info("training %s on all %d samples", best["model"], ts.n_samples)
    run = train_run(ts, best["model"], out / "run", config=best["config"], holdout=0.0,
                    seed=seed, source=f"dataset:{DEMO_DATASET}", progress=progress)
    mapped = predict_run(run.run_dir, data_dir() / DEMO_CUBE, out / "sinop_crop_map.tif",
                     tile=256, progress=progress)
    product = mapped.product
    seconds = time.perf_counter() - started
    write_json(out / "summary.json", {
        "dataset": DEMO_DATASET, "cv": cv, "seed": seed, "spatial_blocks": spatial_blocks,
        "models": rows,
        "best_model": best["model"], "map": str(product.paths["labels"]),
        "preview": str(product.paths["preview"]), "class_areas": product.areas,
        "duration_s": seconds,
    })
    return DemoResult(rows, best, ts.n_samples, run.run_dir, dict(product.paths),
                      product.areas, seconds)
