"""The registered datasets read from the real data folder (figures from each SOURCE.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.data.registry import dataset_status, list_datasets, load_dataset

pytestmark = pytest.mark.realdata

SITS_9 = {
    "Cerrado": 400, "Soy_Cotton": 399, "Soy_Corn": 398, "Pasture": 370, "Soy_Millet": 235,
    "Forest": 138, "Soy_Fallow": 88, "Soy_Sunflower": 53, "Fallow_Cotton": 34,
}  # fmt: skip
SITS_4BANDS = {
    "Cerrado": 379, "Soy_Corn": 364, "Soy_Cotton": 352, "Pasture": 344, "Soy_Millet": 180,
    "Forest": 131, "Soy_Fallow": 87, "Fallow_Cotton": 29, "Soy_Sunflower": 26,
}  # fmt: skip
SITS_NDVI = {"Cerrado": 379, "Soy_Corn": 364, "Pasture": 344, "Forest": 131}
SITS_CASES = [
    ("sits-matogrosso", (2115, 23, 6), ["mir", "blue", "nir", "red", "evi", "ndvi"], SITS_9),
    ("sits-matogrosso-4bands", (1892, 23, 4), ["NDVI", "EVI", "NIR", "MIR"], SITS_4BANDS),
    ("sits-matogrosso-ndvi", (1218, 12, 1), ["NDVI"], SITS_NDVI),
]
TEMPCNN_CLASSES = [
    "wheat", "barley", "rapeseed", "corn", "soy", "sunflower", "sorghum", "pea", "grassland",
    "deciduous", "conifer", "water", "urban",
]  # fmt: skip


@pytest.fixture(scope="module")
def load(real_data_dir: Path) -> Callable[..., TimeSeriesSet]:
    """Load each (dataset, split) once per module, from the real folder only."""
    cache: dict[tuple[str, str | None], TimeSeriesSet] = {}

    def get(name: str, split: str | None = None) -> TimeSeriesSet:
        if (name, split) not in cache:
            cache[name, split] = load_dataset(name, split, root=real_data_dir, download=False)
        return cache[name, split]

    return get


def test_local_files_match_registered_checksums(real_data_dir: Path) -> None:
    for spec in list_datasets():
        assert dataset_status(spec.name, root=real_data_dir, verify=True) == "local", spec.name


@pytest.mark.parametrize(("name", "shape", "bands", "counts"), SITS_CASES)
def test_sits_samples(load, name, shape, bands, counts) -> None:
    ts = load(name)
    assert ts.values.shape == shape
    assert ts.bands == bands
    assert ts.class_counts() == {c: counts[c] for c in sorted(counts)}
    assert ts.n_classes == len(counts)
    assert np.isfinite(ts.values).all() and ts.mask.all()
    assert -0.16 < ts.values.min() < -0.15 or name == "sits-matogrosso-ndvi"
    assert ts.values.max() < 1.15
    # per-sample calendar dates, increasing, starting in September (agricultural year)
    assert ts.dates.dtype == np.dtype("datetime64[D]")
    assert ts.dates.shape == shape[:2]
    assert (np.diff(ts.dates.astype(np.int64), axis=1) > 0).all()
    first = ts.dates[:, 0]
    assert ((first.astype("datetime64[M]").astype(np.int64) % 12) == 8).all()
    assert str(ts.dates.min()) == "2000-09-13" and str(ts.dates.max()) == "2016-08-28"
    # meta: start year of the season, coordinates in Mato Grosso
    assert list(ts.meta.columns) == ["longitude", "latitude", "year"]
    years = ts.meta["year"].to_numpy()
    np.testing.assert_array_equal(years, first.astype("datetime64[Y]").astype(np.int64) + 1970)
    assert len(np.unique(years)) == 16 and years.min() == 2000 and years.max() == 2015
    assert ts.meta["longitude"].between(-60.49, -51.56).all()
    assert ts.meta["latitude"].between(-17.44, -9.31).all()
    assert len(np.unique(ts.ids)) == len(ts)


def test_sits_first_sample_values(load) -> None:
    """Spot check against the first rows of the first tibble (Pasture, 2013-09-14)."""
    ts = load("sits-matogrosso")
    assert ts.label_names[0] == "Pasture" and ts.ids[0] == 1
    assert str(ts.dates[0, 0]) == "2013-09-14" and str(ts.dates[0, 1]) == "2013-09-30"
    np.testing.assert_allclose(
        ts.values[0, 0], [0.3067, 0.0538, 0.3160, 0.1393, 0.2526, 0.3880], atol=1e-6
    )
    four = load("sits-matogrosso-4bands")
    np.testing.assert_allclose(four.values[0, 0], [0.3880, 0.2526, 0.3160, 0.3067], atol=1e-6)


def test_sits_matches_converted_copy(load, real_data_dir: Path) -> None:
    """The .rda reader agrees with the folder's independent conversion (.npz)."""
    ts = load("sits-matogrosso")
    ref = np.load(real_data_dir / "sits_matogrosso" / "samples_mt_9classes.npz")
    np.testing.assert_array_equal(ts.values, ref["X"])
    np.testing.assert_array_equal(ts.dates.astype(np.int64), ref["days_since_1970"])
    np.testing.assert_array_equal(ts.label_names.astype(str), ref["y"])


