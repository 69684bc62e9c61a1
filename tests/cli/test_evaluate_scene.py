"""`cropscope evaluate/train --scene` on a tiny generated scene (.mat + GeoTIFF labels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.hyperspectral.test_scene import make_scene

TINY_ST = ["--set", "spatial_dim=16", "--set", "spatial_depth=1", "--set", "spatial_heads=2",
           "--set", "spectral_dim=16", "--set", "spectral_depth=1", "--set", "spectral_heads=2",
           "--set", "out_dim=16", "--set", "epochs=5", "--set", "patch_size=3",
           "--set", "val_fraction=0"]


@pytest.fixture
def scene_files(tmp_path) -> tuple[Path, Path]:
    """The toy scene as a .mat cube (H, W, K) and a GeoTIFF label raster."""
    import rasterio
    from rasterio.transform import Affine
    from scipy.io import savemat

    sc = make_scene()
    cube = np.nan_to_num(sc.image).transpose(1, 2, 0)  # (y, x, band), as .mat cubes are
    mat = tmp_path / "scene.mat"
    savemat(mat, {"cube": cube.astype(np.float32)})
    tif = tmp_path / "labels.tif"
    with rasterio.open(tif, "w", driver="GTiff", height=24, width=24, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=Affine(30, 0, 0, 0, -30, 720)) as dst:
        dst.write(sc.labels.astype(np.uint8), 1)
    return mat, tif


@pytest.mark.slow
@pytest.mark.parametrize("model,extra", [("rf", ["--set", "n_estimators=20"]),
                                         ("spectral-transformer", TINY_ST)])
def test_evaluate_scene_prints_one_json_object(scene_files, model, extra) -> None:
    mat, tif = scene_files
    proc = run_cli("evaluate", "--scene", f"{mat}:cube", "--labels", str(tif), "--model", model,
                   "--split", "blocks:6", "--seed", "0", "--json", *extra)
    result = json.loads(proc.stdout)  # exactly one JSON object on stdout
    for key in ("overall_accuracy", "average_accuracy", "macro_f1", "kappa"):
        assert 0.0 <= result[key] <= 1.0
    assert result["config"]["split"] == "blocks:6" and result["config"]["model"] == model
    assert result["overall_accuracy"] > 0.6


def test_scene_needs_labels_and_a_known_split(scene_files) -> None:
    mat, tif = scene_files
    proc = run_cli("evaluate", "--scene", str(mat), "--model", "rf", check=False)
    assert_one_line_error(proc, "--scene and --labels")
    proc = run_cli("evaluate", "--scene", str(mat), "--labels", str(tif), "--model", "rf",
                   "--split", "stripes", check=False)
    assert_one_line_error(proc, "unknown spatial split")
    proc = run_cli("evaluate", "--scene", str(mat), "--labels", str(tif), "--model", "rf",
                   "--split", "tiles", check=False)
    assert_one_line_error(proc, "predefined tiles")


@pytest.mark.slow
def test_train_on_a_scene_writes_a_run_directory(scene_files, tmp_path) -> None:
    mat, tif = scene_files
    out = tmp_path / "run"
    run_cli("train", "--scene", str(mat), "--labels", str(tif), "--model", "spectral-cnn",
            "--split", "blocks:6", "--out", str(out), "--set", "epochs=3", "--set", "filters=8")
    assert (out / "model.json").is_file() and (out / "weights.safetensors").is_file()
    run = json.loads((out / "run.json").read_text())["training"]
    assert run["split"] == "blocks:6" and run["n_train"] > 0
    assert json.loads((out / "metrics.json").read_text())["config"]["split"] == "blocks:6"


def test_datasets_list_shows_the_scenes() -> None:
    proc = run_cli("datasets", "list")
    assert "indian-pines-window" in proc.stdout and "enmap-potsdam" in proc.stdout


def test_tune_a_scene_from_files_and_its_error_lines(scene_files, tmp_path) -> None:
    """``cropscope tune --scene --labels`` takes the spatial route: one JSON object with the
    test figure apart from the inner one; table-only options are one error line."""
    mat, tif = scene_files
    out = tmp_path / "tuned"
    proc = run_cli("tune", "--scene", f"{mat}:cube", "--labels", str(tif), "--model", "lda",
                   "--split", "blocks:6", "--trials", "3", "--inner-cv", "3", "--json",
                   "--out", str(out))
    report = json.loads(proc.stdout)
    assert report["split"] == "blocks:6" and report["inner_groups"]["unit"] == "6 x 6 px blocks"
    assert report["test"]["overall_accuracy"] > 0.6 and report["inner_best"]["n_trials"] == 3
    assert (out / "tuning.json").is_file() and (out / "manifest.json").is_file()
    proc = run_cli("tune", "--scene", f"{mat}:cube", "--labels", str(tif), "--model", "lda",
                   "--split", "blocks:6", "--group", "region", "--out", str(tmp_path / "g"),
                   check=False)
    assert_one_line_error(proc, "--group is for tables")
    proc = run_cli("tune", "--scene", f"{mat}:cube", "--labels", str(tif), "--model", "lda",
                   "--split", "blocks:12", "--inner-cv", "9", "--out", str(tmp_path / "few"),
                   check=False)
    assert_one_line_error(proc, "inner CV needs at least 9")
