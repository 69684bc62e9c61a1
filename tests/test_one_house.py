"""One house: a run directory of every kind is written, reloaded and (for trainings that
checkpoint) resumed through the same code, and ``cropscope predict --model RUN`` maps with
every kind that can map — on the real WorldCereal NetCDF cube and the Sinop MODIS cube.

Kinds: pixel classifier, patch classifier, AgriFM segmentation, H2Crop, pretrained encoder.
The network runs are interrupted and resumed here; the classifier runs' resume (a staged run
and its checkpoint folder) is tested in ``tests/training/test_resume_runs.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from cropscope.cli.main import cli
from cropscope.data.patches import PatchSet, extract_patches
from cropscope.data.readers.open import open_cube_source
from cropscope.models import create_model
from cropscope.models.runs import load_run_model, save_classifier_run
from cropscope.models.segmentation_map import SegmentationRunModel
from cropscope.runs import open_run
from cropscope.training.rundir import train_run

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
WC_VARS = ["--variables", "S2-L2A-*", "--nodata", "65535", "--scale", "1e-4"]
AGRIFM_TINY = {"preset": None, "embed_dim": 8, "depths": [1, 1, 1, 1],
               "num_heads": [1, 2, 2, 4], "decoder_dim": 16, "patch_size": [2, 2, 2],
               "drop_path_rate": 0.0}
QUICK = {"epochs": 2, "batch_size": 4, "lr": 5e-3, "warmup_iters": 0, "device": "cpu"}


def _worldcereal(real_data_dir: Path) -> Path:
    folder = real_data_dir / "worldcereal_s2s1_patch"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


def _predict(run: Path, cube: Path, out: Path, *extra: str) -> np.ndarray:
    res = CliRunner().invoke(cli, ["predict", "--model", str(run), "--input", str(cube),
                                   "--out", str(out), "--tile", "48", *extra])
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as src:
        labels = src.read(1)
    for name in ("_probabilities.tif", "_uncertainty.tif", ".png", "_areas.json"):
        assert out.with_name(out.stem + name).is_file(), name
    return labels


def test_pixel_classifier_maps_sinop(real_data_dir: Path, tmp_path: Path) -> None:
    from cropscope.data.registry import load_dataset

    cube = real_data_dir / "sits_matogrosso" / "modis_sinop_ndvi_cube"
    if not cube.is_dir():
        pytest.skip(f"{cube} not found")
    ts = load_dataset("sits-matogrosso-ndvi")
    train_run(ts, "logreg", tmp_path / "run", holdout=0)
    run = open_run(tmp_path / "run")
    assert run.spec.kind == "classifier" and run.spec.time_grid.n_times == 12
    labels = _predict(tmp_path / "run", cube, tmp_path / "sinop.tif")
    valid = labels != 255
    assert valid.mean() > 0.9 and len(np.unique(labels[valid])) >= 2


def test_patch_classifier_maps_worldcereal(real_data_dir: Path, tmp_path: Path) -> None:
    from cropscope.data.readers.worldcereal import load_worldcereal_patch

    folder = _worldcereal(real_data_dir)
    nc = folder / "worldcereal_preprocessed_inputs.nc"
    source = open_cube_source(nc, variables="S2-L2A-*", nodata=65535, scale=1e-4)
    cube = source.read()
    patch = load_worldcereal_patch(folder, target="cropland")
    t, c, h, w = cube.shape
    image = cube.values.reshape(t * c, h, w)
    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(patch["label"] >= 0)
    pick = rng.choice(rows.size, 400, replace=False)
    values = extract_patches(image, rows[pick], cols[pick], 3)
    names = [f"{b}@t{i}" for i in range(t) for b in source.bands]
    train = PatchSet(values=np.nan_to_num(values), bands=names,
                     labels=patch["label"][rows[pick], cols[pick]],
                     classes=list(patch["classes"]))
    model = create_model("spectral-transformer", patch_size=3, spectral_grid=1, epochs=2,
                         spatial_dim=16, spectral_dim=16, out_dim=16, spatial_depth=1,
                         spectral_depth=1, device="cpu")
    model.fit(train)
    save_classifier_run(model, tmp_path / "run")
    again = load_run_model(tmp_path / "run")
    assert again.input_kind == "patches" and open_run(tmp_path / "run").spec.kind == "classifier"
    labels = _predict(tmp_path / "run", nc, tmp_path / "wc.tif", *WC_VARS)
    assert (labels != 255).mean() > 0.9


def test_agrifm_segmentation_trains_resumes_and_maps_worldcereal(real_data_dir: Path,
                                                                 tmp_path: Path) -> None:
    from cropscope.errors import ModelError
    from cropscope.training.segmentation_run import patch_datasets, train_segmentation_run

    folder = _worldcereal(real_data_dir)
    data = patch_datasets(worldcereal=folder, sources=("S2",), tile_size=25,
                          target="cropland")
    kwargs = {"sources": {"S2": 9}, "num_classes": len(data.classes), **AGRIFM_TINY}
    common = {"network": "agrifm", "network_kwargs": kwargs, "classes": data.classes,
              "bands": data.bands, "time_grid": data.time_grid,
              "normalisation": data.normalisation, "config": QUICK}
    out = tmp_path / "run"
    first = train_segmentation_run(data.train, out, stop_after=1, **common)
    assert first.run is None
    with pytest.raises(ModelError, match="not a complete run"):
        load_run_model(out)  # interrupted: not loadable
    resumed = train_segmentation_run(data.train, out, resume=True, **common)
    assert resumed.result.resumed_from == 1 and resumed.run is not None
    model = load_run_model(out)
    assert isinstance(model, SegmentationRunModel)
    assert model.bands[0] == "B02" and model.time_grid.n_times == 12
    nc = folder / "worldcereal_preprocessed_inputs.nc"
    cube_bands = ",".join(f"S2-L2A-{b}" for b in model.bands)
    labels = _predict(out, nc, tmp_path / "wc.tif", *WC_VARS, "--bands", cube_bands)
    assert (labels != 255).mean() > 0.9
    # without the band names the cube and the run do not match: one clear error
    res = CliRunner().invoke(cli, ["predict", "--model", str(out), "--input", str(nc),
                                   "--out", str(tmp_path / "x.tif"), *WC_VARS])
    assert res.exit_code != 0 and "bands" in str(res.exception)


def test_h2crop_run_trains_resumes_and_maps_worldcereal(real_data_dir: Path,
                                                        tmp_path: Path) -> None:
    """A two-level H2Crop S2 run (cropland, then crop type) on the real WorldCereal patch:
    interrupted, resumed, mapped by ``predict`` on the WorldCereal cube."""
    from cropscope.data.readers.h5patches import ArrayPatchDataset, compute_band_stats
    from cropscope.data.readers.worldcereal import load_worldcereal_patch, worldcereal_patches
    from cropscope.runs import TimeGrid
    from cropscope.training.segmentation_run import train_segmentation_run

    folder = _worldcereal(real_data_dir)
    coarse = load_worldcereal_patch(folder, target="cropland", compact=True)
    fine = load_worldcereal_patch(folder, target="croptype_cropland", compact=True)
    both = {**fine, "label": np.stack([coarse["label"], fine["label"]])}
    train = ArrayPatchDataset(worldcereal_patches(both, size=32, sources=("S2",)))
    train.normalise = compute_band_stats(train)
    levels = [len(coarse["classes"]), len(fine["classes"])]
    kwargs = {"levels": levels, "config": "S2", "months": 12, "s2_bands": 9,
              "hyper_bands": None, "decoder_dim": 16,
              "backbone": {"preset": None, "embed_dim": 8, "depths": [1, 1, 1, 1],
                           "num_heads": [1, 1, 2, 2]}}
    common = {"network": "h2crop", "kind": "h2crop", "network_kwargs": kwargs,
              "classes": [str(c) for c in fine["classes"]],
              "bands": {"S2": [str(b) for b in fine["bands"]["S2"]]},
              "time_grid": TimeGrid.from_dates(np.asarray(fine["dates"], "datetime64[D]")),
              "normalisation": train.normalise, "config": QUICK}
    out = tmp_path / "run"
    assert train_segmentation_run(train, out, stop_after=1, **common).run is None
    resumed = train_segmentation_run(train, out, resume=True, **common)
    assert resumed.result.resumed_from == 1 and resumed.run is not None
    assert open_run(out).spec.kind == "h2crop"
    model = load_run_model(out)
    assert isinstance(model, SegmentationRunModel) and model.classes == common["classes"]
    nc = folder / "worldcereal_preprocessed_inputs.nc"
    cube_bands = ",".join(f"S2-L2A-{b}" for b in model.bands)
    labels = _predict(out, nc, tmp_path / "h2.tif", *WC_VARS, "--bands", cube_bands)
    valid = labels != 255
    assert valid.mean() > 0.9 and labels[valid].max() < len(common["classes"])


def test_h2crop_run_maps_a_cube(tmp_path: Path) -> None:
    from cropscope.data.readers.cube import write_geotiff
    from cropscope.data.readers.h2crop import H2CROP_S2_BANDS, generate_h2crop
    from cropscope.training.h2crop import train_h2crop

    root = generate_h2crop(tmp_path / "data", 8, size=24, hyper_size=8, hyper_bands=12)
    quick = {"epochs": 1, "batch_size": 2, "device": "cpu"}
    train_h2crop(root, "S2", out_dir=tmp_path / "run", training=quick, normalise="train",
                 progress=False)
    assert open_run(tmp_path / "run").spec.kind == "h2crop"
    rng = np.random.default_rng(0)
    scene = tmp_path / "scene"
    scene.mkdir()
    from rasterio.transform import from_origin

    for month in range(6):
        data = rng.normal(0.2, 0.05, (10, 40, 40)).astype(np.float32)
        write_geotiff(data, scene / f"S2_2021-{month + 3:02d}-01.tif", crs="EPSG:32633",
                      transform=from_origin(500000, 5300000, 10, 10),
                      band_names=list(H2CROP_S2_BANDS))
    labels = _predict(tmp_path / "run", scene, tmp_path / "h2.tif")
    assert (labels != 255).all()


def test_pretrained_encoder_run_resumes_and_is_reloaded(tmp_path: Path) -> None:
    from cropscope.errors import ModelError
    from cropscope.runs import RunSpec
    from cropscope.training.segmentation_run import pretrain_encoder_run, pretrained_weights

    rng = np.random.default_rng(1)
    cube = {"S2": rng.normal(0, 1, (4, 3, 16, 16)).astype(np.float32)}
    codes = np.array([5, 9])[(cube["S2"][:, 0].mean(0) > 0).astype(int)]
    from rasterio.transform import from_origin

    with rasterio.open(tmp_path / "lc.tif", "w", driver="GTiff", width=16, height=16,
                       count=1, dtype="uint8", crs="EPSG:32631",
                       transform=from_origin(500000, 800000, 10, 10)) as dst:
        dst.write(codes.astype(np.uint8), 1)
    kwargs = dict(AGRIFM_TINY)
    common = {"bands": {"S2": ["B4", "B8", "B11"]}, "network_kwargs": kwargs, "tile_size": 8,
              "config": QUICK}
    first = pretrain_encoder_run(cube, tmp_path / "lc.tif", tmp_path / "pre", stop_after=1,
                                 **common)
    assert first.run is None
    with pytest.raises(ModelError, match="not a complete run"):
        open_run(tmp_path / "pre")
    res = pretrain_encoder_run(cube, tmp_path / "lc.tif", tmp_path / "pre", **common)
    assert res.run is not None and res.result.training.resumed_from == 1
    spec: RunSpec = open_run(tmp_path / "pre").spec
    assert spec.kind == "pretrained-encoder" and spec.classes == ["5", "9"]
    assert pretrained_weights(tmp_path / "pre").name == "weights.safetensors"
