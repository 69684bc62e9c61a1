"""``cropscope segment``: per-pixel segmentation of patch time series (AgriFM).

``train`` fine-tunes a segmentation network on an H5 patch folder or the WorldCereal patch,
``pretrain`` trains it on a class raster and saves the encoder, ``evaluate`` scores a run.
A run directory holds ``segment.json`` (how to rebuild the model, classes, normalisation),
``last.pt`` / ``best.pt`` checkpoints and ``history.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from cropscope.cli._common import log, option_overrides, parse_config
from cropscope.errors import DataError, ModelError
from cropscope.models.segmentation_map import build_network

SPEC_FILE = "segment.json"


def _parse_sources(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if not text:
        return default
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if not names:
        raise DataError("--sources needs at least one name")
    return names


def _h5_datasets(folder: Path, sources: tuple[str, ...], train_split: str | None,
                 val_split: str | None) -> tuple[Any, Any]:
    from cropscope.data.readers.h5patches import H5PatchDataset

    def has(split: str | None) -> bool:
        return split is not None and any(
            (folder / sub / f"{split}.txt").is_file() for sub in ("", "data_list"))

    train = H5PatchDataset(folder, train_split if has(train_split) else None, sources)
    val = H5PatchDataset(folder, val_split, sources) if has(val_split) else None
    return train, val


def _worldcereal(folder: Path, sources: tuple[str, ...], tile: int, target: str
                 ) -> tuple[list[Any], list[str], dict[str, Any]]:
    from cropscope.data.readers.worldcereal import load_worldcereal_patch, worldcereal_patches

    data = load_worldcereal_patch(folder, target=target, compact=True)
    log(f"WorldCereal patch: classes {data['classes']} ({data['note']})")
    return worldcereal_patches(data, size=tile, sources=sources), data["classes"], data


def _num_classes(dataset: Any) -> int:
    top = -1
    for _, label in dataset.iter_raw():
        top = max(top, int(np.max(label)))
    if top < 0:
        raise DataError("the training labels hold no class (all ignore)")
    return top + 1


def _channels(dataset: Any) -> dict[str, int]:
    sources, _ = dataset.read_raw(0)
    return {k: int(v.shape[1]) for k, v in sources.items()}


def model_options(func: Any) -> Any:
    """Model and training options shared by ``train`` and ``pretrain``."""
    options = [
        click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
                     help="Run directory (checkpoints, history, segment.json)."),
        click.option("--model", "model_name", default="agrifm", show_default=True,
                     help="'agrifm' or package.module:callable(sources, num_classes, preset, "
                          "**kwargs)."),
        click.option("--preset", default="tiny", show_default=True,
                     help="Backbone preset (tiny, small, base)."),
        click.option("--model-set", "model_settings", multiple=True, metavar="KEY=VALUE",
                     help="Model keyword, repeatable (JSON values), e.g. "
                          "--model-set use_checkpoint=true"),
        click.option("--epochs", type=int, default=None, help="Epochs (default 50)."),
        click.option("--lr", type=float, default=None, help="Peak learning rate (6e-5)."),
        click.option("--batch-size", type=int, default=None, help="Batch size (4)."),
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


def _prepare_out(out_dir: Path, spec: dict[str, Any], resume: bool) -> None:
    from cropscope.io import write_json

    path = out_dir / SPEC_FILE
    if resume and path.is_file():
        old = json.loads(path.read_text())
        if old.get("model_spec") != spec["model_spec"]:
            raise ModelError(f"{path} describes another model; use --no-resume or another --out")
    write_json(path, spec)


def _load_spec(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SPEC_FILE
    if not path.is_file():
        raise ModelError(f"{run_dir} is not a segmentation run (no {SPEC_FILE})")
    return json.loads(path.read_text())


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
              help="encoder.pt (or a checkpoint) to start from; the head is not loaded.")
@model_options
def train(data_dir: Path | None, worldcereal_dir: Path | None, sources: str | None,
          train_split: str, val_split: str, tile_size: int, target: str,
          pretrained: Path | None, out_dir: Path, model_name: str, preset: str,
          model_settings: tuple[str, ...], epochs: int | None, lr: float | None,
          batch_size: int | None, device: str | None, resume: bool,
          settings: tuple[str, ...], normalise: bool, progress: bool) -> None:
    """Fine-tune a segmentation model; prints the last epoch's record as JSON."""
    from cropscope.data.readers.h5patches import ArrayPatchDataset, compute_band_stats
    from cropscope.training.pretraining import load_pretrained
    from cropscope.training.segmentation import train_segmentation

    if (data_dir is None) == (worldcereal_dir is None):
        raise DataError("give exactly one of DATA_DIR or --worldcereal FOLDER")
    classes: list[str] | None = None
    if worldcereal_dir is not None:
        names = _parse_sources(sources, ("S2", "S1"))
        tiles, classes, _ = _worldcereal(worldcereal_dir, names, tile_size, target)
        train_ds, val_ds = ArrayPatchDataset(tiles), None
        data_desc = f"worldcereal:{worldcereal_dir}"
        n_classes = len(classes)
    else:
        assert data_dir is not None
        names = _parse_sources(sources, ("S2",))
        train_ds, val_ds = _h5_datasets(data_dir, names, train_split, val_split)
        data_desc = f"h5:{data_dir}"
        n_classes = _num_classes(train_ds)
    stats = compute_band_stats(train_ds) if normalise else None
    train_ds.normalise = stats
    if val_ds is not None:
        val_ds.normalise = stats
    spec_model = {"model": model_name, "preset": preset, "sources": _channels(train_ds),
                  "num_classes": n_classes,
                  "model_kwargs": parse_config(None, model_settings)}
    spec = {"model_spec": spec_model, "classes": classes, "data": data_desc,
            "sources": list(names), "normalise": None if stats is None else stats.to_dict(),
            "tile_size": tile_size if worldcereal_dir is not None else None,
            "target": target if worldcereal_dir is not None else None}
    _prepare_out(out_dir, spec, resume)
    model = build_network(spec_model)
    if pretrained is not None and not (resume and (out_dir / "last.pt").is_file()):
        log(f"pretrained weights: {load_pretrained(model, pretrained).summary()}")
    log(f"training on {len(train_ds)} samples" +
        ("" if val_ds is None else f", validating on {len(val_ds)}"))
    config = option_overrides(settings, epochs=epochs, lr=lr, batch_size=batch_size,
                              device=device)
    res = train_segmentation(model, train_ds, val_ds, config=config, out_dir=out_dir,
                             resume=resume, progress=progress)
    if res.resumed_from:
        log(f"resumed after epoch {res.resumed_from}")
    last = res.history[-1] if res.history else {}
    click.echo(json.dumps({"epochs_done": res.epochs_done, "best_epoch": res.best_epoch,
                           "last": last, "out_dir": str(out_dir)}, indent=2))


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
@model_options
def pretrain(cube_path: Path | None, worldcereal_dir: Path | None, raster_path: Path, band: int,
             sources: str | None, tile_size: int, stride: int | None, objective: str,
             ignore_codes: tuple[int, ...], out_dir: Path, model_name: str, preset: str,
             model_settings: tuple[str, ...], epochs: int | None, lr: float | None,
             batch_size: int | None, device: str | None, resume: bool,
             settings: tuple[str, ...], normalise: bool, progress: bool) -> None:
    """Pretrain on a class raster; writes encoder.pt for 'segment train --pretrained'."""
    from cropscope.data.readers.h5patches import compute_band_stats
    from cropscope.training.pretraining import (
        encode_classes,
        pretrain_segmentation,
        read_class_raster,
    )

    if (cube_path is None) == (worldcereal_dir is None):
        raise DataError("give exactly one of --cube FILE or --worldcereal FOLDER")
    names = _parse_sources(sources, ()) or None
    if worldcereal_dir is not None:
        from cropscope.data.readers.worldcereal import load_worldcereal_patch

        data = load_worldcereal_patch(worldcereal_dir)
        cube = {k: v for k, v in data["sources"].items() if names is None or k in names}
        crs, transform = data["crs"], data["transform"]
    else:
        assert cube_path is not None
        cube, crs, transform = _read_cube(cube_path, names)
    shape = next(iter(cube.values())).shape[-2:]
    if transform is not None:
        codes = read_class_raster(raster_path, band, crs=crs, transform=transform,
                                  shape=tuple(shape))
    else:
        codes = read_class_raster(raster_path, band)
        if codes.shape != tuple(shape):
            raise DataError(f"raster {codes.shape} and cube {tuple(shape)} differ and the "
                            "cube has no transform to reproject onto")
    _, code_list = encode_classes(codes, ignore_codes)
    stats = compute_band_stats([(cube, codes)]) if normalise else None
    spec_model = {"model": model_name, "preset": preset,
                  "sources": {k: int(v.shape[1]) for k, v in cube.items()},
                  "num_classes": len(code_list),
                  "model_kwargs": parse_config(None, model_settings)}
    spec = {"model_spec": spec_model, "classes": [str(c) for c in code_list],
            "data": f"pretrain:{raster_path}", "sources": list(cube),
            "normalise": None if stats is None else stats.to_dict(), "objective": objective}
    _prepare_out(out_dir, spec, resume)
    model = build_network(spec_model)
    res = pretrain_segmentation(
        model, cube, codes, out_dir, size=tile_size, stride=stride, objective=objective,
        config=option_overrides(settings, epochs=epochs, lr=lr, batch_size=batch_size,
                                device=device), normalise=stats,
        ignore_codes=ignore_codes, resume=resume, progress=progress)
    click.echo(json.dumps({"encoder": str(res.encoder_path), "class_codes": res.class_codes,
                           "tiles": res.n_tiles, "epochs_done": res.training.epochs_done,
                           "last": res.training.history[-1] if res.training.history else {}},
                          indent=2))


