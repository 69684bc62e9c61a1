"""Segmentation runs are map models as they are: a small AgriFM trained on a striped scene
into a run directory maps it through run_map_job and ``cropscope predict --model RUN`` (no
export step); H2Crop runs map in the S2 configuration; damaged runs are refused."""

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
from cropscope.models.runs import load_run_model
from cropscope.models.segmentation_map import SegmentationRunModel
from cropscope.runs import MANIFEST_FILE, TimeGrid
from cropscope.training.segmentation_run import train_segmentation_run
from tests.mapping.test_job import read_outputs, write_scene

KWARGS = {"preset": None, "sources": {"S2": 2}, "num_classes": 3, "embed_dim": 8,
          "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4], "decoder_dim": 16,
          "patch_size": [2, 2, 2]}
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
    stats = compute_band_stats(ArrayPatchDataset(samples))
    train = ArrayPatchDataset(samples, normalise=stats)
    run = base / "run"
    train_segmentation_run(
        train, run, network="agrifm", network_kwargs=KWARGS, classes=CLASSES,
        bands={"S2": ["B4", "B8"]}, time_grid=TimeGrid.from_dates(cube["time"].values),
        normalisation=stats, config={"epochs": 25, "batch_size": 8, "lr": 1e-2,
                                     "warmup_iters": 0, "device": "cpu"})
    return scene, run


def test_run_predicts_like_the_network(trained: tuple[Path, Path]) -> None:
    scene, run = trained
    model = load_run_model(run)
    assert isinstance(model, SegmentationRunModel)
    assert model.input_kind == "scene" and model.classes == CLASSES
    assert model.bands == ["B4", "B8"] and model.time_grid.kind == "dates"
    x = read_cube(scene).values.astype(np.float32)
    proba = model.predict_scene(x)
    assert proba.shape == (3, *x.shape[-2:])
    np.testing.assert_allclose(proba.sum(0), 1.0, atol=1e-5)
    # the network itself, on the normalised input with NaN set to the band mean (0)
    norm = model.spec.normalisation
    assert norm is not None
    mean = np.asarray(norm["mean"]["S2"], np.float32)[None, :, None, None]
    std = np.asarray(norm["std"]["S2"], np.float32)[None, :, None, None]
    z = np.nan_to_num((x - mean) / std, nan=0.0)
    with torch.no_grad():
        direct = model.network({"S2": torch.from_numpy(z)[None]}).softmax(1)[0].numpy()
    np.testing.assert_allclose(proba, direct, atol=1e-5)


