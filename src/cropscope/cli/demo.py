"""``cropscope demo``: the main job end to end on the embedded default data (a thin layer
over :func:`cropscope.workflows.demo.run_demo`, which maps through the same road as
``cropscope predict``)."""

from __future__ import annotations

from pathlib import Path

import click

from cropscope.cli._common import SEED_TYPE
from cropscope.workflows.demo import DEMO_BLOCKS, DEMO_DATASET, DEMO_MODELS


@click.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("demo_out"),
              show_default=True, help="Output directory.")
@click.option("--models", "model_names", default=",".join(DEMO_MODELS), show_default=True,
              help="Comma-separated models to compare.")
@click.option("--cv", type=int, default=5, show_default=True)
@click.option("--seed", type=SEED_TYPE, default=0, show_default=True)
@click.option("--spatial-blocks", default=DEMO_BLOCKS, show_default=True, metavar="SIZE",
              help="Also cross-validate on spatial blocks of this size ('none': skip).")
def demo(out_dir: Path, model_names: str, cv: int, seed: int, spatial_blocks: str) -> None:
    """Train on the sits Mato Grosso NDVI samples and map the MODIS cube over Sinop."""
    from rich.console import Console
    from rich.table import Table

    from cropscope.cli.evaluate import warnings_as_lines
    from cropscope.workflows.demo import run_demo

    blocks = None if spatial_blocks.strip().lower() in {"", "none", "off"} else spatial_blocks
    with warnings_as_lines():
        res = run_demo(out_dir,
                       models=[m.strip() for m in model_names.split(",") if m.strip()],
                       cv=cv, seed=seed, spatial_blocks=blocks)
    console = Console()
    table = Table(title=f"{cv}-fold CV on {DEMO_DATASET} ({res.n_samples} samples, seed {seed})"
                        + (f": random folds and {blocks} spatial blocks" if blocks else ""))
    columns = ["model", "OA", "macro-F1", "kappa"]
    if blocks:  # compact headers: the table fits 80 columns
        columns += ["OA blocks", "F1 blocks", "trains without"]
    for col in (*columns, "s"):
        table.add_column(col, justify="left" if col in {"model", "trains without"} else "right")
    for r in sorted(res.rows, key=lambda r: -r["overall_accuracy"]):
        mark = " *" if r is res.best else ""
        cells = [r["model"] + mark, f"{r['overall_accuracy']:.3f}", f"{r['macro_f1']:.3f}",
                 f"{r['kappa']:.3f}"]
        seconds = r["seconds"]
        if blocks and "blocks" in r:
            b = r["blocks"]
            missing = sorted({c for v in b["folds_missing_classes"].values() for c in v})
            cells += [f"{b['overall_accuracy']:.3f}", f"{b['macro_f1']:.3f}",
                      ", ".join(missing) or "-"]
            seconds += b["seconds"]
        table.add_row(*cells, f"{seconds:.0f}")
    console.print(table)
    area_table = Table(title="Sinop map: area per class")
    for col in ("class", "pixels", "share", "area (ha)"):
        area_table.add_column(col, justify="left" if col == "class" else "right")
    for name, a in res.areas.items():
        area_table.add_row(name, str(a["pixels"]), f"{a['share']:.1%}", f"{a['area_ha']:,.0f}")
    console.print(area_table)
    console.print(f"map: {res.map_paths['labels']}\npreview: {res.map_paths['preview']}\n"
                  f"run directory: {res.run_dir}\ntotal time: {res.seconds:.0f} s")
