"""Per-level labels of a TimeSeriesSet with a taxonomy."""

from __future__ import annotations

import numpy as np
import pytest

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.taxonomy import Taxonomy
from tests.conftest import make_toy_set


def toy_taxonomy() -> Taxonomy:
    return Taxonomy.from_paths(
        [("crop", "class_0"), ("crop", "class_1"), ("other", "class_2")],
        levels=["cover", "class"],
    )


def test_with_taxonomy_gives_every_level() -> None:
    ts = make_toy_set(n_per_class=5).with_taxonomy(toy_taxonomy())
    assert ts.level_labels.shape == (15, 2)
    assert ts.classes == ["class_0", "class_1", "class_2"]
    cover = ts.at_level("cover")
    assert cover.classes == ["crop", "other"]
    assert cover.class_counts() == {"crop": 10, "other": 5}
    assert cover.label_level == 0 and ts.label_level == 1
    back = cover.at_level(-1)
    assert (back.labels == ts.labels).all()


def test_levels_survive_subset_replace_and_parquet(tmp_path) -> None:
    ts = make_toy_set(n_per_class=5).with_taxonomy(toy_taxonomy())
    sub = ts.subset(np.array([0, 14]))
    assert sub.level_labels.tolist() == [[0, 0], [1, 2]]
    assert sub.replace(values=sub.values * 2).level_labels.tolist() == [[0, 0], [1, 2]]
    back = TimeSeriesSet.read_parquet(ts.to_parquet(tmp_path / "t.parquet"))
    assert back.taxonomy == ts.taxonomy
    np.testing.assert_array_equal(back.level_labels, ts.level_labels)


def test_coarse_only_labels() -> None:
    tax = toy_taxonomy()
    ts = make_toy_set(n_per_class=2)
    names = ["crop", "class_0", "class_1", "class_1", "other", None]
    mixed = TimeSeriesSet.from_labels(ts.values, ts.bands, names, classes=None,
                                      taxonomy=tax)
    assert mixed.level_labels.tolist() == [[0, -1], [0, 0], [0, 1], [0, 1], [1, -1], [-1, -1]]


def test_contradicting_level_labels_are_rejected() -> None:
    ts = make_toy_set(n_per_class=1)
    with pytest.raises(DataError, match="contradict"):
        ts.replace(taxonomy=toy_taxonomy(), level_labels=np.array([[1, 0], [0, 1], [1, 2]]))
    with pytest.raises(DataError, match="need a taxonomy"):
        ts.replace(level_labels=np.zeros((3, 2), dtype=int))
    with pytest.raises(DataError, match="not in taxonomy"):
        ts.with_taxonomy(Taxonomy.from_paths([("crop", "class_0"), ("crop", "class_1")]))
