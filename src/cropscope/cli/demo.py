"""``cropscope demo``: the main job end to end on the embedded default data.

Cross-validates several models on the sits Mato Grosso MODIS NDVI samples, trains the
best one on all samples, classifies the real MODIS NDVI image cube over Sinop into a
georeferenced crop map (GeoTIFF + PNG preview) and prints the accuracy table.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from cropscope.cli._common import log

DEMO_DATASET = "sits-matogrosso-ndvi"
DEMO_CUBE = "sits_matogrosso/modis_sinop_ndvi_cube"
DEMO_MODELS = ("rf", "lightgbm", "tempcnn", "cropnet")
#: lighter settings so the whole demo stays within a few minutes on 2 CPU cores
DEMO_CONFIGS: dict[str, dict[str, object]] = {
    "rf": {"n_estimators": 300},
    "lightgbm": {"n_estimators": 300},
    "tempcnn": {"epochs": 40},
    "cropnet": {"epochs": 30, "channels": 32, "lr": 2e-3, "batch_size": 128},
}


@click.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("demo_out"),
              show_default=True, help="Output directory.")
@click.option("--models", "model_names", default=",".join(DEMO_MODELS), show_default=True,
              help="Comma-separated models to compare.")
@click.option("--cv", type=int, default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out_dir: Path, model_names: str, cv: int, seed: int) -> None:
    """Train on the sits Mato Grosso NDVI samples and map the MODIS cube over Sinop."""
    from rich.console import Console
    from rich.table import Table

    from cropscope.data.readers.cube import read_cube
    from cropscope.data.registry import load_dataset
    from cropscope.evaluation import cross_validate, write_report
    from cropscope.io import write_json
    from cropscope.mapping import classify_cube, write_map, write_preview
    from cropscope.models.registry import create_model
    from cropscope.settings import data_dir
    from cropscope.training.rundir import train_run

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    ts = load_dataset(DEMO_DATASET)
    log(f"samples: {DEMO_DATASET} {ts}")

    rows = []
    for name in [m.strip() for m in model_names.split(",") if m.strip()]:
        config = {**DEMO_CONFIGS.get(name, {}), "seed": seed}
        t0 = time.perf_counter()
        log(f"{cv}-fold CV: {name}")
        result = cross_validate(lambda n=name, c=config: create_model(n, **c), ts, cv=cv,
                                seed=seed, progress=True)
        result.config.update({"model": name, "model_config": config})
        write_report(result, out_dir / "cv" / name)
        m = result.metrics
        rows.append({"model": name, "overall_accuracy": m["overall_accuracy"],
                     "macro_f1": m["macro_f1"], "kappa": m["kappa"],
                     "seconds": time.perf_counter() - t0, "config": config})

    best = max(rows, key=lambda r: (r["overall_accuracy"], r["macro_f1"]))
    log(f"training {best['model']} on all {ts.n_samples} samples")
    run = train_run(ts, best["model"], out_dir / "run", config=best["config"], holdout=0.0,
                    seed=seed, source=f"dataset:{DEMO_DATASET}", progress=True)

    cube_dir = data_dir() / DEMO_CUBE
    cube = read_cube(cube_dir)
    log(f"cube: {dict(cube.sizes)} {str(cube['time'].values[0])[:10]} .. "
        f"{str(cube['time'].values[-1])[:10]}")
    crop_map = classify_cube(run.model, cube, progress=True)
    paths = write_map(crop_map, out_dir / "sinop_crop_map.tif")
    preview = write_preview(
        crop_map, out_dir / "sinop_crop_map.png",
        title=f"Sinop (MT, Brazil) 2013-2014, MODIS NDVI, {best['model']}",
    )
    areas = crop_map.class_areas()
    write_json(out_dir / "summary.json", {
        "dataset": DEMO_DATASET, "cv": cv, "seed": seed, "models": rows,
        "best_model": best["model"], "map": str(paths["labels"]), "preview": str(preview),
        "class_areas": areas, "duration_s": time.perf_counter() - started,
    })

    console = Console()
    table = Table(title=f"{cv}-fold CV on {DEMO_DATASET} ({ts.n_samples} samples, seed {seed})")
    for col in ("model", "overall accuracy", "macro F1", "kappa", "time (s)"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in sorted(rows, key=lambda r: -r["overall_accuracy"]):
        mark = " *" if r is best else ""
        table.add_row(r["model"] + mark, f"{r['overall_accuracy']:.4f}", f"{r['macro_f1']:.4f}",
                      f"{r['kappa']:.4f}", f"{r['seconds']:.1f}")
    console.print(table)
    area_table = Table(title="Sinop map: area per class")
    for col in ("class", "pixels", "share", "area (ha)"):
        area_table.add_column(col, justify="left" if col == "class" else "right")
    for name, a in areas.items():
        area_table.add_row(name, str(a["pixels"]), f"{a['share']:.1%}", f"{a['area_ha']:,.0f}")
    console.print(area_table)
    console.print(f"map: {paths['labels']}\npreview: {preview}\n"
                  f"run directory: {run.run_dir}\n"
                  f"total time: {time.perf_counter() - started:.0f} s")
