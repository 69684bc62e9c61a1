"""``cropscope segment``: per-pixel segmentation of patch time series (AgriFM).

``train`` fine-tunes a registered segmentation network on an H5 patch folder or the
WorldCereal patch into a run directory (:mod:`cropscope.runs`; ``cropscope predict --model
RUN`` maps with it), ``pretrain`` trains it on a class raster and saves the encoder,
``evaluate`` scores a run. Each command is a thin call into
:mod:`cropscope.training.segmentation_run` / :mod:`cropscope.training.pretraining`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from cropscope.cli._common import (
    POSITIVE_INT,
    log,
    option_overrides,
    parse_config,
    scale_out_options,
)
from cropscope.errors import DataError


def _parse_sources(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if not text:
        return default
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if not names:
        raise DataError("--sources needs at least one name")
    return names


def _parse_bands(text: str | None, source: str) -> dict[str, list[str]] | None:
    if not text:
        return None
    return {source: [b.strip() for b in text.split(",") if b.strip()]}


def model_options(func: Any) -> Any:
    """Model and training options shared by ``train`` and ``pretrain``."""
    options = [
        click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
                     help="Run directory (run.json, weights, checkpoints, history)."),
        click.option("--network", "network", default="agrifm", show_default=True,
                     help="A registered network (cropscope models networks)."),
        click.option("--preset", default="tiny", show_default=True,
                     help="Backbone preset (tiny, small, base)."),
        click.option("--model-set", "model_settings", multiple=True, metavar="KEY=VALUE",
                     help="Model keyword, repeatable (JSON values), e.g. "
                          "--model-set use_checkpoint=true"),
        click.option("--epochs", type=int, default=None, help="Epochs (default 50)."),
        click.option("--lr", type=float, default=None, help="Peak learning rate (6e-5)."),
        click.option("--batch-size", type=POSITIVE_INT, default=None, help="Batch size (4)."),
        click.option("--device", default=None, help="auto (default), cpu, cuda, cuda:1, ..."),
        click.option("--resume/--no-resume", default=True, show_default=True,
                     help="Continue from last.pt in --out when it exists."),
        click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                     help="Trainer option, repeatable (see SegmentationConfig), e.g. "
                          "--set warmup_iters=100"),
        click.option("--normalise/--no-normalise", default=True, show_default=True,
                     help="Standardise every band with statistics of the training data."),
        click.option("--progress/--no-progress", default=True, show_default=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group()
def segment() -> None:
    """Per-pixel segmentation of patch time series (AgriFM-style)."""


@segment.command()
@click.argument("data_dir", required=False, type=click.Path(path_type=Path))
@click.option("--worldcereal", "worldcereal_dir", type=click.Path(path_type=Path),
              default=None, help="Train on the WorldCereal S2/S1 patch folder instead.")
@click.option("--sources", default=None,
              help="Comma-separated source keys (default: S2 for H5, S2,S1 for WorldCereal).")
@click.option("--train-split", default="train", show_default=True)
@click.option("--val-split", default="val", show_default=True)
@click.option("--tile-size", type=int, default=32, show_default=True,
              help="WorldCereal: tile size cut from the 100 x 100 patch.")
@click.option("--target", default="croptype_cropland", show_default=True,
              type=click.Choice(["croptype", "cropland", "croptype_cropland"]),
              help="WorldCereal target (model outputs, not ground truth).")
@click.option("--pretrained", type=click.Path(path_type=Path), default=None,
              help="A pretrained-encoder run (cropscope segment pretrain) or its weights "
                   "file to start from; the head is not loaded.")
@click.option("--bands", default=None,
              help="H5 data: comma-separated band names of the first source, in channel "
                   "order (maps match cube bands by these names; default band_1..band_C).")
@click.option("--recipe", default="default", show_default=True,
              type=click.Choice(["default", "official"]),
              help="The training recipe under --epochs/--lr/--set: cropscope's defaults, or "
                   "the network's official one (AgriFM, H2Crop; docs/agrifm.md).")
@scale_out_options
@model_options
def train(data_dir: Path | None, worldcereal_dir: Path | None, sources: str | None,
          train_split: str, val_split: str, tile_size: int, target: str,
          pretrained: Path | None, bands: str | None, recipe: str, out_dir: Path, network: str,
          preset: str, model_settings: tuple[str, ...], epochs: int | None,
          lr: float | None, batch_size: int | None, device: str | None, resume: bool,
          settings: tuple[str, ...], normalise: bool, progress: bool) -> None:
    """Fine-tune a segmentation network; prints the last epoch's record as JSON."""
    from cropscope.training.segmentation_run import patch_datasets, train_segmentation_run

    default = ("S2", "S1") if worldcereal_dir is not None else ("S2",)
    names = _parse_sources(sources, default)
    data = patch_datasets(data_dir, worldcereal=worldcereal_dir, sources=names,
                          train_split=train_split, val_split=val_split, tile_size=tile_size,
                          target=target, bands=_parse_bands(bands, names[0]),
                          normalise=normalise)
    log(f"training on {len(data.train)} samples" +
        ("" if data.val is None else f", validating on {len(data.val)}"))
    kwargs = {"sources": {k: len(v) for k, v in data.bands.items()},
              "num_classes": len(data.classes), "preset": preset,
              **parse_config(None, model_settings)}
    config = option_overrides(settings, epochs=epochs, lr=lr, batch_size=batch_size,
                              device=device)
    res = train_segmentation_run(
        data.train, out_dir, network=network, network_kwargs=kwargs, classes=data.classes,
        bands=data.bands, time_grid=data.time_grid, val_dataset=data.val,
        normalisation=data.normalisation, config=config, resume=resume, progress=progress,
        pretrained=pretrained, data=data.data, recipe=recipe,
        extra={"tile_size": tile_size, "target": target} if worldcereal_dir else None)
    if res.result.resumed_from:
        log(f"resumed after epoch {res.result.resumed_from}")
    last = res.result.history[-1] if res.result.history else {}
    click.echo(json.dumps({"epochs_done": res.result.epochs_done,
                           "best_epoch": res.result.best_epoch, "last": last,
                           "out_dir": str(out_dir)}, indent=2))


