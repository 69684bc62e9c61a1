"""H2Crop-format samples from the real EnMAP Potsdam tiles."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cropscope.data.readers.h2crop import H2CropDataset
from cropscope.hyperspectral import open_hyperspectral, open_labels, simulate_sentinel2
from cropscope.hyperspectral.to_h2crop import build_h2crop_from_enmap, potsdam_taxonomy
from cropscope.taxonomy.sources import read_taxonomy

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def built(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_h2crop_from_enmap(tmp_path_factory.mktemp("potsdam"), real_data_dir)


def _tiles(real_data_dir: Path) -> Path:
    return real_data_dir / "hyperspectral" / "enmap_potsdam_tiles"


def test_layout_and_shapes(built: Path) -> None:
    lists = {s: (built / "data_lists" / f"{s}.txt").read_text().split()
             for s in ("train", "val", "test")}
    assert [len(v) for v in lists.values()] == [14, 2, 2]
    assert sorted(lists["val"]) == ["enmap_potsdam_tile_128_128", "enmap_potsdam_tile_96_0"]
    assert len(list((built / "h5_data").glob("*.h5"))) == 18
    with h5py.File(built / "h5_data" / "enmap_potsdam_tile_128_0.h5") as f:
        assert {k: (f[k].shape, f[k].dtype) for k in f} == {
            "S2": ((12, 10, 96, 96), np.int16),
            "EnMAP": ((218, 32, 32), np.int16),
            "label": ((4, 96, 96), np.uint8),
        }
        assert f.attrs["acquisition"] == "2022-07-24"
        wl = f.attrs["EnMAP_wavelength_nm"]
        assert len(wl) == 218 and (wl[0], wl[-1]) == pytest.approx((418.24, 2445.53))
        s2 = f["S2"][()]
    assert (s2 == s2[:1]).all()  # one acquisition, repeated for every month
    assert read_taxonomy(built / "taxonomy.json") == potsdam_taxonomy()
    assert potsdam_taxonomy().sizes == [3, 6, 6, 6]


def test_contents_match_the_tiles(built: Path, real_data_dir: Path) -> None:
    folder = _tiles(real_data_dir)
    for name in ("enmap_potsdam_tile_128_0", "enmap_potsdam_tile_96_32"):
        scene = open_hyperspectral(folder / "images" / f"{name}.tif")
        labels = open_labels(folder / "labels" / f"{name}.tif").values
        with h5py.File(built / "h5_data" / f"{name}.h5") as f:
            hyp, s2, lab = f["EnMAP"][()], f["S2"][()], f["label"][()].astype(int)
        good = ~scene["bad_band"].values
        assert good.sum() == 218
        np.testing.assert_array_equal(hyp, np.rint(scene.values[good] * 10_000))
        up = np.repeat(np.repeat(labels, 3, axis=0), 3, axis=1)
        for k in (1, 2, 3):
            np.testing.assert_array_equal(lab[k], up)
        group = {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3}
        np.testing.assert_array_equal(lab[0], np.vectorize(group.get)(up))
        sim = simulate_sentinel2(scene)
        for band in ("B4", "B8"):
            i = list(sim["band"].values).index(band)
            want = np.rint(sim.sel(band=band).values * 10_000)
            np.testing.assert_array_equal(s2[0, i, ::3, ::3], want)
            np.testing.assert_array_equal(s2[5, i, 2::3, 1::3], want)


def test_reader_reads_them(built: Path) -> None:
    ds = H2CropDataset(built, "test", months=6, with_hyper=True)
    assert len(ds) == 2
    inputs, labels = ds[0]
    assert inputs["S2"].shape == (6, 10, 96, 96) and inputs["EnMAP"].shape == (218, 32, 32)
    assert labels.shape == (4, 96, 96) and labels.dtype == torch.int64
    assert torch.isfinite(inputs["S2"]).all() and torch.isfinite(inputs["EnMAP"]).all()
    assert int(labels.max()) <= 6 and int(labels[0].max()) <= 3
    stats = H2CropDataset(built, "train", normalise=None).band_stats()
    assert stats.mean["EnMAP"].shape == (218,) and stats.mean["S2"].shape == (10,)
    # vegetation is brighter in NIR (B8, index 6) than red (B4, index 2) on average
    assert stats.mean["S2"][6] > stats.mean["S2"][2]
