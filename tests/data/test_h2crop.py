"""H2Crop layout: generated files in both key and list spellings, the reader's output,
options, errors, the generator's structure and band statistics."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cropscope.data.readers.h2crop import (
    H2CROP_LEVEL_SIZES,
    H2CROP_MONTHS,
    H2CROP_NORMALISATION,
    BandStats,
    H2CropDataset,
    default_h2crop_taxonomy,
    generate_h2crop,
    h2crop_band_stats,
    h2crop_class_signatures,
    h2crop_level_ids,
    write_h2crop_sample,
    write_split_lists,
)
from cropscope.errors import DataError
from cropscope.taxonomy.sources import load_h2crop, read_taxonomy

SMALL = {"size": 24, "hyper_size": 8, "hyper_bands": 12}


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 samples (train 2, val 1, test 1), README spelling, the real 218 EnMAP bands."""
    return generate_h2crop(tmp_path_factory.mktemp("h2crop"), 4, **{**SMALL, "hyper_bands": 218})


def _stats(bands: int = 218) -> BandStats:
    return BandStats({"S2": np.full(10, 1000.0, np.float32),
                      "EnMAP": np.full(bands, 2000.0, np.float32)},
                     {"S2": np.full(10, 500.0, np.float32),
                      "EnMAP": np.full(bands, 100.0, np.float32)})


# ------------------------------------------------------------------------ constants
def test_constants() -> None:
    assert H2CROP_LEVEL_SIZES == (7, 37, 83, 102) and H2CROP_MONTHS == (6, 8, 10, 12)
    assert H2CROP_NORMALISATION.mean["S2"].shape == (10,)
    assert H2CROP_NORMALISATION.std["EnMAP"].shape == (218,)
    assert H2CROP_NORMALISATION.mean["S2"][0] == pytest.approx(4259.259273982915)
    assert H2CROP_NORMALISATION.std["S2"][-1] == pytest.approx(1391.1260145456185)
    assert H2CROP_NORMALISATION.mean["EnMAP"][-1] == pytest.approx(820.2674)
    assert H2CROP_NORMALISATION.std["EnMAP"][157] == pytest.approx(2746.9931)


# ------------------------------------------------------------------------ layout + reader
@pytest.mark.parametrize("keys", ["readme", "code"])
def test_round_trip_both_spellings(tmp_path: Path, keys: str) -> None:
    root = generate_h2crop(tmp_path, 4, keys=keys, **SMALL)
    lists = "data_lists" if keys == "readme" else "data_list"
    assert (root / lists / "train.txt").read_text().split() == ["sample_001", "sample_002"]
    with h5py.File(root / "h5_data" / "sample_001.h5") as f:
        expected = {"readme": {"S2", "EnMAP", "label", "prior"},
                    "code": {"S2_data", "EnMAP_data", "label", "priors"}}[keys]
        assert set(f.keys()) == expected
        dtypes = {k: f[k].dtype for k in f}
        shapes = {k: f[k].shape for k in f}
    s2, hyp, prior = ("S2", "EnMAP", "prior") if keys == "readme" else (
        "S2_data", "EnMAP_data", "priors")
    assert dtypes == {s2: np.int16, hyp: np.int16, "label": np.uint8, prior: np.uint8}
    assert shapes == {s2: (12, 10, 24, 24), hyp: (12, 8, 8), "label": (4, 24, 24),
                      prior: (4, 24, 24)}
    ds = H2CropDataset(root, "train", with_priors=True, normalise=None)
    assert len(ds) == 2 and ds.names == ["sample_001", "sample_002"]
    assert [len(H2CropDataset(root, s)) for s in ("val", "test")] == [1, 1]
    inputs, labels = ds[0]
    assert set(inputs) == {"S2", "EnMAP", "priors"}
    assert inputs["S2"].dtype == torch.float32 and inputs["S2"].shape == (12, 10, 24, 24)
    assert inputs["EnMAP"].dtype == torch.float32 and inputs["EnMAP"].shape == (12, 8, 8)
    assert inputs["priors"].dtype == torch.int64 and inputs["priors"].shape == (4, 24, 24)
    assert labels.dtype == torch.int64 and labels.shape == (4, 24, 24)
    assert ds[-1][1].shape == labels.shape
    with pytest.raises(IndexError):
        ds[2]
    assert "H2CropDataset(" in repr(ds) and "n=2" in repr(ds)


