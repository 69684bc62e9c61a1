"""The real taxonomies: H2Crop, EuroCrops HCAT, country crosswalks, shipped hierarchies."""

from __future__ import annotations

import pytest

from cropscope.data import load_dataset
from cropscope.taxonomy import (
    builtin_taxonomy,
    crosswalk_country,
    h2crop_hcat_codes,
    list_builtin_taxonomies,
    load_h2crop,
    load_hcat,
)
from cropscope.taxonomy.sources import hcat_depth, hcat_parent

pytestmark = pytest.mark.realdata


def test_h2crop_levels(real_data_dir) -> None:
    tax = load_h2crop(root=real_data_dir)
    assert tax.sizes == [6, 36, 82, 101]
    assert tax.is_complete
    assert tax.path("winter_common_soft_wheat") == [
        "arable_crops", "cereal", "common_soft_wheat", "winter_common_soft_wheat",
    ]


def test_hcat_codes_define_the_tree(real_data_dir) -> None:
    hcat = load_hcat(root=real_data_dir)
    assert sum(hcat.sizes) == 384 and hcat.sizes == [1, 1, 9, 60, 193, 120]
    assert hcat_parent("3301010101") == "3301010100" and hcat_depth("3301010101") == 5
    assert hcat.path("winter_common_soft_wheat") == [
        "characteristics", "crop_type", "arable_crops", "cereal", "common_soft_wheat",
        "winter_common_soft_wheat",
    ]
    assert not hcat.is_complete and hcat.complete().n_classes(-1) > 120


def test_h2crop_leaves_against_hcat_top_level(real_data_dir) -> None:
    """Which H2Crop leaves roll up to the same top-level class in both tables."""
    h2 = load_h2crop(root=real_data_dir)
    hcat = load_hcat(root=real_data_dir)
    hcat_codes = {n.code for n in hcat.nodes()}
    hcat_name = {n.code: n.name for n in hcat.nodes()}
    same, differ, not_in_hcat = [], [], []
    for leaf, code in h2crop_hcat_codes(root=real_data_dir).items():
        if code not in hcat_codes:
            not_in_hcat.append(leaf)
            continue
        chain = [code]
        while (parent := hcat_parent(chain[-1])) is not None:
            chain.append(parent)
        # HCAT3: characteristics > crop_type > top class (arable_crops, ...) > ...
        hcat_top = hcat_name[chain[-3]] if len(chain) >= 3 else None
        (same if hcat_top == h2.path(leaf)[0] else differ).append(leaf)
    # measured on the real tables: every leaf found in HCAT3 agrees on its top-level class;
    # the one code missing from HCAT3.csv is topinambur (SOURCE.md says the same)
    assert not_in_hcat == ["topinambur_jerusalem_artichoke"]
    assert differ == []
    assert len(same) == 100


@pytest.mark.parametrize("country", ["at_2021", "fr_2018"])
def test_country_crosswalk_to_h2crop(real_data_dir, country: str) -> None:
    h2 = load_h2crop(root=real_data_dir)
    hcat = load_hcat(root=real_data_dir)
    result = crosswalk_country(
        real_data_dir / f"eurocrops_hcat/csvs/country_mappings/{country}.csv",
        h2, h2crop_hcat_codes(root=real_data_dir), hcat=hcat,
    )
    counts = result.counts
    assert counts["mapped"] + counts["unmapped"] == len(result.table) > 200
    assert counts["exact"] > 150 and counts["unmapped"] < 0.1 * len(result.table)
    table = result.table
    # an exact row carries every level; a broader row stops at its level
    exact = table[table.status == "exact"].iloc[0]
    assert all(exact[lv] for lv in h2.levels)
    broader = table[table.status == "broader"]
    assert broader["level4"].isna().sum() > 0
    # consistency: the level-4 class of every exact row rolls up to its level-1 class
    for _, row in table[table.status == "exact"].iterrows():
        assert h2.path(row["level4"])[0] == row["level1"]
    summary = result.to_dict()
    assert summary["unmapped"] == len(summary["unmapped_codes"])


def test_crosswalk_never_lands_on_a_narrower_class(real_data_dir) -> None:
    import pandas as pd

    h2 = load_h2crop(root=real_data_dir)
    rows = pd.DataFrame({
        "original_code": ["a", "b", "c", "d"],
        "original_name": ["winter emmer", "winter wheat", "winter spelt", "no code"],
        "HCAT3_code": ["3301011201", "3301010101", "3301011001", None],
        "HCAT3_name": ["winter_emmer", "winter_common_soft_wheat", "winter_spelt", None],
    })
    result = crosswalk_country(rows, h2, h2crop_hcat_codes(root=real_data_dir),
                               hcat=load_hcat(root=real_data_dir))
    emmer, wheat, spelt, none = result.table.to_dict("records")
    assert wheat["status"] == "exact" and wheat["level4"] == "winter_common_soft_wheat"
    # H2Crop has no emmer: it stays "cereal" instead of borrowing a sibling's class
    assert emmer["status"] == "broader" and emmer["target_level"] == "level2"
    assert emmer["level2"] == "cereal" and pd.isna(emmer["level3"])
    # H2Crop's "spelt" leaf covers all spelt, so winter spelt lands there, as broader
    assert spelt["status"] == "broader" and spelt["level4"] == "spelt"
    assert none["status"] == "unmapped"


@pytest.mark.parametrize(
    ("dataset", "split", "sizes"),
    [("sits-matogrosso", None, [3, 5, 9]), ("sits-matogrosso-ndvi", None, [3, 4, 4]),
     ("ucr-crop", None, [3, 7, 24]), ("tempcnn-formosat2", "train", [3, 6, 13])],
)
def test_shipped_hierarchies_cover_the_datasets(real_data_dir, dataset, split, sizes) -> None:
    ts = load_dataset(dataset, split=split, root=real_data_dir, hierarchical=True)
    assert ts.taxonomy is not None and ts.taxonomy.sizes == sizes
    assert (ts.level_labels >= 0).all()
    assert ts.classes == ts.taxonomy.classes(-1)
    coarse = ts.at_level(0)
    assert sum(coarse.class_counts().values()) == ts.n_samples


def test_list_builtin() -> None:
    names = list_builtin_taxonomies()
    assert {"sits-matogrosso", "ucr-crop", "tempcnn-formosat2"} <= set(names)
    for name in names:
        assert builtin_taxonomy(name).is_complete
