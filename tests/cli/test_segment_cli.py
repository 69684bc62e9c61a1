"""``cropscope segment``: train / evaluate / pretrain through click's runner."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from cropscope.cli.segment import segment
from cropscope.data.readers.h5patches import write_h5_patches
from cropscope.errors import DataError, ModelError
from cropscope.models.networks import InputSpec, register_network
from cropscope.runs import open_run
from tests.engine.test_segmentation import TinySeg, toy_samples

NETWORK = "test-tinyseg"
FAST = ["--network", NETWORK, "--lr", "0.05", "--batch-size", "2", "--device", "cpu",
        "--set", "warmup_iters=1", "--no-progress"]


@register_network(NETWORK, default_cfg={
    "required": ("sources", "num_classes"), "options": ("preset", "width"), "dict_input": True,
    "classes_arg": "num_classes", "input_layout": "patch-series {source: [B, T, C, H, W]}",
    "test_kwargs": {"sources": {"S2": 2}, "num_classes": 3},
    "test_inputs": {"S2": InputSpec((3, 2, 8, 8))}})
def make_model(sources: Mapping[str, int], num_classes: int, preset: str | None = None,
               **kw: Any) -> TinySeg:
    """A fast stand-in for AgriFM with the same constructor and forward contract,
    registered like any third-party network (in code, never from a data file)."""
    return TinySeg(sources, num_classes, **kw)


@pytest.fixture
def h5_dir(tmp_path: Path) -> Path:
    samples = {f"s{i}": s for i, s in enumerate(toy_samples(6, seed=0))}
    write_h5_patches(tmp_path / "data", samples,
                     {"train": ["s0", "s1", "s2", "s3"], "val": ["s4"], "test": ["s5"]})
    return tmp_path / "data"


def _run(args: list[str]) -> Any:
    return CliRunner().invoke(segment, args, catch_exceptions=True)


def test_train_resume_and_evaluate(h5_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = _run(["train", str(h5_dir), "--sources", "S2,S1", "--out", str(out),
                "--epochs", "2", *FAST, "--model-set", "width=6"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["epochs_done"] == 2 and "val_miou" in info["last"]
    spec = open_run(out).spec
    assert spec.kind == "segmentation" and spec.network is not None
    assert spec.network["name"] == NETWORK and spec.network["kwargs"]["num_classes"] == 3
    assert spec.network["kwargs"]["sources"] == {"S2": 2, "S1": 1}
    assert spec.network["kwargs"]["width"] == 6 and spec.classes == ["0", "1", "2"]
    assert spec.normalisation is not None and len(spec.normalisation["mean"]["S2"]) == 2
    assert spec.bands("S2") == ["band_1", "band_2"] and spec.time_grid.n_times is not None
    # more epochs: continues from last.pt (the schedule is for 3 epochs from now on)
    res = _run(["train", str(h5_dir), "--sources", "S2,S1", "--out", str(out),
                "--epochs", "3", *FAST, "--model-set", "width=6", "--devices", "1",
                "--strategy", "auto", "--num-nodes", "1"])
    assert res.exit_code == 0, res.output
    assert "resumed after epoch 2" in res.stderr
    assert json.loads(res.stdout)["epochs_done"] == 3
    hist = json.loads((out / "history.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3]

    res = _run(["evaluate", str(out), str(h5_dir), "--split", "test", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout)
    assert 0.0 <= scores["overall_accuracy"] <= 1.0
    assert scores["n_pixels"] == 63  # one 8x8 test tile minus its ignore pixel
    assert len(scores["confusion_matrix"]) == 3


def test_resume_with_another_model_is_refused(h5_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    base = ["train", str(h5_dir), "--sources", "S2,S1", "--out", str(out), "--epochs", "1"]
    assert _run([*base, *FAST]).exit_code == 0
    res = _run([*base, *FAST, "--model-set", "width=4"])
    assert isinstance(res.exception, ModelError)


def test_input_errors(h5_dir: Path, tmp_path: Path) -> None:
    res = _run(["train", "--out", str(tmp_path / "x"), *FAST])
    assert isinstance(res.exception, DataError) and "exactly one" in str(res.exception)
    res = _run(["evaluate", str(tmp_path), str(h5_dir)])
    assert isinstance(res.exception, ModelError) and "run.json" in str(res.exception)
    res = _run(["train", str(h5_dir), "--out", str(tmp_path / "y"), *FAST[:1], "nosuch"])
    assert isinstance(res.exception, ModelError) and "unknown network" in str(res.exception)
    # a factory path is not a network name: nothing is imported
    res = _run(["train", str(h5_dir), "--out", str(tmp_path / "z"), "--network",
                "tests.cli.test_segment_cli:make_model", *FAST[2:]])
    assert isinstance(res.exception, ModelError) and not (tmp_path / "z" / "manifest.json").exists()


def test_pretrain_then_finetune(h5_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    cube = rng.normal(0, 1, (3, 2, 16, 16)).astype(np.float32)
    codes = np.array([5, 9])[(cube[:, 0].mean(0) > 0).astype(int)]
    transform = (10.0, 0.0, 500.0, 0.0, -10.0, 800.0)
    with h5py.File(tmp_path / "cube.h5", "w") as f:
        f["S2"] = cube
        f["S1"] = rng.normal(0, 1, (3, 1, 16, 16)).astype(np.float32)
        f.attrs["crs"] = "EPSG:32631"
        f.attrs["transform"] = transform
    with rasterio.open(tmp_path / "lc.tif", "w", driver="GTiff", width=16, height=16, count=1,
                       dtype="uint8", crs="EPSG:32631", nodata=0,
                       transform=from_origin(500.0, 800.0, 10, 10)) as dst:
        dst.write(codes.astype(np.uint8), 1)
    pre = tmp_path / "pre"
    res = _run(["pretrain", "--cube", str(tmp_path / "cube.h5"), "--raster",
                str(tmp_path / "lc.tif"), "--tile-size", "8", "--objective", "both",
                "--out", str(pre), "--epochs", "2", *FAST])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["class_codes"] == [5, 9] and info["tiles"] == 4
    assert open_run(pre).spec.kind == "pretrained-encoder"

    res = _run(["train", str(h5_dir), "--sources", "S2,S1", "--out", str(tmp_path / "ft"),
                "--epochs", "1", "--pretrained", str(pre), *FAST])
    assert res.exit_code == 0, res.output
    assert open_run(tmp_path / "ft").spec.kind == "segmentation"


@pytest.mark.realdata
def test_train_on_worldcereal(real_data_dir: Path, tmp_path: Path) -> None:
    folder = real_data_dir / "worldcereal_s2s1_patch"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    res = _run(["train", "--worldcereal", str(folder), "--tile-size", "50",
                "--out", str(tmp_path / "wc"), "--epochs", "1", *FAST])
    assert res.exit_code == 0, res.output
    spec = open_run(tmp_path / "wc").spec
    assert spec.network is not None and spec.network["kwargs"]["sources"] == {"S2": 9, "S1": 2}
    assert spec.classes[-1] == "no_cropland" and spec.bands("S2")[0] == "B02"
    assert spec.time_grid.kind == "dates" and spec.time_grid.n_times == 12
    res = _run(["evaluate", str(tmp_path / "wc"), "--worldcereal", str(folder),
                "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n_pixels"] == 4 * 50 * 50


def test_official_recipe(h5_dir: Path, tmp_path: Path) -> None:
    """``--recipe official`` trains AgriFM with the official recipe under the given options;
    a network without an official recipe is one clear error."""
    out = tmp_path / "run"
    res = _run(["train", str(h5_dir), "--sources", "S2", "--out", str(out), "--network",
                "agrifm", "--epochs", "1", "--batch-size", "2", "--device", "cpu",
                "--recipe", "official", "--no-progress"])
    assert res.exit_code == 0, res.output
    config = open_run(out).spec.training["config"]
    assert (config["decay_all"], config["warmup_cap"], config["loss_mean_over"],
            config["augment"], config["monitor"], config["epochs"]) == (
        True, None, "all", False, "mfscore", 1)
    bad = _run(["train", str(h5_dir), "--sources", "S2", "--out", str(tmp_path / "bad"),
                *FAST, "--recipe", "official"])
    assert isinstance(bad.exception, ModelError) and "no official recipe" in str(bad.exception)


@pytest.mark.parametrize("bad", [["--strategy", "nope"], ["--model-set", "nosuch=1"]])
def test_refused_options_leave_no_run_folder(h5_dir: Path, tmp_path: Path, bad: list[str]) -> None:
    """A strategy Lightning does not know or a network its options cannot build is refused
    before the run folder is opened, so the corrected command starts afresh."""
    out = tmp_path / "run"
    base = ["train", str(h5_dir), "--sources", "S2,S1", "--out", str(out), "--epochs", "1"]
    res = _run([*base, *FAST, *bad])
    assert res.exit_code != 0 and not (out / "run.json").exists(), res.output
    assert _run([*base, *FAST]).exit_code == 0


def test_a_split_list_that_is_not_there(h5_dir: Path, tmp_path: Path) -> None:
    """Naming a split the folder has no list for used to train on every file (validation
    and test included)."""
    res = _run(["train", str(h5_dir), "--sources", "S2,S1", "--out", str(tmp_path / "r"),
                "--epochs", "1", "--train-split", "nope", *FAST])
    assert isinstance(res.exception, DataError) and "no split list 'nope'" in str(res.exception)
    assert "test, train, val" in str(res.exception)