def test_list_folder_spellings_and_flat_layout(gen: Path, tmp_path: Path) -> None:
    ref = H2CropDataset(gen, "train", normalise=None).read_raw(1)
    # code spelling of the list folder, and the samples directly in root
    flat = tmp_path / "flat"
    shutil.copytree(gen / "h5_data", flat)
    write_split_lists(flat, {"train": ["sample_001.h5", "sample_002"]}, spelling="code")
    assert (flat / "data_list" / "train.txt").is_file()
    got = H2CropDataset(flat, "train", normalise=None).read_raw(1)
    assert all(np.array_equal(ref[k], got[k]) for k in ref)
    # <split>.txt in root; ids whitespace-separated on one line
    (flat / "data_list" / "train.txt").unlink()
    (flat / "train.txt").write_text("sample_002 sample_001\n")
    assert H2CropDataset(flat, "train").names == ["sample_002", "sample_001"]
    # no split: every file
    assert len(H2CropDataset(flat, None)) == 4


def test_mixed_key_spellings(tmp_path: Path) -> None:
    """README S2/EnMAP with the code's ``priors`` key in one file."""
    rng = np.random.default_rng(0)
    path = tmp_path / "h5_data" / "a.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        f["S2"] = rng.integers(0, 5000, (6, 10, 6, 6)).astype(np.int16)
        f["EnMAP_data"] = rng.integers(0, 5000, (5, 2, 2)).astype(np.int16)
        f["label"] = np.ones((4, 6, 6), np.uint8)
        f["priors"] = np.zeros((4, 6, 6), np.uint8)
    ds = H2CropDataset(tmp_path, None, months=6, with_priors=True, normalise=None)
    inputs, labels = ds[0]
    assert inputs["EnMAP"].shape == (5, 2, 2) and (inputs["priors"] == 0).all()
    assert (labels == 1).all()


@pytest.mark.parametrize("months", H2CROP_MONTHS)
def test_months_selection(gen: Path, months: int) -> None:
    ds = H2CropDataset(gen, "train", months=months, normalise=None)
    full = H2CropDataset(gen, "train", months=12, normalise=None)
    x = ds[0][0]["S2"]
    assert x.shape == (months, 10, 24, 24)
    assert torch.equal(x, full[0][0]["S2"][:months])


def test_too_many_months(gen: Path) -> None:
    ds = H2CropDataset(gen, "train", months=13)
    with pytest.raises(DataError, match="13 months asked for, the S2 cube has 12"):
        ds[0]
    with pytest.raises(DataError, match="months"):
        H2CropDataset(gen, "train", months=0)


def test_levels_selection(gen: Path) -> None:
    full = H2CropDataset(gen, "train", with_priors=True)[0]
    x, y = H2CropDataset(gen, "train", levels=(4, 2), with_priors=True)[0]
    assert y.shape == (2, 24, 24)
    assert torch.equal(y, full[1][[3, 1]]) and torch.equal(x["priors"], full[0]["priors"][[3, 1]])
    with pytest.raises(DataError, match="level 5 asked for, the label has 4 levels"):
        H2CropDataset(gen, "train", levels=(5,))[0]
    for bad in [(), (0,), (1, 1)]:
        with pytest.raises(DataError, match="levels"):
            H2CropDataset(gen, "train", levels=bad)


