"""Segmentation networks trained into run directories (the format of :mod:`cropscope.runs`).

:func:`train_segmentation_run` is what ``cropscope segment train`` runs, and what a Python
user calls: a registered network (``agrifm`` by default) trained on a patch dataset with
:func:`~cropscope.engine.segmentation.train_segmentation` (the Lightning engine), its
checkpoints in the run directory as it goes (resumable), and, once training is done, the
selected weights as ``weights.safetensors``, ``run.json`` (kind ``segmentation``: network
name and keyword arguments, classes, bands per source, time grid, normalisation, training
record) and the manifest. Until then the folder is not a loadable run.

:func:`finish_network_run` does the last step for any network-based kind (``segmentation``,
``h2crop``, ``pretrained-encoder``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cropscope.errors import ModelError
from cropscope.io import to_jsonable
from cropscope.models.runs import package_versions
from cropscope.runs import (
    RUN_FILE,
    RunDir,
    RunSpec,
    TimeGrid,
    begin_run,
    finish_run,
    first_process,
    open_run,
)

__all__ = ["OFFICIAL_NETWORKS", "SegmentationRun", "finish_network_run",
           "import_official_run", "start_network_run", "train_segmentation_run"]

WEIGHTS_FILE = "weights.safetensors"


@dataclass
class SegmentationRun:
    """What :func:`train_segmentation_run` produced."""

    run: RunDir | None
    result: Any
    network: Any


def start_network_run(out_dir: str | Path, spec: RunSpec, *, resume: bool) -> Path:
    """Open ``out_dir`` for a (resumable) training of ``spec``'s network.

    Removes the manifest (the folder is not loadable until :func:`finish_network_run`),
    refuses to resume a run of another network, and records ``spec`` as ``run.json``.
    """
    out = Path(out_dir)
    if not first_process():
        return out  # under DDP only the first process writes
    previous = out / RUN_FILE
    if resume and previous.is_file():
        old = RunSpec.read(previous)
        if (old.kind, old.network) != (spec.kind, spec.network):
            raise ModelError(f"{out} holds a run of another network ({old.name} "
                             f"{old.network}); use --no-resume or another --out")
    begin_run(out)
    from cropscope.io import write_json

    write_json(out / RUN_FILE, spec.to_dict())
    return out


def finish_network_run(out_dir: str | Path, spec: RunSpec, network: Any) -> RunDir:
    """Write the network's weights, ``run.json`` and the manifest: the run is complete."""
    from safetensors.torch import save_file

    from cropscope.io import atomic_path

    out = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    return finish_run(out, spec)


def network_spec(kind: str, network: str, kwargs: Mapping[str, Any], *,
                 classes: Sequence[str], bands: Mapping[str, Sequence[str]],
                 time_grid: TimeGrid, normalisation: Mapping[str, Any] | None,
                 training: Mapping[str, Any] | None = None, data: str = "",
                 extra: Mapping[str, Any] | None = None) -> RunSpec:
    """The ``run.json`` of a network-based run."""
    return RunSpec(
        kind=kind, network={"name": network, "kwargs": to_jsonable(dict(kwargs))},
        classes=[str(c) for c in classes],
        sources={src: {"bands": [str(b) for b in names], "wavelengths": None}
                 for src, names in bands.items()},
        time_grid=time_grid,
        normalisation=None if normalisation is None else to_jsonable(dict(normalisation)),
        training=to_jsonable(dict(training or {})), versions=package_versions(), data=data,
        extra=to_jsonable(dict(extra or {})))


