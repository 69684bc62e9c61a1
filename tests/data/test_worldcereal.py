"""The WorldCereal S2/S1 test patch (real data), and fine-tuning AgriFM on it end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cropscope.data.readers.worldcereal import (
    CROPTYPE_CLASSES,
    load_worldcereal_patch,
    worldcereal_patches,
)
from cropscope.errors import DataError
from tests.conftest import shared_folder

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def folder(real_data_dir: Path) -> Path:
    return shared_folder(real_data_dir, "worldcereal_s2s1_patch")


def test_sources_scaling_and_grid(folder: Path) -> None:
    d = load_worldcereal_patch(folder)
    s2, s1 = d["sources"]["S2"], d["sources"]["S1"]
    assert s2.shape == (12, 9, 100, 100) and s1.shape == (12, 2, 100, 100)
    assert s2.dtype == np.float32 and s1.dtype == np.float32
    # December and January are entirely nodata; the other months are filled
    assert np.isnan(s2[1:3]).all() and np.isfinite(s2[[0, 3, 6]]).mean() > 0.99
    assert 0.0 <= np.nanmedian(s2) < 0.5  # reflectance, not DN
    vh, vv = np.nanmedian(s1[:, 0]), np.nanmedian(s1[:, 1])
    assert -25 < vh < vv < -5  # plausible backscatter in dB, VV above VH
    assert d["crs"] == "EPSG:32631"
    assert d["transform"] == (10.0, 0.0, 664000.0, 0.0, -10.0, 5612120.0)
    assert str(d["dates"][0]) == "2020-11-01" and len(d["dates"]) == 12
    assert "not ground truth" in d["note"]


def test_targets(folder: Path) -> None:
    ct = load_worldcereal_patch(folder, target="croptype")
    assert ct["classes"] == list(CROPTYPE_CLASSES)
    assert ct["label"].shape == (100, 100) and ct["label"].dtype == np.int64
    assert np.bincount(ct["label"].ravel()).argmax() == CROPTYPE_CLASSES.index("other_crop")
    cl = load_worldcereal_patch(folder, target="cropland")
    assert cl["classes"] == ["cropland", "other"]
    both = load_worldcereal_patch(folder, compact=True)
    assert both["classes"][-1] == "no_cropland" and "other_crop" in both["classes"]
    # non-cropland pixels of the cropland map are exactly the no_cropland class
    np.testing.assert_array_equal(both["label"] == len(both["classes"]) - 1, cl["label"] == 1)
    assert both["label"].min() == 0 and both["label"].max() == len(both["classes"]) - 1
    tif = load_worldcereal_patch(folder, label_file="tif")
    # the GeoTIFF sits 2 rows north and is one row short: the last cube row is unlabelled
    assert (tif["label"][-1] == -1).all() and (tif["label"][:-1] >= 0).all()
    # ... and agrees with the NetCDF cropland map on almost every pixel
    agree = (tif["label"][:-1] == tif["classes"].index("no_cropland")) == (cl["label"][:-1] == 1)
    assert agree.mean() > 0.95


def test_tiles_and_errors(folder: Path, tmp_path: Path) -> None:
    d = load_worldcereal_patch(folder)
    tiles = worldcereal_patches(d, size=32, stride=32)
    assert len(tiles) == 16  # 0, 32, 64, 68 per axis
    src, lab = tiles[-1]
    assert src["S1"].shape == (12, 2, 32, 32)
    np.testing.assert_array_equal(lab, d["label"][68:, 68:])
    assert set(worldcereal_patches(d, 50, sources=("S2",))[0][0]) == {"S2"}
    with pytest.raises(DataError, match="unknown source"):
        worldcereal_patches(d, 32, sources=("S3",))
    with pytest.raises(DataError, match="not the WorldCereal"):
        load_worldcereal_patch(tmp_path)


@pytest.mark.slow
def test_agrifm_overfits_the_patch(folder: Path, tmp_path: Path) -> None:
    """Acceptance: a shrunken tiny AgriFM with S2 and S1 as two sources learns the crop-type
    map of the patch (WorldCereal model output used as target)."""
    import torch

    agrifm = pytest.importorskip("cropscope.models.agrifm")
    from cropscope.data.readers.h5patches import ArrayPatchDataset, compute_band_stats
    from cropscope.engine.segmentation import evaluate_segmentation, train_segmentation

    d = load_worldcereal_patch(folder, compact=True)
    tiles = worldcereal_patches(d, size=32)
    data = ArrayPatchDataset(tiles, normalise=compute_band_stats(tiles))
    torch.manual_seed(0)
    model = agrifm.AgriFM({"S2": 9, "S1": 2}, len(d["classes"]), "tiny", embed_dim=16,
                          depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), decoder_dim=32,
                          drop_path_rate=0.0)
    res = train_segmentation(
        model, data, config={"epochs": 30, "batch_size": 4, "lr": 2e-3, "warmup_iters": 10,
                             "weight_decay": 0.01, "augment": False, "device": "cpu"},
        out_dir=tmp_path, progress=False)
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < 0.25 * losses[0]
    scores = evaluate_segmentation(model, data, device="cpu")
    assert scores["overall_accuracy"] > 0.93
    assert (tmp_path / "last.safetensors").is_file() and (tmp_path / "last.json").is_file()