def test_normalisation(gen: Path, tmp_path: Path) -> None:
    raw = H2CropDataset(gen, "train").read_raw(0)
    s2, hyp = raw["S2"].astype(np.float64), raw["EnMAP"].astype(np.float64)
    plain = H2CropDataset(gen, "train", normalise=None)[0][0]
    np.testing.assert_array_equal(plain["S2"].numpy(), s2)
    np.testing.assert_array_equal(plain["EnMAP"].numpy(), hyp)
    ref = H2CropDataset(gen, "train")[0][0]
    for key, x in (("S2", s2), ("EnMAP", hyp[None])):
        m, s = H2CROP_NORMALISATION.mean[key], H2CROP_NORMALISATION.std[key]
        want = (x - m[:, None, None]) / s[:, None, None]
        np.testing.assert_allclose(ref[key].numpy(), want if key == "S2" else want[0],
                                   rtol=1e-5, atol=1e-5)
    # the reference constants have 218 EnMAP bands: not usable for 12 (fine without hyper)
    small = generate_h2crop(tmp_path / "small", 1, splits={"train": 1}, **SMALL)
    assert set(H2CropDataset(small, "train", with_hyper=False)[0][0]) == {"S2"}
    with pytest.raises(DataError, match=r"sample_001\.h5: .* 218 bands, the data 12"):
        H2CropDataset(small, "train")[0]
    custom = H2CropDataset(gen, "train", normalise=_stats())[0][0]
    np.testing.assert_allclose(custom["S2"].numpy(), (s2 - 1000) / 500, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(custom["EnMAP"].numpy(), (hyp - 2000) / 100, rtol=1e-5,
                               atol=1e-5)
    # from a JSON file; S2-only statistics are enough without hyper, not with it
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(_stats().to_dict()))
    from_file = H2CropDataset(gen, "train", normalise=path)[0][0]
    assert torch.equal(from_file["S2"], custom["S2"])
    s2_only = BandStats({"S2": _stats().mean["S2"]}, {"S2": _stats().std["S2"]})
    H2CropDataset(gen, "train", normalise=s2_only, with_hyper=False)
    with pytest.raises(DataError, match=r"lack source\(s\) \['EnMAP'\]"):
        H2CropDataset(gen, "train", normalise=s2_only)
    with pytest.raises(DataError, match="normalise must be"):
        H2CropDataset(gen, "train", normalise="zscore")


def test_options_and_transform(gen: Path) -> None:
    ds = H2CropDataset(gen, None, sample_step=2, with_hyper=False, normalise=None,
                       transform=lambda x, y: ({k: v.flip(-1) for k, v in x.items()},
                                               y.flip(-1)))
    assert ds.names == ["sample_001", "sample_003"]
    x, y = ds[1]
    base = H2CropDataset(gen, "val", with_hyper=False, normalise=None)[0]
    assert set(x) == {"S2"} and torch.equal(y, base[1].flip(-1))
    assert torch.equal(x["S2"], base[0]["S2"].flip(-1))
    ds2 = pickle.loads(pickle.dumps(H2CropDataset(gen, "train")))  # DataLoader workers
    assert ds2.names == ["sample_001", "sample_002"]


# ------------------------------------------------------------------------ errors
def test_missing_listed_file_and_list(gen: Path, tmp_path: Path) -> None:
    root = tmp_path / "r"
    shutil.copytree(gen, root)
    (root / "h5_data" / "sample_002.h5").unlink()
    with pytest.raises(DataError, match=r"lists 1 missing file\(s\), e.g. sample_002.h5"):
        H2CropDataset(root, "train")
    with pytest.raises(DataError, match=r"split list holdout\.txt not found"):
        H2CropDataset(root, "holdout")
    with pytest.raises(DataError, match="folder not found"):
        H2CropDataset(tmp_path / "nope")


