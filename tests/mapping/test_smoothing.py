"""Bayesian smoothing of probability maps: removes salt and pepper, never touches the
pixels above the user's threshold, and tiled output equals untiled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from cropscope.errors import DataError
from cropscope.mapping.smoothing import isolated_fraction, smooth_map, smooth_probabilities

CLASSES = ["maize", "soy", "forest"]


def _write(path: Path, data: np.ndarray, classes: list[str]) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype="uint8", nodata=255, crs="EPSG:32721",
                       transform=Affine(10, 0, 500_000, 0, -10, 8_000_000)) as dst:
        dst.write(data)
        dst.update_tags(**{f"class_{i}": c for i, c in enumerate(classes)})
    return path


def noisy_map(folder: Path, seed: int = 0) -> tuple[Path, Path, np.ndarray]:
    """Blocky classes; 8 % of pixels flipped to another class with modest confidence, 1 %
    flipped with high confidence (those must survive the smoothing)."""
    rng = np.random.default_rng(seed)
    h, w = 90, 70
    truth = np.repeat(np.repeat(rng.integers(0, 3, (9, 7)), 10, 0), 10, 1)
    label = truth.copy()
    noise = rng.random((h, w))
    flip = noise < 0.09
    label[flip] = (truth[flip] + rng.integers(1, 3, flip.sum())) % 3
    top = np.where(noise < 0.01, 0.9, np.where(flip, 0.5, rng.uniform(0.6, 0.8, (h, w))))
    proba = np.zeros((3, h, w))
    for k in range(3):
        proba[k] = np.where(label == k, top, (1 - top) / 2)
    q = np.rint(proba * 254).astype(np.uint8)
    lab = label.astype(np.uint8)
    q[:, :2, :3] = 255
    lab[:2, :3] = 255
    return (_write(folder / "map_probabilities.tif", q, CLASSES),
            _write(folder / "map.tif", lab[None], CLASSES), proba)


def test_smoothing_removes_isolated_pixels_and_keeps_confident_ones(tmp_path: Path) -> None:
    prob, lab, proba = noisy_map(tmp_path)
    res = smooth_map(prob, tmp_path / "smooth", window=5, smoothness=10, keep_above=0.85)
    print(f"isolated pixels: {res.isolated_before:.4f} -> {res.isolated_after:.4f}")
    assert res.isolated_before > 0.04 and res.isolated_after < res.isolated_before / 3
    with rasterio.open(lab) as a, rasterio.open(res.paths["labels"]) as b:
        before, after = a.read(1), b.read(1)
        assert b.tags()["class_0"] == "maize"
    confident = (before != 255) & (proba.max(axis=0) >= 0.85)
    assert confident.sum() > 20
    np.testing.assert_array_equal(after[confident], before[confident])
    assert (after[before == 255] == 255).all() and (after[before != 255] != 255).all()


def test_tiled_equals_untiled(tmp_path: Path) -> None:
    prob, _, _ = noisy_map(tmp_path, seed=3)
    one = smooth_map(prob, tmp_path / "one", window=7, neigh_fraction=0.5, keep_above=0.85,
                     tile=512)
    tiled = smooth_map(prob, tmp_path / "tiled", window=7, neigh_fraction=0.5,
                       keep_above=0.85, tile=32)
    assert tiled.n_windows > 4
    for name in ("labels", "probabilities"):
        with rasterio.open(one.paths[name]) as a, rasterio.open(tiled.paths[name]) as b:
            np.testing.assert_array_equal(a.read(), b.read())


def test_full_neighbourhood_equals_fraction_one_by_brute_force() -> None:
    rng = np.random.default_rng(1)
    p = rng.dirichlet([1, 1, 1], (12, 11)).transpose(2, 0, 1)
    p[:, 3, 4] = np.nan
    fast = smooth_probabilities(p, window=3, neigh_fraction=1.0)
    slow = smooth_probabilities(p, window=3, neigh_fraction=0.999999)  # the sorting path
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)
    assert np.isnan(fast[:, 3, 4]).all()
    np.testing.assert_allclose(np.nansum(fast, axis=0)[np.isfinite(fast[0])], 1, rtol=1e-5)


def test_bad_settings() -> None:
    p = np.full((2, 5, 5), 0.5)
    for kw in ({"window": 4}, {"smoothness": 0}, {"smoothness": float("nan")},
               {"neigh_fraction": 0}, {"keep_above": 2}):
        with pytest.raises(DataError):
            smooth_probabilities(p, **kw)


def test_labels_on_another_grid_are_refused_before_the_job(tmp_path: Path) -> None:
    prob, _, _ = noisy_map(tmp_path)
    other = _write(tmp_path / "other.tif", np.zeros((1, 24, 24), dtype=np.uint8), CLASSES)
    with pytest.raises(DataError, match="not on the grid"):
        smooth_map(prob, tmp_path / "out", labels=other, keep_above=0.6)
    assert not (tmp_path / "out").exists()


def test_isolated_fraction_counts_lone_pixels(tmp_path: Path) -> None:
    lab = np.zeros((1, 20, 20), dtype=np.uint8)
    lab[0, 5, 5] = 1
    lab[0, 10, 10:12] = 2  # a pair: not isolated
    path = _write(tmp_path / "l.tif", lab, ["a", "b", "c"])
    assert isolated_fraction(path, block=7) == pytest.approx(1 / 400)
