"""Sample size, allocation and drawing from a map; then the whole road — design a sample,
label it from a known truth, estimate — on a generated map with a known population."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine

from cropscope.assessment import (
    allocate,
    assess_map,
    design_sample,
    draw_stratified_sample,
    sample_size,
    write_sample_points,
)
from cropscope.errors import DataError, EvaluationError

CLASSES = ["maize", "soy", "forest", "water"]


def write_class_map(path: Path, codes: np.ndarray, crs: str = "EPSG:32721",
                    transform: Affine | None = None, names: list[str] | None = None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=codes.shape[1], height=codes.shape[0],
                       count=1, dtype="uint8", crs=crs, nodata=255,
                       transform=transform or Affine(30, 0, 600_000, 0, -30, 8_600_000),
                       tiled=True, blockxsize=64, blockysize=64) as dst:
        dst.write(codes.astype(np.uint8), 1)
        if names is not None:
            dst.update_tags(**{f"class_{i}": n for i, n in enumerate(names)})
    return path


def truth_and_map(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 300 x 260 scene: blocky true classes (one rare), a map with 10 % errors."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.repeat(rng.choice(4, (30, 26), p=[0.3, 0.45, 0.22, 0.03]), 10, 0),
                      10, 1)
    wrong = rng.random(truth.shape) < 0.1
    mapped = np.where(wrong, rng.integers(0, 4, truth.shape), truth)
    mapped[:3, :5] = 255  # a little nodata
    return truth, mapped


def test_sample_size_of_olofsson_example() -> None:
    # Olofsson et al. (2014) section 5.1: S(O) = 0.01 with these weights and accuracies
    n = sample_size([0.02, 0.015, 0.32, 0.645], [0.7, 0.6, 0.9, 0.95], 0.01)
    assert n == 641
    # a class's area share needs its own size; a tighter target needs more points
    assert sample_size([0.02, 0.015, 0.32, 0.645], [0.7, 0.6, 0.9, 0.95], 0.005) > 4 * 600
    assert sample_size([0.5, 0.5], 0.9, 0.02, target_class=0) > 0


@pytest.mark.parametrize("method", ["olofsson", "proportional", "equal", "neyman"])
def test_allocation_sums_and_bounds(method: str) -> None:
    pixels = np.array([100_000, 2_000, 40, 3, 0])
    out = allocate(600, pixels, method, expected_ua=[0.9, 0.7, 0.6, 0.5, 0.8], minimum=50)
    assert out.sum() == 600 and out[4] == 0
    assert (out <= pixels).all() and (out[:4] >= 2).all()
    if method == "olofsson":
        assert out[1] == 50 and out[2] == 40 and out[3] == 3  # rare: minimum, capped
    if method == "proportional":
        assert out[0] > 550


def test_allocation_errors() -> None:
    with pytest.raises(EvaluationError, match="at least"):
        allocate(3, [100, 100], "equal")
    with pytest.raises(EvaluationError, match="exceed"):
        allocate(100, [10_000, 100, 100, 100], "olofsson", minimum=40)
    with pytest.raises(EvaluationError, match="allocation"):
        allocate(100, [100, 100], "random")


def test_drawn_sample_is_reproducible_and_on_its_strata(tmp_path: Path) -> None:
    _, mapped = truth_and_map()
    path = write_class_map(tmp_path / "map.tif", mapped, names=CLASSES)
    a = draw_stratified_sample(path, {0: 30, 1: 30, 3: 10}, seed=4, block=50)
    b = draw_stratified_sample(path, {0: 30, 1: 30, 3: 10}, seed=4, block=50)
    c = draw_stratified_sample(path, {0: 30, 1: 30, 3: 10}, seed=5, block=50)
    np.testing.assert_array_equal(a.rows, b.rows)
    assert not np.array_equal(np.sort(a.rows * 1000 + a.cols), np.sort(c.rows * 1000 + c.cols))
    assert np.bincount(a.codes, minlength=4).tolist() == [30, 30, 0, 10]
    np.testing.assert_array_equal(mapped[a.rows, a.cols], a.codes)
    assert len(set(zip(a.rows.tolist(), a.cols.tolist(), strict=True))) == 70  # no repeats
    # the block size does not change which pixels are drawn... of each class's ranks
    d = draw_stratified_sample(path, {0: 30, 1: 30, 3: 10}, seed=4, block=300)
    assert d.codes.tolist().count(3) == 10


def test_design_then_assess_recovers_the_true_areas(tmp_path: Path) -> None:
    truth, mapped = truth_and_map()
    path = write_class_map(tmp_path / "map.tif", mapped, names=CLASSES)
    design = design_sample(path, n=400, allocation="olofsson", min_per_class=40, seed=1)
    assert sum(design.allocation) == 400 and design.allocation[3] >= 40
    points = write_sample_points(design, tmp_path / "points.gpkg", path)
    gdf = gpd.read_file(points)
    assert len(gdf) == 400 and gdf.crs.to_epsg() == 32721
    # the interpreters label each point from the truth
    gdf["reference"] = [CLASSES[truth[r, c]] for r, c in zip(gdf["row"], gdf["col"],
                                                             strict=True)]
    gdf.to_file(tmp_path / "labelled.gpkg", driver="GPKG")
    res = assess_map(path, tmp_path / "labelled.gpkg", label_column="reference")
    valid = mapped != 255
    for k, name in enumerate(CLASSES):
        true_ha = float(((truth == k) & valid).sum()) * 0.09  # 30 m, near the equator
        est = res.area_ha[name]
        assert abs(est.value - true_ha) < 3.5 * est.se + 1e-9, name
        assert res.mapped_area_ha[name] == pytest.approx(((mapped == k).sum()) * 0.09,
                                                         rel=2e-3)
    true_oa = float((truth == mapped)[valid].mean())
    assert abs(res.overall_accuracy.value - true_oa) < 3.5 * res.overall_accuracy.se
    assert res.overall_accuracy.se < 0.03


def test_geographic_map_is_assessed_in_hectares(tmp_path: Path) -> None:
    truth, mapped = truth_and_map()
    path = write_class_map(tmp_path / "map.tif", mapped, crs="EPSG:4326",
                           transform=Affine(0.0003, 0, -55.0, 0, -0.0003, -12.0),
                           names=CLASSES)
    design = design_sample(path, n=200, allocation="equal", seed=2)
    write_sample_points(design, tmp_path / "p.csv", path)
    import pandas as pd

    frame = pd.read_csv(tmp_path / "p.csv")
    frame["ref"] = [CLASSES[truth[r, c]] for r, c in zip(frame["row"], frame["col"],
                                                         strict=True)]
    frame.to_csv(tmp_path / "p.csv", index=False)
    res = assess_map(path, tmp_path / "p.csv", label_column="ref")
    # 0.0003° at 12°S is about 33 m x 32.6 m: ~0.107 ha per pixel, 260 x 300 pixels
    assert 7_500 < res.total_area_ha < 8_900


def test_stehman_strata_raster_end_to_end(tmp_path: Path) -> None:
    """A sample stratified by an older map (not the map being assessed): estimates through
    --strata agree with the full-grid truth."""
    truth, mapped = truth_and_map(seed=4)
    path = write_class_map(tmp_path / "map.tif", mapped, names=CLASSES)
    rng = np.random.default_rng(9)
    older = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 4, truth.shape))
    older[mapped == 255] = 255
    strata = write_class_map(tmp_path / "older.tif", older, names=["s0", "s1", "s2", "s3"])
    design = design_sample(strata, n=400, min_per_class=40, seed=3)  # drawn from the strata
    write_sample_points(design, tmp_path / "p.csv", strata)
    import pandas as pd

    frame = pd.read_csv(tmp_path / "p.csv")
    frame["ref"] = [CLASSES[truth[r, c]] for r, c in zip(frame["row"], frame["col"],
                                                         strict=True)]
    frame.to_csv(tmp_path / "p.csv", index=False)
    res = assess_map(path, tmp_path / "p.csv", label_column="ref", strata=strata)
    assert res.strata.endswith("older.tif") and res.overall_accuracy.se < 0.04
    assert [s["stratum"] for s in res.stratum_table] == ["s0", "s1", "s2", "s3"]
    valid = mapped != 255
    true_oa = float((truth == mapped)[valid].mean())
    assert abs(res.overall_accuracy.value - true_oa) < 3.5 * res.overall_accuracy.se
    for k, name in enumerate(CLASSES):
        true_ha = float(((truth == k) & valid).sum()) * 0.09
        assert abs(res.area_ha[name].value - true_ha) < 3.5 * res.area_ha[name].se + 1e-9
    # a strata raster on another grid is refused
    other = write_class_map(tmp_path / "other.tif", older[:100], names=["s0", "s1", "s2", "s3"])
    with pytest.raises(DataError, match="not on the map's grid"):
        assess_map(path, tmp_path / "p.csv", label_column="ref", strata=other)


def test_duplicated_points_bad_crs_and_probability_maps_are_refused(tmp_path: Path) -> None:
    """A point listed twice would narrow the intervals falsely; an unknown --points-crs and a
    multi-band (probability) raster are errors, not tracebacks or wrong designs."""
    truth, mapped = truth_and_map()
    path = write_class_map(tmp_path / "map.tif", mapped, names=CLASSES)
    design = design_sample(path, n=120, allocation="olofsson", min_per_class=20, seed=1)
    gdf = gpd.read_file(write_sample_points(design, tmp_path / "points.gpkg", path))
    gdf["reference"] = [CLASSES[truth[r, c]] for r, c in zip(gdf["row"], gdf["col"],
                                                             strict=True)]
    csv = tmp_path / "ref.csv"
    table = gdf.assign(x=gdf.geometry.x, y=gdf.geometry.y).drop(columns="geometry")
    table.to_csv(csv, index=False)
    assert assess_map(path, csv, label_column="reference").overall_accuracy.value > 0.8
    twice = tmp_path / "twice.csv"
    table.iloc[[*range(len(table)), 5]].to_csv(twice, index=False)
    with pytest.raises(DataError, match=r"1 point.*repeat the coordinates"):
        assess_map(path, twice, label_column="reference")
    with pytest.raises(DataError, match="not a known CRS"):
        assess_map(path, csv, label_column="reference", points_crs="EPSG:99999")
    with rasterio.open(tmp_path / "proba.tif", "w", driver="GTiff", width=26, height=30,
                       count=2, dtype="uint8", crs="EPSG:32721",
                       transform=Affine(30, 0, 600_000, 0, -30, 8_600_000)) as dst:
        dst.write(np.zeros((2, 30, 26), dtype=np.uint8))
    with pytest.raises(DataError, match="not a map of class labels"):
        design_sample(tmp_path / "proba.tif", n=50, seed=0)