@segment.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("data_dir", required=False, type=click.Path(path_type=Path))
@click.option("--worldcereal", "worldcereal_dir", type=click.Path(path_type=Path),
              default=None, help="Evaluate on the WorldCereal patch tiles.")
@click.option("--split", default="test", show_default=True,
              help="H5 split list (all files when the list is absent).")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best",
              show_default=True, help="best.pt (falls back to last.pt when absent) or last.pt.")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--device", default="auto", show_default=True)
def evaluate(run_dir: Path, data_dir: Path | None, worldcereal_dir: Path | None, split: str,
             checkpoint: str, batch_size: int, device: str) -> None:
    """Score a run on H5 patches or the WorldCereal patch; prints metrics as JSON."""
    import torch

    from cropscope.data.readers.h5patches import ArrayPatchDataset, BandStats
    from cropscope.training.segmentation import evaluate_segmentation

    if (data_dir is None) == (worldcereal_dir is None):
        raise DataError("give exactly one of DATA_DIR or --worldcereal FOLDER")
    spec = _load_spec(run_dir)
    ckpt_path = run_dir / f"{checkpoint}.pt"
    if checkpoint == "best" and not ckpt_path.is_file():
        ckpt_path = run_dir / "last.pt"  # trained without validation data: no best.pt
    if not ckpt_path.is_file():
        raise ModelError(f"checkpoint not found: {ckpt_path}")
    names = tuple(spec["sources"])
    if worldcereal_dir is not None:
        tiles, _, _ = _worldcereal(worldcereal_dir, names, spec.get("tile_size") or 32,
                                   spec.get("target") or "croptype_cropland")
        ds: Any = ArrayPatchDataset(tiles)
    else:
        assert data_dir is not None
        ds, _ = _h5_datasets(data_dir, names, split, None)
    if spec.get("normalise"):
        ds.normalise = BandStats.from_dict(spec["normalise"])
    model = build_network(spec["model_spec"])
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    scores = evaluate_segmentation(model, ds, batch_size=batch_size, device=device,
                                   num_classes=spec["model_spec"]["num_classes"])
    scores["classes"] = spec.get("classes")
    scores["checkpoint"] = str(ckpt_path)
    scores["epoch"] = state.get("epoch")
    click.echo(json.dumps(scores, indent=2))


@segment.command("export-map")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Model directory for cropscope predict.")
@click.option("--bands", default=None,
              help="Comma-separated cube band names in the network's input order (default "
                   "for H2Crop runs: B2,B3,B4,B5,B6,B7,B8,B8A,B11,B12).")
@click.option("--weights", default="best", show_default=True,
              type=click.Choice(["best", "last"]))
@click.option("--context", type=int, default=32, show_default=True,
              help="Halo (pixels) of each map window; overlaps are cross-faded.")
@click.option("--level", type=int, default=-1, show_default=True,
              help="Hierarchy level to map (-1: the finest).")
def export_map(run_dir: Path, out_dir: Path, bands: str | None, weights: str, context: int,
               level: int) -> None:
    """Export a segment or h2crop run as a model for ``cropscope predict`` (scene model)."""
    from cropscope.models.segmentation_map import SegmentationMapModel

    names = [b.strip() for b in bands.split(",") if b.strip()] if bands else None
    model = SegmentationMapModel.from_run(run_dir, names, weights=weights, context=context,
                                          level=level)
    model.save(out_dir)
    log(f"wrote {out_dir} ({len(model.classes)} classes, bands {model.card.bands})")
