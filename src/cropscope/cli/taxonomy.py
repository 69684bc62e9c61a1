"""``cropscope taxonomy``: show class hierarchies and map national legends through HCAT."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cropscope.cli._common import log

if TYPE_CHECKING:
    from cropscope.taxonomy import Taxonomy


def _load(source: str) -> Taxonomy:
    from cropscope.taxonomy import builtin_taxonomy, read_taxonomy

    return read_taxonomy(Path(source)) if Path(source).suffix else builtin_taxonomy(source)


@click.group()
def taxonomy() -> None:
    """Class hierarchies: shipped ones, EuroCrops HCAT, H2Crop, your own YAML/CSV."""


@taxonomy.command("list")
def list_() -> None:
    """Names of the shipped hierarchies (plus h2crop, HCAT3, HCAT2 from the data folder)."""
    from cropscope.taxonomy import list_builtin_taxonomies

    for name in [*list_builtin_taxonomies(), "h2crop", "HCAT3", "HCAT2"]:
        click.echo(name)


@taxonomy.command()
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="Print the whole tree as JSON.")
def show(source: str, as_json: bool) -> None:
    """Levels and class counts of SOURCE (a shipped name or a YAML/JSON/CSV file)."""
    tax = _load(source)
    if as_json:
        click.echo(json.dumps(tax.to_dict()))
        return
    click.echo(repr(tax))
    for k, level in enumerate(tax.levels):
        names = tax.classes(k)
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        click.echo(f"  {level}: {len(names)} classes ({shown})")
    if not tax.is_complete:
        click.echo("  (ragged: some leaves sit above the finest level)")


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
    from cropscope.errors import DataError
    from cropscope.io import atomic_path
    from cropscope.taxonomy import crosswalk_country, h2crop_hcat_codes, load_h2crop, load_hcat

    if target != "h2crop":
        raise DataError(f"no HCAT codes are known for the classes of {target!r}; use h2crop")
    result = crosswalk_country(country, load_h2crop(), h2crop_hcat_codes(), hcat=load_hcat())
    if out_path is not None:
        with atomic_path(out_path) as tmp:
            result.table.to_csv(tmp, index=False)
        log(f"mapping written to {out_path}")
    summary = result.to_dict()
    if as_json:
        click.echo(json.dumps(summary))
        return
    c = result.counts
    click.echo(f"{country} -> {target}: {summary['rows']} codes; exact {c['exact']}, broader "
               f"{c['broader']}, unmapped {c['unmapped']}")
    for level, n in sorted(summary["mapped_by_level"].items()):
        click.echo(f"  mapped to {level}: {n}")
    if summary["unmapped_codes"]:
        click.echo(f"  unmapped: {', '.join(map(str, summary['unmapped_codes'][:20]))}"
                   + (" ..." if len(summary["unmapped_codes"]) > 20 else ""))