def train_segmentation_run(
    train_dataset: Any,
    out_dir: str | Path,
    *,
    network: str = "agrifm",
    network_kwargs: Mapping[str, Any] | None = None,
    classes: Sequence[str],
    bands: Mapping[str, Sequence[str]],
    time_grid: TimeGrid | None = None,
    val_dataset: Any = None,
    normalisation: Any = None,
    config: Mapping[str, Any] | None = None,
    resume: bool = True,
    progress: bool = False,
    pretrained: str | Path | None = None,
    data: str = "",
    kind: str = "segmentation",
    stop_after: int | None = None,
    extra: Mapping[str, Any] | None = None,
    recipe: str = "default",
) -> SegmentationRun:
    """Train a registered segmentation network on ``train_dataset`` into a run directory.

    ``bands``: band names per source, in the order of the dataset's channels (the map job
    matches cube bands by these names); ``classes``: one name per output class;
    ``normalisation``: the :class:`~cropscope.data.readers.h5patches.BandStats` the
    datasets were standardised with (stored for inference); ``pretrained``: a
    ``pretrained-encoder`` run (or its weights file) to start from, head excluded;
    ``config``: :class:`~cropscope.engine.segmentation.SegmentationConfig` options
    (``epochs``, ``lr``, ``devices``, ``strategy``, ...) on top of ``recipe``: ``"default"``
    (:class:`~cropscope.engine.segmentation.SegmentationConfig`'s defaults) or ``"official"``
    (the network's official recipe, :func:`~cropscope.engine.recipe.official_recipe`; AgriFM
    and H2Crop networks). ``stop_after`` stops after that many epochs without finishing the
    run (resume later).
    """
    import torch

    from cropscope.engine.segmentation import SegmentationConfig, train_segmentation
    from cropscope.models.networks import create_network

    kwargs = dict(network_kwargs or {})
    if recipe == "official":
        from cropscope.engine.recipe import official_recipe

        cfg = official_recipe(network, **dict(config or {}))
    elif recipe == "default":
        cfg = SegmentationConfig.from_dict(dict(config or {}))
    else:
        raise ModelError(f"recipe must be 'default' or 'official', got {recipe!r}")
    norm = normalisation.to_dict() if hasattr(normalisation, "to_dict") else normalisation
    spec = network_spec(kind, network, kwargs, classes=classes, bands=bands,
                        time_grid=time_grid or TimeGrid.any(), normalisation=norm,
                        training={"config": cfg.to_dict()}, data=data, extra=extra)
    torch.manual_seed(cfg.seed)
    net = create_network(network, **kwargs)  # options it refuses leave no run folder behind
    out = start_network_run(out_dir, spec, resume=resume)
    from cropscope.engine.checkpoints import has_last

    if pretrained is not None and not (resume and has_last(out)):
        from cropscope.training.pretraining import load_pretrained

        load_pretrained(net, pretrained_weights(pretrained))
    result = train_segmentation(net, train_dataset, val_dataset, config=cfg, out_dir=out,
                                resume=resume, progress=progress, stop_after=stop_after)
    if result.epochs_done < cfg.epochs or not first_process():
        return SegmentationRun(None, result, net)
    if val_dataset is not None and len(val_dataset) > 0:
        from cropscope.engine.checkpoints import read_checkpoint_weights

        net.load_state_dict(read_checkpoint_weights(out, "best")[0])
    spec.training.update(to_jsonable({"best_epoch": result.best_epoch,
                                    "epochs_done": result.epochs_done,
                                    "history": result.history}))
    last = result.history[-1] if result.history else {}
    spec.metrics = to_jsonable({k: v for k, v in last.items() if k.startswith("val_")}) or None
    return SegmentationRun(finish_network_run(out, spec, net), result, net)


@dataclass
class PatchData:
    """Training data of a segmentation run, as :func:`patch_datasets` opens it."""

    train: Any
    val: Any
    classes: list[str]
    bands: dict[str, list[str]]
    time_grid: TimeGrid
    data: str
    normalisation: Any = None


