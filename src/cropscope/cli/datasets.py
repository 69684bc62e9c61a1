"""``cropscope datasets``: the dataset registry."""

from __future__ import annotations

import click


@click.group()
def datasets() -> None:
    """Registered datasets."""


@datasets.command("list")
def list_cmd() -> None:
    """Show registered datasets and whether their files are available locally."""
    from rich.console import Console
    from rich.table import Table

    from cropscope.data import dataset_status, list_datasets
    from cropscope.settings import data_dir

    table = Table(title=f"datasets (data directory: {data_dir()})")
    table.add_column("name")
    table.add_column("status")
    table.add_column("splits")
    table.add_column("description")
    for spec in list_datasets():
        status = dataset_status(spec.name)
        style = {"local": "green", "missing": "yellow"}.get(status, "red")
        kind = "" if spec.kind == "samples" else f"[{spec.kind}] "
        table.add_row(spec.name, f"[{style}]{status}[/{style}]", ",".join(spec.splits) or "-",
                      kind + spec.description)
    Console().print(table)


@datasets.command("seal")
@click.argument("folder", type=click.Path(file_okay=False))
def seal_cmd(folder: str) -> None:
    """Write FOLDER/MANIFEST.sha256 with the sha256 of every file in FOLDER.

    Every later read of those files by cropscope checks them against it, so a damaged or
    modified input (a JPEG2000 or GeoTIFF with flipped bytes decodes without any error)
    is refused instead of mapped.
    """
    from cropscope.remote import write_checksum_list

    path, n = write_checksum_list(folder, progress=True)
    click.echo(f"sealed {n} files: {path}")


@datasets.command("show")
@click.argument("name")
@click.option("--split", default=None, help="Split to load (if the dataset has splits).")
def show_cmd(name: str, split: str | None) -> None:
    """Load a dataset and summarise it (shape, bands, classes, dates)."""
    from cropscope.data import load_dataset

    ts = load_dataset(name, split=split)
    click.echo(repr(ts))
    if ts.dates is not None:
        click.echo(f"dates: {ts.dates.min()} .. {ts.dates.max()}")
    if ts.labels is not None:
        for cls, n in ts.class_counts().items():
            click.echo(f"  {cls:<20} {n}")