def test_tempcnn_splits(load) -> None:
    train, test, both = (
        load("tempcnn-formosat2", "train"),
        load("tempcnn-formosat2", "test"),
        (load("tempcnn-formosat2")),
    )
    for part in (train, test):
        assert part.values.shape == (260, 149, 3)
        assert part.class_counts() == dict.fromkeys(TEMPCNN_CLASSES, 20)
    assert both.values.shape == (520, 149, 3)
    assert both.bands == ["NIR", "R", "G"] and both.classes == TEMPCNN_CLASSES
    assert both.dates is None
    assert both.meta["split"].tolist() == ["train"] * 260 + ["test"] * 260
    np.testing.assert_array_equal(both.values[260:], test.values)
    assert list(both.ids[:2]) == ["train-0", "train-1"] and both.ids[260] == "test-0"
    assert (both.meta["group"] == both.meta["polygon_id"]).all()
    assert train.meta["polygon_id"].nunique() == 149 and test.meta["polygon_id"].nunique() == 142
    assert not set(train.meta["polygon_id"]) & set(test.meta["polygon_id"])
    assert 11.0 < both.values.min() < 12.0 and 556.0 < both.values.max() < 558.0
    # first training row: class 0, polygon 21, first date NIR/R/G = 143, 62, 50
    assert train.label_names[0] == "wheat" and train.meta["polygon_id"][0] == 21
    np.testing.assert_array_equal(train.values[0, 0], [143.0, 62.0, 50.0])


def test_ucr_crop(load) -> None:
    ts = load("ucr-crop")
    assert ts.values.shape == (7200, 46, 1) and ts.bands == ["NDVI"]
    assert ts.dates is None
    assert ts.n_classes == 24 and set(ts.class_counts().values()) == {300}
    assert ts.classes[0] == "corn" and ts.classes[8] == "fallow" and ts.classes[23] == "lake"
    # SOURCE.md gives -1.014..1.051 for the archive; the TRAIN split alone tops out at 0.968
    assert ts.values.min() == pytest.approx(-1.014) and ts.values.max() == pytest.approx(0.968)
    assert ts.label_names[0] == "corn"
    np.testing.assert_allclose(ts.values[0, :3, 0], [0.24, 0.257, 0.274], atol=1e-6)
    assert load("ucr-crop", "train") is not ts  # explicit split gives the same data
    np.testing.assert_array_equal(load("ucr-crop", "train").values, ts.values)