def patch_datasets(
    data_dir: str | Path | None = None,
    *,
    worldcereal: str | Path | None = None,
    sources: Sequence[str] | None = None,
    train_split: str | None = "train",
    val_split: str | None = "val",
    tile_size: int = 32,
    target: str = "croptype_cropland",
    bands: Mapping[str, Sequence[str]] | None = None,
    normalise: bool = True,
) -> PatchData:
    """Open the training data of ``cropscope segment train``: an H5 patch folder
    (``data_dir``, splits from its lists) or the WorldCereal S2/S1 patch cut into tiles.

    Band names come from the data when it has them (WorldCereal), else from ``bands``
    (``{source: names}``), else ``band_1..band_C``. With ``normalise`` every band is
    standardised with statistics of the training data.
    """
    import numpy as np

    from cropscope.data.readers.h5patches import (
        ArrayPatchDataset,
        H5PatchDataset,
        compute_band_stats,
    )
    from cropscope.errors import DataError

    if (data_dir is None) == (worldcereal is None):
        raise DataError("give exactly one of DATA_DIR or --worldcereal FOLDER")
    if worldcereal is not None:
        from cropscope.data.readers.worldcereal import (
            load_worldcereal_patch,
            worldcereal_patches,
        )

        names = tuple(sources or ("S2", "S1"))
        patch = load_worldcereal_patch(Path(worldcereal), target=target, compact=True)
        tiles = worldcereal_patches(patch, size=tile_size, sources=names)
        train: Any = ArrayPatchDataset(tiles)
        val: Any = None
        classes = [str(c) for c in patch["classes"]]
        found = {k: [str(b) for b in patch["bands"][k]] for k in names}
        grid = TimeGrid.from_dates(np.asarray(patch["dates"], dtype="datetime64[D]"))
        desc = f"worldcereal:{worldcereal}"
    else:
        folder = Path(str(data_dir))
        names = tuple(sources or ("S2",))

        def has(split: str | None) -> bool:
            return split is not None and any(
                (folder / sub / f"{split}.txt").is_file() for sub in ("", "data_list"))

        lists = sorted({p.stem for p in (folder / "data_list").glob("*.txt")}
                       | {n for n in ("train", "val", "test") if has(n)})  # fmt: skip
        if train_split is not None and lists and not has(train_split):
            raise DataError(f"{folder} has no split list {train_split!r} (it has "
                            f"{', '.join(lists)}); name one with --train-split")  # fmt: skip
        train = H5PatchDataset(folder, train_split if has(train_split) else None, names)
        val = H5PatchDataset(folder, val_split, names) if has(val_split) else None
        top = -1
        for _, label in train.iter_raw():
            top = max(top, int(np.max(label)))
        if top < 0:
            raise DataError("the training labels hold no class (all ignore)")
        classes = [str(i) for i in range(top + 1)]
        first, _ = train.read_raw(0)
        found = {k: [f"band_{i + 1}" for i in range(int(v.shape[1]))] for k, v in first.items()}
        grid = TimeGrid(kind="steps", n_times=int(next(iter(first.values())).shape[0]))
        desc = f"h5:{folder}"
    for src, given in (bands or {}).items():
        if src not in found:
            raise DataError(f"--bands names source {src!r}; the data has {list(found)}")
        if len(given) != len(found[src]):
            raise DataError(f"{len(given)} band names for source {src!r}, which has "
                            f"{len(found[src])} bands")
        found[src] = [str(b) for b in given]
    stats = compute_band_stats(train) if normalise else None
    train.normalise = stats
    if val is not None:
        val.normalise = stats
    return PatchData(train, val, classes, found, grid, desc, stats)


def open_network_run(run_dir: str | Path, weights: str = "final") -> tuple[Any, RunDir]:
    """The trained network of a complete run (``weights``: ``"final"`` — the selected
    weights — ``"best"`` or ``"last"`` checkpoint), in eval mode, with its run."""
    from cropscope.models.segmentation_map import load_run_network
    from cropscope.runs import open_run

    run = open_run(run_dir)
    if run.spec.network is None:
        raise ModelError(f"{run.path} is a {run.spec.kind} run without a network")
    state = None
    if weights != "final":
        from cropscope.engine.checkpoints import read_checkpoint_weights

        state = read_checkpoint_weights(run.path, weights)[0]
    return load_run_network(run, state), run


@dataclass
class PretrainRun:
    """What :func:`pretrain_encoder_run` produced."""

    run: RunDir | None
    result: Any


