"""``cropscope taxonomy``: show class hierarchies and map national legends through HCAT."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cropscope.cli._common import log


@click.group()
def taxonomy() -> None:
    """Class hierarchies: shipped ones, EuroCrops HCAT, H2Crop, your own YAML/CSV."""


@taxonomy.command("list")
def list_() -> None:
    """Names of the shipped hierarchies (plus h2crop, HCAT3, HCAT2 from the data folder)."""
    from cropscope.taxonomy import list_taxonomies

    for name in list_taxonomies():
        click.echo(name)


@taxonomy.command()
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="Print the whole tree as JSON.")
def show(source: str, as_json: bool) -> None:
    """Levels and class counts of SOURCE (a shipped name or a YAML/JSON/CSV file)."""
    from cropscope.taxonomy import load_taxonomy

    tax = load_taxonomy(source)
    click.echo(json.dumps(tax.to_dict()) if as_json else tax.describe())


@taxonomy.command()
@click.argument("country")
@click.option("--to", "target", default="h2crop", show_default=True,
              help="Target taxonomy (only h2crop carries HCAT codes for its classes).")
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=None,
              help="Write the row-by-row mapping to this CSV.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
def crosswalk(country: str, target: str, out_path: Path | None, as_json: bool) -> None:
    """Map a national legend (EuroCrops table name such as fr_2018, or a CSV with an
    HCAT3_code column) through HCAT3 to the target's levels; report what does not map."""
    from cropscope.taxonomy import crosswalk_legend

    result = crosswalk_legend(country, target)
    if out_path is not None:
        result.write_csv(out_path)
        log(f"mapping written to {out_path}")
    click.echo(json.dumps(result.to_dict()) if as_json else result.describe(country))