def _read_cube(path: Path, names: tuple[str, ...] | None
               ) -> tuple[dict[str, np.ndarray], Any, tuple[float, ...] | None]:
    import h5py

    if not path.is_file():
        raise DataError(f"cube not found: {path}")
    with h5py.File(path, "r") as f:
        keys = [k for k in f if k != "label"] if names is None else list(names)
        absent = [k for k in keys if k not in f]
        if absent:
            raise DataError(f"{path.name}: missing source(s) {absent}; it has {list(f)}")
        cube = {k: np.asarray(f[k][()], dtype=np.float32) for k in keys}
        crs = f.attrs.get("crs")
        tf = f.attrs.get("transform")
    return cube, crs, None if tf is None else tuple(float(v) for v in tf)


@segment.command()
@click.option("--cube", "cube_path", type=click.Path(path_type=Path), default=None,
              help="An .h5 file with one (T, C, H, W) array per source (attrs crs/transform "
                   "optional: then the raster is reprojected onto it).")
@click.option("--worldcereal", "worldcereal_dir", type=click.Path(path_type=Path),
              default=None, help="Use the WorldCereal patch as the cube.")
@click.option("--raster", "raster_path", type=click.Path(path_type=Path), required=True,
              help="Land-cover / crop GeoTIFF with class codes.")
@click.option("--band", type=int, default=1, show_default=True)
@click.option("--sources", default=None, help="Comma-separated source keys (default: all).")
@click.option("--tile-size", type=int, default=32, show_default=True)
@click.option("--stride", type=int, default=None, help="Tile stride (default: tile size).")
@click.option("--objective", type=click.Choice(["pixel", "fraction", "both"]),
              default="pixel", show_default=True)
@click.option("--ignore-code", "ignore_codes", type=int, multiple=True,
              help="Raster code to leave unlabelled, repeatable.")
@scale_out_options
@model_options
def pretrain(cube_path: Path | None, worldcereal_dir: Path | None, raster_path: Path, band: int,
             sources: str | None, tile_size: int, stride: int | None, objective: str,
             ignore_codes: tuple[int, ...], out_dir: Path, network: str, preset: str,
             model_settings: tuple[str, ...], epochs: int | None, lr: float | None,
             batch_size: int | None, device: str | None, resume: bool,
             settings: tuple[str, ...], normalise: bool, progress: bool) -> None:
    """Pretrain on a class raster into a pretrained-encoder run (for 'segment train
    --pretrained RUN')."""
    from cropscope.training.segmentation_run import pretrain_encoder_run

    if (cube_path is None) == (worldcereal_dir is None):
        raise DataError("give exactly one of --cube FILE or --worldcereal FOLDER")
    names = _parse_sources(sources, ()) or None
    if worldcereal_dir is not None:
        from cropscope.data.readers.worldcereal import load_worldcereal_patch

        data = load_worldcereal_patch(worldcereal_dir)
        cube = {k: v for k, v in data["sources"].items() if names is None or k in names}
        crs, transform = data["crs"], data["transform"]
        bands = {k: [str(b) for b in data["bands"][k]] for k in cube}
    else:
        assert cube_path is not None
        cube, crs, transform = _read_cube(cube_path, names)
        bands = {k: [f"band_{i + 1}" for i in range(v.shape[1])] for k, v in cube.items()}
    res = pretrain_encoder_run(
        cube, raster_path, out_dir, band=band, crs=crs, transform=transform, bands=bands,
        network=network, network_kwargs={"preset": preset,
                                         **parse_config(None, model_settings)},
        tile_size=tile_size, stride=stride, objective=objective, ignore_codes=ignore_codes,
        normalise=normalise, resume=resume, progress=progress,
        config=option_overrides(settings, epochs=epochs, lr=lr, batch_size=batch_size,
                                device=device))
    training = res.result.training
    click.echo(json.dumps({"run": str(out_dir), "class_codes": res.result.class_codes,
                           "tiles": res.result.n_tiles, "epochs_done": training.epochs_done,
                           "last": training.history[-1] if training.history else {}},
                          indent=2))


@segment.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("data_dir", required=False, type=click.Path(path_type=Path))
@click.option("--worldcereal", "worldcereal_dir", type=click.Path(path_type=Path),
              default=None, help="Evaluate on the WorldCereal patch tiles.")
@click.option("--split", default="test", show_default=True,
              help="H5 split list (all files when the list is absent).")
@click.option("--checkpoint", type=click.Choice(["final", "best", "last"]), default="final",
              show_default=True, help="The run's selected weights, or a checkpoint.")
@click.option("--batch-size", type=POSITIVE_INT, default=4, show_default=True)
@click.option("--device", default="auto", show_default=True)
def evaluate(run_dir: Path, data_dir: Path | None, worldcereal_dir: Path | None, split: str,
             checkpoint: str, batch_size: int, device: str) -> None:
    """Score a run on H5 patches or the WorldCereal patch; prints metrics as JSON."""
    from cropscope.training.segmentation_run import evaluate_segmentation_run

    scores = evaluate_segmentation_run(run_dir, data_dir, worldcereal=worldcereal_dir,
                                       split=split, weights=checkpoint,
                                       batch_size=batch_size, device=device)
    click.echo(json.dumps(scores, indent=2))