def pretrain_encoder_run(
    cube: Mapping[str, Any],
    raster: str | Path,
    out_dir: str | Path,
    *,
    bands: Mapping[str, Sequence[str]],
    band: int = 1,
    crs: Any = None,
    transform: Any = None,
    network: str = "agrifm",
    network_kwargs: Mapping[str, Any] | None = None,
    tile_size: int = 32,
    stride: int | None = None,
    objective: str = "pixel",
    ignore_codes: Sequence[int] = (),
    normalise: bool = True,
    config: Mapping[str, Any] | None = None,
    resume: bool = True,
    progress: bool = False,
    stop_after: int | None = None,
) -> PretrainRun:
    """Supervised pretraining on a class raster into a ``pretrained-encoder`` run.

    ``cube``: ``{source: float32 [T, C, H, W]}``; ``raster``: the class GeoTIFF (its band
    ``band``), reprojected onto the cube when ``crs``/``transform`` are given. The run's
    ``weights.safetensors`` hold the whole network; ``segment train --pretrained RUN`` loads
    all but its head. ``stop_after`` stops after that many epochs without finishing the run
    (``resume=True`` continues it later).
    """
    import torch

    from cropscope.data.readers.h5patches import compute_band_stats
    from cropscope.engine.segmentation import SegmentationConfig
    from cropscope.errors import DataError
    from cropscope.models.networks import create_network
    from cropscope.training.pretraining import (
        encode_classes,
        pretrain_segmentation,
        read_class_raster,
    )

    shape = tuple(next(iter(cube.values())).shape[-2:])
    if transform is not None:
        codes = read_class_raster(raster, band, crs=crs, transform=transform, shape=shape)
    else:
        codes = read_class_raster(raster, band)
        if codes.shape != shape:
            raise DataError(f"raster {codes.shape} and cube {shape} differ and the cube has "
                            "no transform to reproject onto")
    _, code_list = encode_classes(codes, ignore_codes)
    stats = compute_band_stats([(dict(cube), codes)]) if normalise else None
    kwargs = {"sources": {k: int(v.shape[1]) for k, v in cube.items()},
              "num_classes": len(code_list), **dict(network_kwargs or {})}
    cfg = SegmentationConfig.from_dict(dict(config or {}))
    spec = network_spec("pretrained-encoder", network, kwargs,
                        classes=[str(c) for c in code_list], bands=bands,
                        time_grid=TimeGrid(kind="steps",
                                           n_times=int(next(iter(cube.values())).shape[0])),
                        normalisation=None if stats is None else stats.to_dict(),
                        training={"config": cfg.to_dict(), "objective": objective},
                        data=f"pretrain:{raster}")
    torch.manual_seed(cfg.seed)
    net = create_network(network, **kwargs)
    out = start_network_run(out_dir, spec, resume=resume)
    res = pretrain_segmentation(net, cube, codes, out, size=tile_size, stride=stride,
                                objective=objective, config=cfg, normalise=stats,
                                ignore_codes=ignore_codes, resume=resume, progress=progress,
                                stop_after=stop_after)
    if res.training.epochs_done < cfg.epochs or not first_process():
        return PretrainRun(None, res)
    spec.training.update(to_jsonable({"epochs_done": res.training.epochs_done,
                                    "head_prefixes": res.head_prefixes,
                                    "history": res.training.history}))
    return PretrainRun(finish_network_run(out, spec, net), res)


def pretrained_weights(path: str | Path) -> Path:
    """The weights file of a ``pretrained-encoder`` (or any network) run, verified; a plain
    file is returned as is."""
    from cropscope.runs import open_run

    path = Path(path)
    if path.is_dir():
        run = open_run(path)
        if run.spec.network is None:
            raise ModelError(f"{path} is a {run.spec.kind} run without network weights")
        weights = run.file(WEIGHTS_FILE)
        assert weights is not None
        return weights
    return path


def evaluate_segmentation_run(
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    *,
    worldcereal: str | Path | None = None,
    split: str = "test",
    weights: str = "final",
    batch_size: int = 4,
    device: str = "auto",
) -> dict[str, Any]:
    """Scores of a segmentation run on H5 patches (``split``) or the WorldCereal patch."""
    import numpy as np

    from cropscope.data.readers.h5patches import ArrayPatchDataset, BandStats, H5PatchDataset
    from cropscope.engine.segmentation import evaluate_segmentation
    from cropscope.errors import DataError

    if (data_dir is None) == (worldcereal is None):
        raise DataError("give exactly one of DATA_DIR or --worldcereal FOLDER")
    net, run = open_network_run(run_dir, weights)
    spec = run.spec
    names = tuple(spec.sources)
    if worldcereal is not None:
        from cropscope.data.readers.worldcereal import (
            load_worldcereal_patch,
            worldcereal_patches,
        )

        patch = load_worldcereal_patch(Path(worldcereal), compact=True,
                                       target=str(spec.extra.get("target",
                                                                 "croptype_cropland")))
        size = int(spec.extra.get("tile_size", 32))
        ds: Any = ArrayPatchDataset(worldcereal_patches(patch, size=size, sources=names))
    else:
        folder = Path(str(data_dir))
        has = any((folder / sub / f"{split}.txt").is_file() for sub in ("", "data_list"))
        ds = H5PatchDataset(folder, split if has else None, names)
    if spec.normalisation is not None:
        ds.normalise = BandStats.from_dict(spec.normalisation)
    scores = evaluate_segmentation(net, ds, batch_size=batch_size, device=device,
                                   num_classes=len(spec.classes))
    scores = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in scores.items()}
    scores["classes"] = spec.classes
    scores["weights"] = weights
    return scores


