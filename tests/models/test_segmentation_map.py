"""Segmentation runs exported as map-job scene models: a small AgriFM trained on a striped
scene maps it through run_map_job and the CLI; H2Crop runs export in the S2 configuration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cropscope.cli.main import cli
from cropscope.data.readers.cube import read_cube
from cropscope.data.readers.h5patches import ArrayPatchDataset, compute_band_stats, tile_sample
from cropscope.errors import DataError, ModelError
from cropscope.mapping import run_map_job
from cropscope.models import Classifier, list_models
from cropscope.models.segmentation_map import SegmentationMapModel, build_network
from cropscope.training.segmentation import train_segmentation
from tests.mapping.test_job import read_outputs, write_scene

SPEC = {"model": "agrifm", "preset": None, "sources": {"S2": 2}, "num_classes": 3,
        "model_kwargs": {"embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4],
                         "decoder_dim": 16, "patch_size": [2, 2, 2]}}
CLASSES = ["early", "mid", "late"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(scene folder, run directory): a small AgriFM fitted on the scene's stripes."""
    base = tmp_path_factory.mktemp("segmap")
    scene = write_scene(base / "scene")
    cube = read_cube(scene)
    x = cube.values.astype(np.float32)  # [T, C, H, W]
    truth = np.minimum(np.arange(x.shape[-1]) * 3 // x.shape[-1], 2)[None].repeat(
        x.shape[-2], axis=0)
    samples = [({"S2": s["S2"]}, lab) for s, lab in tile_sample({"S2": x}, truth, 16, 8)]
    raw = ArrayPatchDataset(samples)
    stats = compute_band_stats(raw)
    train = ArrayPatchDataset(samples, normalise=stats)
    torch.manual_seed(0)
    net = build_network(SPEC)
    run = base / "run"
    train_segmentation(net, train, config={"epochs": 25, "batch_size": 8, "lr": 1e-2,
                                           "warmup_iters": 0, "device": "cpu"},
                       out_dir=run, progress=False)
    spec = {"model_spec": SPEC, "classes": CLASSES, "sources": ["S2"],
            "normalise": stats.to_dict()}
    (run / "segment.json").write_text(json.dumps(spec))
    return scene, run


def test_export_predicts_like_the_network(trained: tuple[Path, Path], tmp_path: Path) -> None:
    scene, run = trained
    model = SegmentationMapModel.from_run(run, ["B4", "B8"], context=8)
    assert model.input_kind == "scene" and model.classes == CLASSES
    assert model.card.n_times == 0 and model.context == 8
    x = read_cube(scene).values.astype(np.float32)
    proba = model.predict_proba_scene(x)
    assert proba.shape == (3, *x.shape[-2:])
    np.testing.assert_allclose(proba.sum(0), 1.0, atol=1e-5)
    # the network itself, on the normalised input with NaN set to the band mean (0)
    mean = np.asarray(model.card.norm_mean, np.float32)[None, :, None, None]
    std = np.asarray(model.card.norm_std, np.float32)[None, :, None, None]
    z = np.nan_to_num((x - mean) / std, nan=0.0)
    with torch.no_grad():
        direct = model._network({"S2": torch.from_numpy(z)[None]}).softmax(1)[0].numpy()
    np.testing.assert_allclose(proba, direct, atol=1e-5)
    model.save(tmp_path / "m")
    again = Classifier.load(tmp_path / "m")
    assert isinstance(again, SegmentationMapModel)
    np.testing.assert_allclose(again.predict_proba_scene(x), proba, atol=1e-6)
    assert "segmentation-run" not in list_models()  # not fitted on pixel series
    with pytest.raises(ModelError, match="network"):
        again.fit(None)  # type: ignore[arg-type]


def test_map_job_with_the_exported_model(trained: tuple[Path, Path], tmp_path: Path) -> None:
    scene, run = trained
    model = SegmentationMapModel.from_run(run, ["B4", "B8"], context=8)
    whole = model.predict_proba_scene(read_cube(scene).values.astype(np.float32)).argmax(0)
    truth = np.minimum(np.arange(whole.shape[1]) * 3 // whole.shape[1], 2)[None]
    assert (whole == truth).mean() > 0.9  # it learnt the stripes
    result = run_map_job(model, scene, tmp_path / "job", tile=24, progress=False)
    labels = read_outputs(result.paths)["labels"][0]
    seen = labels != 255
    assert seen.mean() > 0.9
    # tiles with a halo, cross-faded: the map agrees with the whole-scene prediction
    assert (labels[seen] == whole[seen]).mean() > 0.95


def test_cli_export_then_predict(trained: tuple[Path, Path], tmp_path: Path) -> None:
    scene, run = trained
    runner = CliRunner()
    res = runner.invoke(cli, ["segment", "export-map", str(run), "--out", str(tmp_path / "m"),
                              "--bands", "B4,B8", "--context", "8"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["predict", "--model", str(tmp_path / "m"), "--input", str(scene),
                              "--out", str(tmp_path / "map.tif"), "--tile", "32"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    import rasterio

    with rasterio.open(tmp_path / "map.tif") as src:
        labels = src.read(1)
    with rasterio.open(tmp_path / "map_probabilities.tif") as src:
        assert src.count == 3
    assert set(np.unique(labels)) <= {0, 1, 2, 255} and (labels != 255).mean() > 0.9


def test_clear_errors(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = trained
    with pytest.raises(DataError, match="3 names"):
        SegmentationMapModel.from_run(run, ["B4", "B8", "B11"])
    with pytest.raises(DataError, match="band names"):
        SegmentationMapModel.from_run(run)
    with pytest.raises(DataError, match="not a segmentation run"):
        SegmentationMapModel.from_run(tmp_path)
    multi = tmp_path / "multi"
    multi.mkdir()
    spec = json.loads((run / "segment.json").read_text())
    spec["sources"] = ["S2", "S1"]
    (multi / "segment.json").write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="single-source"):
        SegmentationMapModel.from_run(multi, ["B4", "B8"])


def test_h2crop_runs_export_in_the_s2_configuration(tmp_path: Path) -> None:
    from cropscope.data.readers.h2crop import generate_h2crop
    from cropscope.training.h2crop import train_h2crop

    root = generate_h2crop(tmp_path / "data", 8, size=24, hyper_size=8, hyper_bands=12)
    quick = {"epochs": 1, "batch_size": 2, "device": "cpu"}
    train_h2crop(root, "S2", out_dir=tmp_path / "s2", training=quick, normalise="train",
                 progress=False)
    model = SegmentationMapModel.from_run(tmp_path / "s2", context=8)
    assert model.card.bands[0] == "B2" and len(model.card.bands) == 10
    assert model.classes[0] == "background" and len(model.classes) == 7  # 6 leaves + bg
    assert model.card.norm_mean is not None and len(model.card.norm_mean) == 10
    proba = model.predict_proba_scene(np.random.default_rng(0).normal(
        size=(6, 10, 24, 24)).astype(np.float32))
    assert proba.shape == (7, 24, 24)
    train_h2crop(root, "S2+H", out_dir=tmp_path / "s2h", training=quick, normalise="train",
                 progress=False)
    with pytest.raises(ModelError, match="only the S2 configuration"):
        SegmentationMapModel.from_run(tmp_path / "s2h")