def test_map_job_with_the_run(trained: tuple[Path, Path], tmp_path: Path) -> None:
    scene, run = trained
    model = SegmentationRunModel.from_run(run, context=8)
    proba = model.predict_scene(read_cube(scene).values.astype(np.float32))
    whole = proba.argmax(0)
    truth = np.minimum(np.arange(whole.shape[1]) * 3 // whole.shape[1], 2)[None]
    assert (whole == truth).mean() > 0.9  # it learnt the stripes
    result = run_map_job(model, scene, tmp_path / "job", tile=24, progress=False)
    labels = read_outputs(result.paths)["labels"][0]
    seen = labels != 255
    assert seen.mean() > 0.9
    # tiles put back in place: the map agrees with the whole-scene prediction. Where that
    # prediction is unsure (stripe borders of this small, briefly trained network, whose
    # training differs with the torch thread count) a tile's narrower context may tip the
    # class; where it is sure, it must not. (Halo and cross-fade: tests/mapping.)
    sure = seen & (proba.max(0) > 0.9)
    assert sure.sum() > 0.5 * seen.sum()
    assert (labels[sure] == whole[sure]).mean() > 0.98
    assert (labels[seen] == whole[seen]).mean() > 0.9


def test_cli_predict_with_the_run_directly(trained: tuple[Path, Path], tmp_path: Path) -> None:
    scene, run = trained
    res = CliRunner().invoke(cli, ["predict", "--model", str(run), "--input", str(scene),
                                   "--out", str(tmp_path / "map.tif"), "--tile", "32"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    import rasterio

    with rasterio.open(tmp_path / "map.tif") as src:
        labels = src.read(1)
    with rasterio.open(tmp_path / "map_probabilities.tif") as src:
        assert src.count == 3
    assert set(np.unique(labels)) <= {0, 1, 2, 255} and (labels != 255).mean() > 0.9


def _copy(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to)
    return to


def test_damaged_or_hostile_runs_are_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = trained
    with pytest.raises(ModelError, match="not a cropscope run"):
        load_run_model(tmp_path)
    # tampered weights: the checksum differs
    bad = _copy(run, tmp_path / "tampered")
    data = bytearray((bad / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (bad / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"checksum of weights\.safetensors"):
        load_run_model(bad)
    # unfinished: no manifest
    bad = _copy(run, tmp_path / "unfinished")
    (bad / MANIFEST_FILE).unlink()
    with pytest.raises(ModelError, match="not a complete run"):
        load_run_model(bad)
    # a network named by an import path, with the manifest forged to match: nothing runs
    from cropscope.runs.store import _write_manifest

    bad = _copy(run, tmp_path / "hostile")
    spec = json.loads((bad / "run.json").read_text())
    spec["network"]["name"] = "os:system"
    (bad / "run.json").write_text(json.dumps(spec))
    _write_manifest(bad)
    with pytest.raises(ModelError, match="invalid network name"):
        load_run_model(bad)
    spec["network"]["name"] = "no-such-network"
    (bad / "run.json").write_text(json.dumps(spec))
    _write_manifest(bad)
    with pytest.raises(ModelError, match="unknown network"):
        load_run_model(bad)
    # a multi-source run cannot map from one cube
    spec = json.loads((run / "run.json").read_text())
    spec["sources"]["S1"] = {"bands": ["VV"], "wavelengths": None}
    (bad / "run.json").write_text(json.dumps(spec))
    _write_manifest(bad)
    with pytest.raises(ModelError, match="single-source"):
        load_run_model(bad)


def test_cube_with_another_season_is_refused(trained: tuple[Path, Path], tmp_path: Path
                                             ) -> None:
    _, run = trained
    model = SegmentationRunModel.from_run(run, context=8)
    dates = np.asarray(model.time_grid.dates, dtype="datetime64[D]")
    from cropscope.mapping.contract import check_time_grid

    check_time_grid(model, dates + np.timedelta64(365, "D"))  # next year: same season
    with pytest.raises(DataError, match="season"):
        check_time_grid(model, dates + np.timedelta64(120, "D"))
    with pytest.raises(DataError, match="--composite"):
        check_time_grid(model, dates[:-1])


def test_h2crop_runs_map_in_the_s2_configuration(tmp_path: Path) -> None:
    from cropscope.data.readers.h2crop import generate_h2crop
    from cropscope.training.h2crop import train_h2crop

    root = generate_h2crop(tmp_path / "data", 8, size=24, hyper_size=8, hyper_bands=12)
    quick = {"epochs": 1, "batch_size": 2, "device": "cpu"}
    train_h2crop(root, "S2", out_dir=tmp_path / "s2", training=quick, normalise="train",
                 progress=False)
    model = SegmentationRunModel.from_run(tmp_path / "s2", context=8)
    assert model.bands[0] == "B2" and len(model.bands) == 10
    assert model.classes[0] == "background" and len(model.classes) == 7  # 6 leaves + bg
    proba = model.predict_scene(np.random.default_rng(0).normal(
        size=(6, 10, 24, 24)).astype(np.float32))
    assert proba.shape == (7, 24, 24)
    train_h2crop(root, "S2+H", out_dir=tmp_path / "s2h", training=quick, normalise="train",
                 progress=False)
    with pytest.raises(ModelError, match=r"only the S2 configuration|single-source"):
        SegmentationRunModel.from_run(tmp_path / "s2h")


class _FailsAbove(torch.nn.Module):
    """The network, raising CUDA's out-of-memory error for more than ``limit`` windows."""

    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.failures = inner, limit, 0

    def forward(self, inputs: dict) -> object:
        if len(next(iter(inputs.values()))) > self.limit:
            self.failures += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")
        return self.inner(inputs)


def test_windows_predict_in_batches(trained: tuple[Path, Path]) -> None:
    from cropscope.engine.inference import InferenceMemoryError, InferenceSettings

    scene, run = trained
    model = load_run_model(run)
    x = read_cube(scene).values.astype(np.float32)  # [T, C, H, W], with NaN gaps
    s = 16
    windows = np.stack([x[..., :s, :s], x[..., 8 : 8 + s, 4 : 4 + s], x[..., -s:, -s:]])
    one_by_one = np.stack([model.predict_scene(w) for w in windows])
    assert one_by_one.shape == (3, 3, s, s)
    model.set_inference(InferenceSettings(device="cpu", batch_size=1))
    np.testing.assert_array_equal(model.predict_scenes(windows), one_by_one)
    model.set_inference(InferenceSettings(device="cpu", batch_size=3))
    together = model.predict_scenes(windows)
    np.testing.assert_allclose(together, one_by_one, rtol=0, atol=1e-5)
    assert model.predict_scenes(windows[:0]).shape == (0, 3, s, s)
    # out of memory with three windows (3 // 2 = 1): one at a time, the same numbers
    model.network = _FailsAbove(model.network, limit=1)
    np.testing.assert_array_equal(model.predict_scenes(windows), one_by_one)
    assert model.network.failures == 1
    # not even one window fits: a typed error that says what to change
    model.set_inference(InferenceSettings(device="cpu", batch_size=3))
    model.network.limit = 0
    with pytest.raises(InferenceMemoryError, match=r"batch of 1 .*--tile"):
        model.predict_scene(windows[0])
    assert isinstance(InferenceMemoryError("x"), ModelError)
