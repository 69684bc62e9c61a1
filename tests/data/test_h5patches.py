"""HDF5 patch dataset: writing, split lists, lazy reading, errors and band statistics."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cropscope.data.readers.h5patches import (
    ArrayPatchDataset,
    BandStats,
    H5PatchDataset,
    compute_band_stats,
    tile_sample,
    write_h5_patches,
)
from cropscope.errors import DataError


def _samples(n: int = 4) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray]]:
    rng = np.random.default_rng(0)
    out = {}
    for i in range(n):
        s2 = rng.normal(100 * (i + 1), 5, (3, 2, 6, 6)).astype(np.float32)
        s1 = rng.normal(-10, 1, (3, 1, 3, 3)).astype(np.float32)
        out[f"tile_{i}"] = ({"S2": s2, "S1": s1}, np.full((6, 6), i % 3, dtype=np.int64))
    return out


def test_write_and_read_with_splits(tmp_path: Path) -> None:
    samples = _samples()
    files = write_h5_patches(tmp_path, samples, {"train": ["tile_0", "tile_2"],
                                                 "val": ["tile_1"]})
    assert len(files) == 4 and all(f.suffix == ".h5" for f in files)
    assert (tmp_path / "train.txt").read_text().split() == ["tile_0", "tile_2"]
    ds = H5PatchDataset(tmp_path, "train", sources=("S2", "S1"))
    assert len(ds) == 2 and ds.names == ["tile_0", "tile_2"]
    x, y = ds[1]
    assert x["S2"].dtype == torch.float32 and tuple(x["S2"].shape) == (3, 2, 6, 6)
    assert tuple(x["S1"].shape) == (3, 1, 3, 3)
    assert y.dtype == torch.int64 and int(y[0, 0]) == 2
    np.testing.assert_allclose(x["S2"].numpy(), samples["tile_2"][0]["S2"])
    assert len(H5PatchDataset(tmp_path, sources=("S2",))) == 4  # no split: every file


def test_agrifm_released_layout(tmp_path: Path) -> None:
    write_h5_patches(tmp_path / "h5_samples", _samples(2))
    (tmp_path / "data_list").mkdir()
    (tmp_path / "data_list" / "test.txt").write_text("tile_1.h5\n\n")
    ds = H5PatchDataset(tmp_path, "test")
    assert ds.names == ["tile_1"]


def test_dataset_pickles_and_works_with_worker_loader(tmp_path: Path) -> None:
    write_h5_patches(tmp_path, _samples(4))
    ds = H5PatchDataset(tmp_path, sources=("S2", "S1"))
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[0][0]["S2"], ds[0][0]["S2"])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    batches = list(loader)
    assert tuple(batches[0][0]["S2"].shape) == (2, 3, 2, 6, 6)
    assert tuple(batches[1][1].shape) == (2, 6, 6)


def test_normalisation_nan_fill_and_transform(tmp_path: Path) -> None:
    src, lab = _samples(1)["tile_0"]
    src["S2"][0, 0, 0, 0] = np.nan
    write_h5_patches(tmp_path, {"a": (src, lab)})
    stats = compute_band_stats(H5PatchDataset(tmp_path, sources=("S2", "S1")))
    ds = H5PatchDataset(tmp_path, sources=("S2", "S1"), normalise=stats, nan_fill=0.0,
                        transform=lambda x, y: (x, y + 1))
    x, y = ds[0]
    assert torch.isfinite(x["S2"]).all() and float(x["S2"][0, 0, 0, 0]) == 0.0
    raw = ArrayPatchDataset([({"S2": np.full((1, 1, 2, 2), 65535.0)}, np.zeros((2, 2)))],
                            nodata=65535, nan_fill=-5.0)
    assert (raw[0][0]["S2"] == -5.0).all()
    per_band = x["S2"].numpy().transpose(1, 0, 2, 3).reshape(2, -1)
    np.testing.assert_allclose(per_band.mean(1), 0.0, atol=0.02)
    np.testing.assert_allclose(per_band.std(1), 1.0, atol=0.02)
    assert int(y[0, 0]) == 1


def test_band_stats_ignore_nan_and_nodata() -> None:
    a = np.zeros((2, 2, 2, 2), dtype=np.float32)
    a[:, 0] = [[[1, 3], [65535, np.nan]]]
    a[:, 1] = 7
    stats = compute_band_stats([({"S2": a}, np.zeros((2, 2), int))], nodata=65535)
    np.testing.assert_allclose(stats.mean["S2"], [2.0, 7.0])
    np.testing.assert_allclose(stats.std["S2"], [1.0, 0.0])
    again = BandStats.from_dict(stats.to_dict())
    np.testing.assert_allclose(again.mean["S2"], stats.mean["S2"])
    # a constant band (std 0) is centred, not divided by zero
    z = stats.apply("S2", a)
    assert (z[:, 1] == 0).all()
    assert np.isnan(z[:, 0, 1, 1]).all()  # NaN stays NaN (the dataset fills it later)
    with pytest.raises(DataError, match="no normalisation statistics"):
        stats.apply("S1", a)


def test_clear_errors(tmp_path: Path) -> None:
    write_h5_patches(tmp_path, _samples(1))
    with pytest.raises(DataError, match=r"missing dataset\(s\) \['S3'\]"):
        H5PatchDataset(tmp_path, sources=("S3",))[0]
    with pytest.raises(DataError, match=r"split list val\.txt not found"):
        H5PatchDataset(tmp_path, "val")
    (tmp_path / "bad.txt").write_text("nope\n")
    with pytest.raises(DataError, match="missing file"):
        H5PatchDataset(tmp_path, "bad")
    with h5py.File(tmp_path / "wrong.h5", "w") as f:
        f["S2"] = np.zeros((3, 2, 6, 6), np.float32)
        f["label"] = np.zeros((5, 6), np.int64)
    (tmp_path / "w.txt").write_text("wrong\n")
    with pytest.raises(DataError, match="label must be"):
        H5PatchDataset(tmp_path, "w")[0]
    with pytest.raises(DataError, match="not found"):
        H5PatchDataset(tmp_path / "absent")
    with pytest.raises(DataError, match=r"\(T, C, H, W\)"):
        write_h5_patches(tmp_path / "x", {"a": ({"S2": np.zeros((2, 6, 6))}, np.zeros((6, 6)))})


def test_tile_sample_covers_scene_and_array_dataset() -> None:
    scene = np.arange(10 * 10, dtype=np.float32).reshape(1, 1, 10, 10)
    label = np.arange(100).reshape(10, 10) % 3
    tiles = tile_sample({"S2": scene}, label, size=4, stride=3)
    # starts 0, 3, 6 per axis: the last tile touches the far edge
    assert len(tiles) == 9
    covered = np.zeros((10, 10), bool)
    for src, lab in tiles:
        vals = src["S2"][0, 0].astype(int)
        covered[vals // 10, vals % 10] = True
        np.testing.assert_array_equal(lab, vals % 3)
    assert covered.all()
    ds = ArrayPatchDataset(tiles)
    assert len(ds) == 9 and tuple(ds[0][0]["S2"].shape) == (1, 1, 4, 4)
    with pytest.raises(DataError, match="do not fit"):
        tile_sample({"S2": scene}, label, size=12)
