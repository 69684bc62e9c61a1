"""Active learning proposals: the most uncertain pixels, spread out, away from existing
samples, reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cropscope.errors import DataError
from cropscope.mapping.active import propose_samples, uncertainty_scores
from tests.mapping.test_smoothing import _write


def _prob_map(folder: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    h, w = 80, 60
    top = rng.uniform(0.8, 0.99, (h, w))
    top[20:30, 10:50] = rng.uniform(0.34, 0.4, (10, 40))  # an uncertain strip
    proba = np.stack([top, (1 - top) * 0.6, (1 - top) * 0.4])
    q = np.rint(proba * 254).astype(np.uint8)
    q[:, :5, :5] = 255
    return _write(folder / "p.tif", q, ["a", "b", "c"]), proba


def test_scores() -> None:
    p = np.array([[0.5, 0.9, 1 / 3], [0.5, 0.1, 1 / 3], [0.0, 0.0, 1 / 3]])
    ent = uncertainty_scores(p, "entropy")
    assert ent[2] == pytest.approx(1.0) and ent[1] < ent[0] < ent[2]
    assert uncertainty_scores(p, "margin")[0] == pytest.approx(1.0)
    assert uncertainty_scores(p, "least-confidence")[1] == pytest.approx(0.1)
    with pytest.raises(DataError):
        uncertainty_scores(p, "random")


@pytest.mark.parametrize("method", ["entropy", "margin", "least-confidence"])
def test_proposals_are_uncertain_spread_and_reproducible(tmp_path: Path, method: str) -> None:
    path, proba = _prob_map(tmp_path)
    a = propose_samples(path, 12, method=method, min_distance=6, block=16)
    b = propose_samples(path, 12, method=method, min_distance=6, block=64)
    assert len(a.rows) == 12
    np.testing.assert_array_equal(a.rows, b.rows)  # the window size does not matter
    in_strip = (a.rows >= 20) & (a.rows < 30) & (a.cols >= 10) & (a.cols < 50)
    assert in_strip.sum() >= 8  # the strip holds the most uncertain pixels
    gaps = np.maximum(np.abs(a.rows[:, None] - a.rows[None]),
                      np.abs(a.cols[:, None] - a.cols[None]))
    assert gaps[~np.eye(12, dtype=bool)].min() >= 6
    q = np.rint(proba * 254)[:, a.rows, a.cols]  # the map's most probable class there
    assert a.map_class == [["a", "b", "c"][i] for i in q.argmax(axis=0)]


def test_existing_samples_are_avoided_and_points_written(tmp_path: Path) -> None:
    import geopandas as gpd

    path, _ = _prob_map(tmp_path)
    first = propose_samples(path, 5, min_distance=5)
    again = propose_samples(path, 5, min_distance=5, exclude=(first.x, first.y))
    gaps = np.maximum(np.abs(first.rows[:, None] - again.rows[None]),
                      np.abs(first.cols[:, None] - again.cols[None]))
    assert gaps.min() >= 5
    out = again.write(tmp_path / "next.gpkg")
    gdf = gpd.read_file(out)
    assert len(gdf) == 5 and "label" in gdf.columns and gdf.crs.to_epsg() == 32721
    with pytest.raises(DataError, match="gpkg"):
        again.write(tmp_path / "next.txt")
