"""``cropscope h2crop``: the H2Crop dual-stream model on data in the H2Crop layout.

``generate`` writes a small synthetic dataset in the layout, ``from-enmap`` builds one from
the real EnMAP Potsdam tiles, ``train`` trains one configuration at one temporal window and
tests it, ``evaluate`` re-scores a run, ``experiment`` runs the configurations over the
temporal windows, ``params`` prints parameter counts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cropscope.cli._common import (
    POSITIVE_INT,
    SEED_TYPE,
    log,
    option_overrides,
    parse_config,
    scale_out_options,
)

_CONFIGS = ("S2", "S2+P", "S2+H", "S2+H+P")


def _normalise(value: str) -> Any:
    return None if value == "none" else value


def training_options(func: Any) -> Any:
    """Options shared by ``train`` and ``experiment``."""
    options = [
        click.option("--preset", default="tiny", show_default=True,
                     type=click.Choice(["tiny", "reference"])),
        click.option("--epochs", type=int, default=None, help="Epochs (default 100)."),
        click.option("--batch-size", type=POSITIVE_INT, default=None,
                     help="Batch size (default 4)."),
        click.option("--device", default=None, help="auto (default), cpu, cuda, cuda:1, ..."),
        click.option("--normalise", default="reference", show_default=True,
                     type=click.Choice(["reference", "train", "none"]),
                     help="Band statistics: the paper's constants, the training split's, "
                          "or none."),
        click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                     help="Trainer option, repeatable (SegmentationConfig), e.g. "
                          "--set cutmix=0"),
        click.option("--model-set", "model_settings", multiple=True, metavar="KEY=VALUE",
                     help="H2CropNet keyword, repeatable (JSON values)."),
        click.option("--recipe", default="cropscope", show_default=True,
                     type=click.Choice(["cropscope", "official"]),
                     help="cropscope's recipe, or exactly the official one (weight decay on "
                          "every parameter, uncapped 1000-iteration warm-up); "
                          "docs/h2crop.md lists the differences."),
        click.option("--init-agrifm", type=click.Path(exists=True, dir_okay=False,
                                                      path_type=Path), default=None,
                     help="Start the S2 encoder from this AgriFM checkpoint (AgriFM.pth, an "
                          "official fine-tuning checkpoint or safetensors), as the official "
                          "configurations do; a stem that does not fit keeps its "
                          "initialisation."),
        click.option("--progress/--no-progress", default=True, show_default=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group()
def h2crop() -> None:
    """H2Crop: Sentinel-2 + EnMAP + priors, four-level hierarchical segmentation."""


@h2crop.command()
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--samples", type=int, default=12, show_default=True)
@click.option("--size", type=int, default=192, show_default=True, help="S2 side (px).")
@click.option("--hyper-size", type=int, default=64, show_default=True, help="EnMAP side (px).")
@click.option("--hyper-bands", type=int, default=218, show_default=True)
@click.option("--taxonomy", "taxonomy_name", default="small", show_default=True,
              type=click.Choice(["small", "h2crop"]),
              help="small: a 4-level toy tree; h2crop: the real 7/37/83/102 taxonomy.")
@click.option("--keys", default="readme", show_default=True, type=click.Choice(["readme", "code"]),
              help="HDF5 key spelling (README: S2/EnMAP/label/prior; code: S2_data/...).")
@click.option("--seed", type=SEED_TYPE, default=0, show_default=True)
def generate(root: Path, samples: int, size: int, hyper_size: int, hyper_bands: int,
             taxonomy_name: str, keys: str, seed: int) -> None:
    """Write a synthetic dataset in the H2Crop layout (for trying the pipeline)."""
    from cropscope.data import generate_h2crop
    from cropscope.taxonomy import load_h2crop

    out = generate_h2crop(root, samples, size=size, hyper_size=hyper_size,
                          hyper_bands=hyper_bands, seed=seed, keys=keys,
                          taxonomy=load_h2crop() if taxonomy_name == "h2crop" else None)
    log(f"wrote {samples} samples to {out}")


@h2crop.command("from-enmap")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--months", type=int, default=12, show_default=True)
def from_enmap(root: Path, months: int) -> None:
    """Build H2Crop-layout samples from the real EnMAP Potsdam tiles (S2 simulated)."""
    from cropscope.hyperspectral import build_h2crop_from_enmap

    out = build_h2crop_from_enmap(root, months=months)
    log(f"wrote the EnMAP Potsdam samples to {out}")


@h2crop.command()
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Run directory.")
@click.option("--config", "config", default="S2+H+P", show_default=True,
              type=click.Choice(_CONFIGS))
@click.option("--months", type=int, default=6, show_default=True,
              help="Temporal window: the first N months (6, 8, 10, 12).")
@click.option("--resume/--no-resume", default=True, show_default=True)
@scale_out_options
@training_options
def train(root: Path, out_dir: Path, config: str, months: int, resume: bool, preset: str,
          epochs: int | None, batch_size: int | None, device: str | None, normalise: str,
          settings: tuple[str, ...], model_settings: tuple[str, ...], recipe: str,
          init_agrifm: Path | None, progress: bool) -> None:
    """Train one configuration, test it, print the level means as JSON."""
    from cropscope.evaluation import format_levels_report
    from cropscope.training import train_h2crop

    run = train_h2crop(root, config, months=months, preset=preset, out_dir=out_dir,
                       training=option_overrides(settings, epochs=epochs, batch_size=batch_size,
                                                    device=device),
                       normalise=_normalise(normalise), resume=resume, progress=progress,
                       recipe=recipe, init_agrifm=init_agrifm,
                       **parse_config(None, model_settings))
    if run.test is not None:
        log(format_levels_report(run.test))
    click.echo(json.dumps(run.summary(), indent=2, default=str))


@h2crop.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Data folder (default: the one the run was trained on).")
@click.option("--split", default="test", show_default=True)
@click.option("--weights", default="final", show_default=True,
              type=click.Choice(["final", "best", "last"]),
              help="The run's selected weights, or a checkpoint.")
@click.option("--batch-size", type=POSITIVE_INT, default=4, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Write levels.json / levels.csv into this folder.")
def evaluate(run_dir: Path, root: Path | None, split: str, weights: str, batch_size: int,
             device: str, out_dir: Path | None) -> None:
    """Per-level OA / macro-F1 / mIoU, with and without background, changed/unchanged."""
    from cropscope.evaluation.levels import format_levels_report, write_levels_report
    from cropscope.training.h2crop import evaluate_h2crop_run

    result = evaluate_h2crop_run(run_dir, root, split=split, weights=weights,
                                 batch_size=batch_size, device=device)
    if out_dir is not None:
        write_levels_report(result, out_dir)
    click.echo(format_levels_report(result))


@h2crop.command()
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--configs", default=",".join(_CONFIGS), show_default=True,
              help="Comma-separated configurations.")
@click.option("--months", "months_list", default="6,8,10,12", show_default=True,
              help="Comma-separated temporal windows.")
@scale_out_options
@training_options
def experiment(root: Path, out_dir: Path, configs: str, months_list: str, preset: str,
               epochs: int | None, batch_size: int | None, device: str | None,
               normalise: str, settings: tuple[str, ...], model_settings: tuple[str, ...],
               recipe: str, init_agrifm: Path | None, progress: bool) -> None:
    """The temporal-window experiment: every configuration at every window."""
    from cropscope.training import temporal_window_experiment

    names = [c.strip() for c in configs.split(",") if c.strip()]
    bad = [c for c in names if c not in _CONFIGS]
    if bad:
        raise click.BadParameter(f"unknown configuration(s) {bad}; choose from {_CONFIGS}")
    table = temporal_window_experiment(
        root, out_dir, configs=names, months=[int(m) for m in months_list.split(",")],
        preset=preset, training=option_overrides(settings, epochs=epochs, batch_size=batch_size,
                                                    device=device),
        normalise=_normalise(normalise), progress=progress, recipe=recipe,
        init_agrifm=init_agrifm, **parse_config(None, model_settings))
    cols = [c for c in ("config", "months", "all_bg_macro_f1", "all_nobg_macro_f1",
                        "all_nobg_miou", "enmap_gain_f1") if c in table]
    click.echo(table[cols].to_string(index=False))


@h2crop.command()
@click.option("--preset", default="reference", show_default=True,
              type=click.Choice(["tiny", "reference"]))
@click.option("--months", type=int, default=6, show_default=True)
def params(preset: str, months: int) -> None:
    """Parameter counts of the four configurations (built without allocating weights)."""
    from cropscope.models import h2crop_parameter_counts

    for config, n in h2crop_parameter_counts(preset, months, _CONFIGS).items():
        click.echo(f"{config:<8} {n / 1e6:8.2f} M")
