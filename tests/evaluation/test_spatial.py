"""Spatially disjoint scene splits and the guard margin."""

from __future__ import annotations

import numpy as np
import pytest

from cropscope.errors import EvaluationError
from cropscope.evaluation.spatial import (
    apply_guard,
    block_split,
    make_spatial_split,
    region_split,
)


def _labels(h: int = 40, w: int = 36, n_classes: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = rng.integers(1, n_classes + 1, size=(h, w))
    lab[rng.random((h, w)) < 0.3] = 0
    return lab


def test_checkerboard_blocks() -> None:
    lab = _labels()
    sp = make_spatial_split("blocks:8", lab)
    assert sp.spec == "blocks:8" and sp.val is None
    assert not (sp.train & sp.test).any() and (sp.train | sp.test).all()
    assert sp.train[0, 0] and sp.test[0, 8] and sp.test[8, 0] and sp.train[8, 8]
    # whole blocks on one side
    for i in range(0, 40, 8):
        for j in range(0, 36, 8):
            block = sp.test[i : i + 8, j : j + 8]
            assert block.all() or not block.any()


def test_random_blocks_are_seeded_and_keep_every_class() -> None:
    lab = _labels()
    a = make_spatial_split("blocks:6:random", lab, seed=3)
    b = make_spatial_split("blocks:6:random", lab, seed=3)
    c = make_spatial_split("blocks:6:random:0.3", lab, seed=4)
    np.testing.assert_array_equal(a.test, b.test)
    assert a.detail["classes_missing_in_a_part"] == [] and a.spec == "blocks:6:random:0.5"
    assert c.test.mean() < a.test.mean() + 0.2 and c.detail["test_fraction"] == 0.3
    with pytest.raises(EvaluationError, match="no random assignment"):
        block_split(np.pad(np.ones((2, 2), int), ((0, 30), (0, 30))), 16, random=True)


@pytest.mark.parametrize("margin", [0, 1, 3])
def test_guard_keeps_train_patches_off_test_pixels(margin: int) -> None:
    lab = _labels()
    sp = make_spatial_split("blocks:8:random", lab, seed=1).guarded(margin)
    test_px = np.argwhere(sp.test)
    train_px = np.argwhere(sp.train)
    assert len(train_px) > 0
    # brute force: the Chebyshev distance of every train pixel to every test pixel > margin
    d = np.abs(train_px[:, None, :] - test_px[None, :, :]).max(axis=2).min(axis=1)
    assert (d > margin).all()
    # and nothing more than needed was dropped: a pixel at distance margin + 1 survives
    base = make_spatial_split("blocks:8:random", lab, seed=1)
    all_train = np.argwhere(base.train)
    d_all = np.abs(all_train[:, None, :] - test_px[None, :, :]).max(axis=2).min(axis=1)
    assert len(train_px) == int((d_all > margin).sum())


def test_apply_guard_margin_zero_and_negative() -> None:
    keep = np.ones((4, 4), bool)
    test = np.zeros((4, 4), bool)
    test[0, 0] = True
    np.testing.assert_array_equal(apply_guard(keep, test, 0), ~test)
    assert apply_guard(keep, test, 1).sum() == 16 - 4
    with pytest.raises(EvaluationError):
        apply_guard(keep, test, -1)


def test_region_split_and_tiles() -> None:
    regions = np.full((8, 8), -1)
    regions[:4, :4], regions[:4, 4:], regions[4:, :4] = 0, 1, 2
    sp = make_spatial_split("tiles", np.ones((8, 8), int), regions=regions,
                            region_roles={0: "train", 1: "validation", 2: "test"})
    assert sp.train.sum() == sp.val.sum() == sp.test.sum() == 16
    assert not sp.train[4:, 4:].any() and not sp.test[4:, 4:].any()
    g = sp.guarded(1)
    # the validation tile touches the test tile at one corner (Chebyshev distance 1)
    assert g.train.sum() == 12 and g.val.sum() == 15 and g.detail["guard_margin"] == 1
    with pytest.raises(EvaluationError, match="train and test"):
        region_split(regions, {0: "train", 1: "train"})
    with pytest.raises(EvaluationError, match="predefined tiles"):
        make_spatial_split("tiles", np.ones((8, 8), int))


@pytest.mark.parametrize("spec", ["blocks", "blocks:x", "blocks:4:shuffled", "grid:4", "tiles:2"])
def test_unknown_specs_are_clear_errors(spec: str) -> None:
    with pytest.raises(EvaluationError, match="unknown spatial split"):
        make_spatial_split(spec, np.ones((4, 4), int))


def test_block_ids_are_the_blocks_of_block_split() -> None:
    from cropscope.evaluation.spatial import block_ids, block_split

    labels = np.ones((13, 17), dtype=np.int32)
    ids = block_ids(labels.shape, 4)
    assert ids.shape == (13, 17) and np.unique(ids).size == 4 * 5  # ceil(13/4) x ceil(17/4)
    split = block_split(labels, 4)
    for k in np.unique(ids):  # each block lies wholly on one side of the checkerboard
        part = split.test[ids == k]
        assert part.all() or not part.any()
    assert ids[0, 0] == 0 and ids[4, 0] == 5 and ids[12, 16] == 19