def _write(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f[k] = v


def test_bad_files(tmp_path: Path) -> None:
    s2 = np.zeros((12, 10, 6, 6), np.int16)
    lab = np.zeros((4, 6, 6), np.uint8)
    hyp = np.zeros((3, 2, 2), np.int16)
    cases = [
        (dict(S2=s2, label=lab), r"no EnMAP dataset \(expected 'EnMAP' or 'EnMAP_data'\); "
                                 r"the file has \['S2', 'label'\]"),
        (dict(EnMAP=hyp, label=lab), "no S2 dataset"),
        (dict(S2=s2[0], EnMAP=hyp, label=lab), r"S2 must be \(T, C, H, W\)"),
        (dict(S2=s2, EnMAP=hyp, label=lab[:, :4]), r"label must be \(levels, H, W\) on the S2 "
                                                   r"grid \(6, 6\), got shape \(4, 4, 6\)"),
        (dict(S2=s2, EnMAP=np.zeros((3, 4, 4), np.int16), label=lab),
         r"EnMAP grid \(4, 4\) is not the S2 grid"),
        (dict(S2=s2, EnMAP=hyp, label=lab.astype(np.float32)), "integer class numbers"),
    ]
    for i, (arrays, msg) in enumerate(cases):
        root = tmp_path / f"case{i}"
        _write(root / "h5_data" / "s.h5", **arrays)
        with pytest.raises(DataError, match=msg) as err:
            H2CropDataset(root, None, normalise=None)[0]
        assert "s.h5" in str(err.value)
    root = tmp_path / "prior"
    _write(root / "s.h5", S2=s2, EnMAP=hyp, label=lab, prior=lab[:2])
    with pytest.raises(DataError, match="prior must have the label's shape"):
        H2CropDataset(root, None, with_priors=True, normalise=None)[0]
    H2CropDataset(root, None, normalise=None)[0]  # priors not asked for: not read


def test_writer_casts_and_checks(tmp_path: Path) -> None:
    s2 = np.full((2, 10, 6, 6), 1234.4)
    lab = np.ones((4, 6, 6), np.int64)
    path = write_h2crop_sample(tmp_path / "a.h5", s2, label=lab, keys="code",
                               attrs={"note": "x"})
    with h5py.File(path) as f:
        assert set(f) == {"S2_data", "label"} and f["S2_data"].dtype == np.int16
        assert f["S2_data"][0, 0, 0, 0] == 1234 and f["label"].dtype == np.uint8
        assert f.attrs["note"] == "x"
    with pytest.raises(DataError, match="do not fit int16"):
        write_h2crop_sample(tmp_path / "b.h5", s2 * 100, label=lab)
    with pytest.raises(DataError, match="NaN"):
        write_h2crop_sample(tmp_path / "b.h5", np.full_like(s2, np.nan), label=lab)
    with pytest.raises(DataError, match="do not fit uint8"):
        write_h2crop_sample(tmp_path / "b.h5", s2, label=lab * 300)
    with pytest.raises(DataError, match="whole class numbers"):
        write_h2crop_sample(tmp_path / "b.h5", s2, label=lab * 0.5)
    with pytest.raises(DataError, match="EnMAP grid"):
        write_h2crop_sample(tmp_path / "b.h5", s2, np.zeros((3, 4, 4)), label=lab)
    with pytest.raises(DataError, match="keys must be"):
        write_h2crop_sample(tmp_path / "b.h5", s2, label=lab, keys="other")
    assert not (tmp_path / "b.h5").exists()
    with pytest.raises(DataError, match="whitespace"):
        write_split_lists(tmp_path, {"train": ["a b"]})


# ------------------------------------------------------------------------ generator
def test_generator_is_deterministic(tmp_path: Path) -> None:
    a = generate_h2crop(tmp_path / "a", 2, splits={"train": 2}, seed=3, **SMALL)
    b = generate_h2crop(tmp_path / "b", 2, splits={"train": 2}, seed=3, **SMALL)
    c = generate_h2crop(tmp_path / "c", 2, splits={"train": 2}, seed=4, **SMALL)
    ra = H2CropDataset(a, "train", with_priors=True).read_raw(1)
    rb = H2CropDataset(b, "train", with_priors=True).read_raw(1)
    rc = H2CropDataset(c, "train", with_priors=True).read_raw(1)
    assert set(ra) == {"S2", "EnMAP", "label", "priors"}
    assert all(np.array_equal(ra[k], rb[k]) for k in ra)
    assert not np.array_equal(ra["S2"], rc["S2"])


def test_generator_splits_and_checks(tmp_path: Path) -> None:
    root = generate_h2crop(tmp_path / "s", 5, splits={"train": 3, "test": 2}, **SMALL)
    assert (root / "data_lists" / "test.txt").read_text().split() == ["sample_004",
                                                                       "sample_005"]
    with pytest.raises(DataError, match="multiple of hyper_size"):
        generate_h2crop(tmp_path / "x", 1, size=24, hyper_size=7)
    with pytest.raises(DataError, match="do not add up"):
        generate_h2crop(tmp_path / "x", 3, splits={"train": 1}, **SMALL)


def test_coarse_labels_are_ancestors(gen: Path) -> None:
    tax = default_h2crop_taxonomy()
    assert tax.sizes == [2, 3, 4, 6]
    assert tax == read_taxonomy(gen / "taxonomy.json")
    anc = tax.ancestor_table()  # fine index -> ancestor index per level; on disk index + 1
    ds = H2CropDataset(gen, None, with_priors=True, with_hyper=False)
    seen = set()
    for i in range(len(ds)):
        raw = ds.read_raw(i)
        for key in ("label", "priors"):
            lab = raw[key].astype(np.int64)
            fine = lab[3]
            inside = fine > 0
            assert ((lab == 0) == ~inside[None]).all()  # background on every level at once
            for k in range(3):
                np.testing.assert_array_equal(lab[k][inside], anc[fine[inside] - 1, k] + 1)
            seen |= set(np.unique(fine[inside]).tolist())
    assert len(seen) >= 4  # several classes, not one


@pytest.mark.realdata
def test_level_ids_of_the_real_tree(real_data_dir: Path, tmp_path: Path) -> None:
    """With the H2Crop tree the stored numbers are the table's ids (not the tree order)."""
    tax = load_h2crop(real_data_dir, download=False)
    ids = h2crop_level_ids(tax)
    assert [len(v) for v in ids] == [s - 1 for s in H2CROP_LEVEL_SIZES]
    root = generate_h2crop(tmp_path, 1, splits={"train": 1}, taxonomy=tax, **SMALL)
    lab = H2CropDataset(root, "train", with_hyper=False).read_raw(0)["label"].astype(int)
    codes = [np.asarray([int(c) for c in tax.codes(k)]) for k in range(4)]
    anc = tax.ancestor_table()
    fine = lab[3][lab[3] > 0]
    assert (lab.max(axis=(1, 2)) <= [6, 36, 82, 101]).all()
    row = np.searchsorted(codes[3], fine)  # level-4 codes are in order
    for k in range(3):
        np.testing.assert_array_equal(lab[k][lab[3] > 0], codes[k][anc[row, k]])


def test_priors_change_some_parcels(gen: Path) -> None:
    ds = H2CropDataset(gen, None, with_priors=True, with_hyper=False)
    for i in range(len(ds)):
        raw = ds.read_raw(i)
        fine, before = raw["label"][3], raw["priors"][3]
        inside = fine > 0
        assert np.array_equal(inside, before > 0)  # the same parcels
        changed = fine != before
        assert changed.any() and (inside & ~changed).any()
        assert 0.05 < changed[inside].mean() < 0.7


def test_s2_twins_need_enmap() -> None:
    sig = h2crop_class_signatures(months=12, hyper_bands=50, seed=0)
    assert sig["S2"].shape == (7, 12, 10) and sig["EnMAP"].shape == (7, 50)
    assert sig["s2_twins"] == [(1, 2)]  # winter / spring wheat
    a, b = sig["s2_twins"][0]
    np.testing.assert_array_equal(sig["S2"][a], sig["S2"][b])
    assert np.abs(sig["EnMAP"][a] - sig["EnMAP"][b]).max() > 0.02
    s2 = sig["S2"].reshape(7, -1)
    dist = np.abs(s2[:, None] - s2[None]).max(-1)
    off = ~np.eye(7, dtype=bool)
    off[a, b] = off[b, a] = False
    assert dist[off].min() > 0.01  # every other pair differs in S2
    assert 0 < sig["S2"].min() and sig["S2"].max() < 1


def test_band_stats_match_numpy(gen: Path) -> None:
    ds = H2CropDataset(gen, "train", months=8, normalise=None)
    stats = h2crop_band_stats(ds)
    raws = [ds.read_raw(i) for i in range(len(ds))]
    s2 = np.concatenate([r["S2"] for r in raws]).astype(np.float64)  # [N*T, 10, H, W]
    hyp = np.stack([r["EnMAP"] for r in raws]).astype(np.float64)    # [N, B, h, w]
    np.testing.assert_allclose(stats.mean["S2"], s2.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(stats.std["S2"], s2.std(axis=(0, 2, 3)), rtol=1e-4)
    np.testing.assert_allclose(stats.mean["EnMAP"], hyp.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(stats.std["EnMAP"], hyp.std(axis=(0, 2, 3)), rtol=1e-4)
    assert set(H2CropDataset(gen, "train", with_hyper=False).band_stats().mean) == {"S2"}
    # the statistics normalise the same data to mean 0, std 1
    x = torch.cat([H2CropDataset(gen, "train", months=8, normalise=stats)[i][0]["S2"]
                   for i in range(2)])
    np.testing.assert_allclose(x.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-3)
    np.testing.assert_allclose(x.std(dim=(0, 2, 3), correction=0).numpy(), 1, atol=1e-3)
