"""``cropscope demo``: the main job end to end on the embedded default data (a thin layer
over :func:`cropscope.workflows.demo.run_demo`, which maps through the same road as
``cropscope predict``)."""

from __future__ import annotations

from pathlib import Path

import click

from cropscope.workflows.demo import DEMO_DATASET, DEMO_MODELS


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

    from cropscope.workflows.demo import run_demo

    res = run_demo(out_dir, models=[m.strip() for m in model_names.split(",") if m.strip()],
                   cv=cv, seed=seed)
    console = Console()
    table = Table(title=f"{cv}-fold CV on {DEMO_DATASET} ({res.n_samples} samples, seed {seed})")
    for col in ("model", "overall accuracy", "macro F1", "kappa", "time (s)"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in sorted(res.rows, key=lambda r: -r["overall_accuracy"]):
        mark = " *" if r is res.best else ""
        table.add_row(r["model"] + mark, f"{r['overall_accuracy']:.4f}", f"{r['macro_f1']:.4f}",
                      f"{r['kappa']:.4f}", f"{r['seconds']:.1f}")
    console.print(table)
    area_table = Table(title="Sinop map: area per class")
    for col in ("class", "pixels", "share", "area (ha)"):
        area_table.add_column(col, justify="left" if col == "class" else "right")
    for name, a in res.areas.items():
        area_table.add_row(name, str(a["pixels"]), f"{a['share']:.1%}", f"{a['area_ha']:,.0f}")
    console.print(area_table)
    console.print(f"map: {res.map_paths['labels']}\npreview: {res.map_paths['preview']}\n"
                  f"run directory: {res.run_dir}\ntotal time: {res.seconds:.0f} s")