#: the networks whose official checkpoints can be imported, and the run kind they make
OFFICIAL_NETWORKS = {"agrifm": "segmentation", "agrifm-official": "segmentation",
                     "h2crop": "h2crop", "h2crop-official": "h2crop"}


def import_official_run(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    network: str,
    network_kwargs: Mapping[str, Any],
    classes: Sequence[str] | None = None,
    bands: Mapping[str, Sequence[str]] | None = None,
    time_grid: TimeGrid | None = None,
    normalisation: Any = None,
) -> RunDir:
    """A run directory from an official AgriFM / H2Crop checkpoint (a training ``.pth``,
    read without mmengine, or a state dict), so ``predict``, ``evaluate`` and fine-tuning
    (``pretrained=RUN``) take it like a run trained here.

    ``network_kwargs``: the checkpoint's configuration (a checkpoint does not carry it in a
    form that can be read without running code); ``compat="official"`` is added, so the
    network computes as the official code. Every weight must fit (0 missing, 0 unexpected,
    0 mis-shaped keys) or nothing is written. ``classes`` default to ``class_0..``;
    ``bands`` to the network's registered default bands.
    """
    from cropscope.models.checkpoint_reader import read_checkpoint
    from cropscope.models.networks import create_network, network_config
    from cropscope.runs import staged_run

    if network not in OFFICIAL_NETWORKS:
        raise ModelError(f"official checkpoints can be imported for {sorted(OFFICIAL_NETWORKS)}"
                         f", not {network!r}")
    kwargs = {**dict(network_kwargs), "compat": "official"}
    net = create_network(network, **kwargs)
    ck = read_checkpoint(checkpoint)
    if network.startswith("agrifm"):
        from cropscope.models.agrifm import AgriFM
        from cropscope.models.agrifm_checkpoint import load_agrifm_checkpoint

        assert isinstance(net, AgriFM)
        load_agrifm_checkpoint(net, ck.state_dict)
    else:
        from cropscope.models.h2crop_checkpoint import load_h2crop_checkpoint

        load_h2crop_checkpoint(net, ck.state_dict)
    levels = list(getattr(net, "levels", []))
    n_out = levels[-1] if levels else 0
    names = [str(c) for c in classes] if classes is not None else \
        [f"class_{i}" for i in range(n_out)]
    if n_out and len(names) != n_out:
        raise ModelError(f"{len(names)} class names for a network with {n_out} outputs")
    config = network_config(network)
    default_bands: Mapping[str, Sequence[str]] = config.bands or {}
    band_names = {str(k): [str(b) for b in v] for k, v in (bands or default_bands).items()}
    in_chans = dict(getattr(net, "in_chans", {}))
    for src, chans in in_chans.items():
        if src in band_names and len(band_names[src]) != chans:
            raise ModelError(f"{len(band_names[src])} band names for source {src!r}, which "
                             f"has {chans} bands")
    spec = network_spec(
        OFFICIAL_NETWORKS[network], network, kwargs, classes=names,
        bands={s: band_names[s] for s in in_chans if s in band_names} or band_names,
        time_grid=time_grid or TimeGrid.any(), normalisation=normalisation,
        training={"imported_from": Path(checkpoint).name, "layout": ck.layout,
                  "official_meta": {k: v for k, v in ck.meta.items()
                                    if k in ("epoch", "iter", "seed", "mmengine_version")}},
        data=f"official:{Path(checkpoint).name}")
    with staged_run(out_dir) as folder:
        finish_network_run(folder, spec, net)
    return open_run(out_dir)
