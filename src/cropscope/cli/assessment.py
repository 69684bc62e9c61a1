"""``cropscope sample-design`` and ``cropscope accuracy``: thin commands over
:mod:`cropscope.assessment` (a stratified sample of a map, then accuracy and class areas with
confidence intervals from the labelled sample)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cropscope.cli._common import SEED_TYPE, log


def _expected(text: str) -> tuple[float, dict[str, float]]:
    """``0.8``, ``maize=0.7,soy=0.9`` or ``0.85,water=0.6``: the default expected user's
    accuracy (0.8 when not given) and the per-class values."""
    default, per_class = 0.8, {}
    try:
        for part in text.split(","):
            name, eq, value = part.partition("=")
            if eq:
                per_class[name.strip()] = float(value)
            else:
                default = float(name)
    except ValueError:
        raise click.BadParameter(f"{text!r}: give 0.8, class=0.7,other=0.9 or "
                                 "0.85,water=0.6") from None
    outside = [v for v in (default, *per_class.values()) if not 0.0 < v <= 1.0]
    if outside:  # (NaN is outside too)
        raise click.BadParameter(f"{text!r}: user's accuracies are in (0, 1], got "
                                 f"{outside[0]}")  # fmt: skip
    return default, per_class


@click.command("sample-design")
@click.option("--map", "map_path", type=click.Path(path_type=Path), required=True,
              help="Class map (the labels GeoTIFF of 'predict', or any integer raster).")
@click.option("--out", "out_path", type=click.Path(path_type=Path), required=True,
              help="Points to write: .gpkg, .geojson or .csv (x/y in the map's CRS).")
@click.option("--n", "n_points", type=int, default=None,
              help="Number of points (or give --target-se).")
@click.option("--target-se", type=float, default=None,
              help="Standard error wanted for overall accuracy (or --target-class's area "
                   "share); the sample size follows (Olofsson et al. 2014, eq. 13).")
@click.option("--target-class", default=None, help="Size the sample for this class's area.")
@click.option("--expected-ua", default="0.8", show_default=True,
              help="Expected user's accuracy: a default and/or class=value pairs, e.g. "
                   "0.85,water=0.6.")
@click.option("--allocation", type=click.Choice(["olofsson", "proportional", "equal", "neyman"]),
              default="olofsson", show_default=True)
@click.option("--min-per-class", type=int, default=50, show_default=True,
              help="Points per rare class with --allocation olofsson.")
@click.option("--seed", type=SEED_TYPE, default=0, show_default=True)
def sample_design(map_path: Path, out_path: Path, n_points: int | None,
                  target_se: float | None, target_class: str | None, expected_ua: str,
                  allocation: str, min_per_class: int, seed: int) -> None:
    """Draw a stratified random sample of a map's pixels for accuracy assessment; prints
    the design (points per class) as JSON."""
    from cropscope.assessment import design_sample, write_sample_points

    default_ua, per_class = _expected(expected_ua)
    design = design_sample(map_path, n=n_points, target_se=target_se, expected_ua=per_class,
                           default_ua=default_ua, target_class=target_class,
                           allocation=allocation, min_per_class=min_per_class, seed=seed)
    write_sample_points(design, out_path, map_path)
    click.echo(json.dumps({**design.summary(), "points_file": str(out_path)}, indent=1))
    log(f"{design.n} points written to {out_path}; label their 'reference' column, then run "
        "'cropscope accuracy'")


@click.command("accuracy")
@click.option("--map", "map_path", type=click.Path(path_type=Path), required=True,
              help="Class map (labels GeoTIFF).")
@click.option("--reference", type=click.Path(path_type=Path), required=True,
              help="Reference points: .gpkg/.geojson/.shp/.parquet, or .csv with x/y "
                   "(map CRS) or lon/lat columns.")
@click.option("--label-column", required=True, help="Column holding the reference class.")
@click.option("--strata", type=click.Path(path_type=Path), default=None,
              help="Strata raster on the map's grid when the sample was not stratified by "
                   "map class (Stehman 2014).")
@click.option("--x-column", default=None)
@click.option("--y-column", default=None)
@click.option("--points-crs", default=None, help="CRS of CSV coordinates (default: the map's; "
              "EPSG:4326 for lon/lat columns).")
@click.option("--reproject", is_flag=True,
              help="Reproject points given in another CRS than the map's.")
@click.option("--layer", default=None, help="Layer of a multi-layer point file.")
@click.option("--fpc", is_flag=True, help="Apply the finite-population correction.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for assessment.json, estimates.csv and error_matrix.csv.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def accuracy(map_path: Path, reference: Path, label_column: str, strata: Path | None,
             x_column: str | None, y_column: str | None, points_crs: str | None,
             reproject: bool, layer: str | None, fpc: bool, out_dir: Path | None,
             as_json: bool) -> None:
    """Accuracy and class areas with 95 % confidence intervals from a stratified sample
    (Olofsson et al. 2014 / Stehman 2014)."""
    from cropscope.assessment import assess_map, write_assessment_tables

    result = assess_map(map_path, reference, label_column=label_column, strata=strata,
                        x_column=x_column, y_column=y_column, points_crs=points_crs,
                        reproject=reproject, fpc=fpc, layer=layer)
    if out_dir is not None:
        write_assessment_tables(result, out_dir)
    if as_json:
        click.echo(json.dumps(result.to_dict(), allow_nan=True))
        return
    oa = result.overall_accuracy
    click.echo(f"overall accuracy {oa.value:.3f} ± {oa.ci95:.3f} ({result.n_points} points, "
               f"strata: {result.strata})")
    click.echo(f"{'class':<24}{'mapped ha':>14}{'estimated ha':>16}{'± 95% CI':>12}"
               f"{'UA':>8}{'± CI':>7}{'PA':>8}{'± CI':>7}")
    for c in result.classes:
        a, u, p = result.area_ha[c], result.users_accuracy[c], result.producers_accuracy[c]
        click.echo(f"{c[:23]:<24}{result.mapped_area_ha.get(c, float('nan')):>14,.1f}"
                   f"{a.value:>16,.1f}{a.ci95:>12,.1f}{u.value:>8.3f}{u.ci95:>7.3f}"
                   f"{p.value:>8.3f}{p.ci95:>7.3f}")


@click.command("report")
@click.option("--map", "map_path", type=click.Path(path_type=Path), default=None,
              help="Class map (labels GeoTIFF) to report on.")
@click.option("--assessment", type=click.Path(path_type=Path), default=None,
              help="'cropscope accuracy --out' folder (or its assessment.json).")
@click.option("--dataset", default=None,
              help="Registered dataset whose samples give the class temporal profiles.")
@click.option("--table", type=click.Path(path_type=Path), default=None,
              help="Long sample table for the class temporal profiles.")
@click.option("--evaluation", type=click.Path(path_type=Path), default=None,
              help="An evaluation to report on: 'evaluate --json' output or metrics.json.")
@click.option("--title", default=None)
@click.option("--out", "out_path", type=click.Path(path_type=Path), required=True,
              help="The .html file to write (self-contained, opens offline).")
def report(map_path: Path | None, assessment: Path | None, dataset: str | None,
           table: Path | None, evaluation: Path | None, title: str | None,
           out_path: Path) -> None:
    """A self-contained HTML report of a map (legend, areas, accuracy with confidence
    intervals, profiles) or of an evaluation."""
    from cropscope.errors import DataError
    from cropscope.reporting import evaluation_report, map_report

    if (map_path is None) == (evaluation is None):
        raise DataError("give --map (a map report) or --evaluation (an evaluation report)")
    if evaluation is not None:
        evaluation_report(evaluation, out_path, title=title)
    else:
        samples = None
        if dataset is not None or table is not None:
            from cropscope.data import load_samples

            samples = load_samples(dataset, table)
        assert map_path is not None
        map_report(map_path, out_path, assessment=assessment, samples=samples, title=title)
    click.echo(str(out_path))
