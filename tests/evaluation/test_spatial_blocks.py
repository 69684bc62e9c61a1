"""Spatial-block cross-validation of tables: block ids from coordinates, group folds,
per-fold class counts, and the warning (or --strict error) for a fold that trains without
a class."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import EvaluationError
from cropscope.evaluation import cross_validate, write_report
from cropscope.evaluation.spatial import (
    EARTH_RADIUS_M,
    coordinate_blocks,
    parse_block_size,
)
from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.evaluation.test_crossval import CentroidClassifier


def clustered_set(seed: int = 0, isolate: str | None = "class_2") -> TimeSeriesSet:
    """Three separable classes on a 3x3 grid of 1° cells; with ``isolate`` every sample of
    that class sits in one cell (as Forest in the Mato Grosso samples)."""
    rng = np.random.default_rng(seed)
    n_per, t = 30, 10
    steps = np.arange(t)
    values, labels, lon, lat = [], [], [], []
    for k in range(3):
        curve = np.exp(-0.5 * ((steps - 2 - 3 * k) / 1.5) ** 2)
        for _ in range(n_per):
            values.append(curve[:, None] + rng.normal(0, 0.05, (t, 1)))
            labels.append(f"class_{k}")
            if isolate == f"class_{k}":
                cell = (1, 1)
            else:
                cell = tuple(rng.integers(0, 3, 2))
                while cell == (1, 1) and isolate is not None:
                    cell = tuple(rng.integers(0, 3, 2))
            lon.append(-55.0 + cell[0] + rng.uniform(0.05, 0.95))
            lat.append(-12.0 + cell[1] + rng.uniform(0.05, 0.95))
    return TimeSeriesSet.from_labels(
        np.asarray(values, np.float32), ["NDVI"], labels,
        meta=pd.DataFrame({"longitude": lon, "latitude": lat}))


# ---------------------------------------------------------------------------- sizes
@pytest.mark.parametrize(("text", "value", "unit"), [
    ("0.5deg", 0.5, "deg"), ("0.5 deg", 0.5, "deg"), ("2°", 2.0, "deg"),
    ("10km", 10_000.0, "m"), ("5000m", 5000.0, "m"), ("1e3m", 1000.0, "m"),
])
def test_parse_block_size(text: str, value: float, unit: str) -> None:
    size = parse_block_size(text)
    assert size.value == pytest.approx(value) and size.unit == unit and size.text == text


@pytest.mark.parametrize("text", ["0.5", "10 miles", "-1km", "0deg", "km", ""])
def test_parse_block_size_refuses(text: str) -> None:
    with pytest.raises(EvaluationError, match="block size"):
        parse_block_size(text)


def test_degree_blocks_follow_the_graticule() -> None:
    meta = pd.DataFrame({"longitude": [-55.9, -55.6, -55.4, 10.2],
                         "latitude": [-12.1, -12.4, -12.1, 45.0]})
    ids, detail = coordinate_blocks(meta, "0.5deg")
    # floor(lon / 0.5), floor(lat / 0.5)
    assert ids.tolist() == ["-112_-25", "-112_-25", "-111_-25", "20_90"]
    assert detail["n_blocks"] == 3 and detail["block_unit"] == "deg"


def test_metric_blocks_on_longitude_latitude() -> None:
    lat0 = 48.0
    lon = np.array([2.0, 2.0 + 0.05, 2.0 + 0.2])
    lat = np.full(3, lat0)
    ids, detail = coordinate_blocks(pd.DataFrame({"longitude": lon, "latitude": lat}), "10km")
    x = EARTH_RADIUS_M * np.deg2rad(lon) * np.cos(np.deg2rad(lat0))
    expected = [f"{int(np.floor(v / 1e4))}_{int(np.floor(EARTH_RADIUS_M * np.deg2rad(lat0) / 1e4))}"
                for v in x]
    assert ids.tolist() == expected
    assert "equirectangular" in detail["coordinates"]
    # projected x/y win for a metric size
    xy = pd.DataFrame({"x": [500.0, 10_500.0], "y": [0.0, 0.0], "longitude": [0, 0],
                       "latitude": [0, 0]})
    ids, detail = coordinate_blocks(xy, "10km")
    assert ids.tolist() == ["0_0", "1_0"] and detail["coordinates"] == "x/y (metres)"


def test_blocks_need_coordinates() -> None:
    with pytest.raises(EvaluationError, match="coordinates"):
        coordinate_blocks(pd.DataFrame({"region": ["a"]}), "1deg")
    with pytest.raises(EvaluationError, match="no coordinates"):
        coordinate_blocks(pd.DataFrame({"longitude": [1.0, np.nan], "latitude": [1.0, 2.0]}),
                          "1deg")
    with pytest.raises(EvaluationError, match="range of degrees"):
        coordinate_blocks(pd.DataFrame({"longitude": [500_000.0], "latitude": [4e6]}), "1deg")


# ---------------------------------------------------------------------------- folds
def test_spatial_block_cv_keeps_blocks_whole_and_counts_classes() -> None:
    ts = clustered_set(isolate=None)
    res = cross_validate(CentroidClassifier, ts, cv=3, seed=0, spatial_blocks="1deg")
    blocks, _ = coordinate_blocks(ts.meta, "1deg")
    # no block on both sides: every block's samples share one test fold
    for b in set(blocks):
        assert len(set(res.fold[blocks == b].tolist())) == 1
    assert res.config["spatial_blocks"] == "1deg" and res.config["group"] is None
    assert res.config["n_blocks"] == len(set(blocks))
    labels = ts.label_names
    for f, fold in zip(res.fold_metrics, range(3), strict=True):
        test = res.fold == fold
        assert f["test_class_counts"] == dict(pd.Series(labels[test]).value_counts().sort_index())
        assert f["train_class_counts"] == dict(
            pd.Series(labels[~test]).value_counts().sort_index())
        assert sorted(f["test_groups"]) == sorted(set(blocks[test]))


def test_fold_without_a_class_warns_naming_it(tmp_path: Path) -> None:
    ts = clustered_set(isolate="class_2")
    with pytest.warns(UserWarning, match=r"trains without class 'class_2' \(30 test samples\)"):
        res = cross_validate(CentroidClassifier, ts, cv=3, seed=0, spatial_blocks="1deg")
    missing = {f["fold"]: f["missing_in_train"] for f in res.fold_metrics}
    assert sorted(v for v in missing.values() if v) == [["class_2"]]
    assert list(res.config["folds_missing_classes"].values()) == [["class_2"]]
    # the isolated class is never predicted where it was held out
    names = np.asarray(res.classes)
    isolated = ts.label_names == "class_2"
    assert not (names[res.y_pred[isolated]] == "class_2").any()
    files = write_report(res, tmp_path, plots=False)
    folds = pd.read_csv(files["folds.csv"])
    assert folds["missing_in_train"].fillna("").tolist().count("class_2") == 1
    assert folds["test_class_counts"].str.contains("class_0:").any()
    saved = json.loads(files["metrics.json"].read_text())
    assert saved["folds"][0]["train_class_counts"]


def test_strict_refuses_before_training() -> None:
    ts = clustered_set(isolate="class_2")
    fits = []

    def factory() -> CentroidClassifier:
        fits.append(1)
        return CentroidClassifier()

    with pytest.raises(EvaluationError, match=r"trains without class 'class_2'.*strict"):
        cross_validate(factory, ts, cv=3, seed=0, spatial_blocks="1deg", strict=True)
    assert fits == []


def test_random_folds_do_not_warn() -> None:
    ts = clustered_set(isolate="class_2")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        res = cross_validate(CentroidClassifier, ts, cv=3, seed=0)
    assert all(not f["missing_in_train"] for f in res.fold_metrics)


def test_group_and_blocks_exclusive() -> None:
    ts = clustered_set().replace(meta=clustered_set().meta.assign(region="a"))
    with pytest.raises(EvaluationError, match="not both"):
        cross_validate(CentroidClassifier, ts, cv=3, group="region", spatial_blocks="1deg")


# ---------------------------------------------------------------------------- command line
@pytest.fixture
def clustered_table(tmp_path: Path) -> Path:
    path = tmp_path / "clustered.csv"
    clustered_set(isolate="class_2").to_long().drop(columns="valid").to_csv(path, index=False)
    return path


def test_cli_spatial_blocks_warns_and_lists_folds(clustered_table: Path) -> None:
    proc = run_cli("evaluate", "--table", str(clustered_table), "--model", "rf", "--cv", "3",
                   "--spatial-blocks", "1deg", "--set", "n_estimators=10")
    warning_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warning_lines) == 1 and "'class_2'" in warning_lines[0], proc.stderr
    assert "missing in train" in proc.stdout and "class_2 30" in proc.stdout
    proc = run_cli("evaluate", "--table", str(clustered_table), "--model", "rf", "--cv", "3",
                   "--spatial-blocks", "1deg", "--json", "--set", "n_estimators=10")
    result = json.loads(proc.stdout)
    assert result["config"]["spatial_blocks"] == "1deg"
    assert all("test_class_counts" in f for f in result["folds"])


def test_cli_strict_is_one_error_line(clustered_table: Path) -> None:
    proc = run_cli("evaluate", "--table", str(clustered_table), "--model", "rf", "--cv", "3",
                   "--spatial-blocks", "1deg", "--strict", check=False)
    assert proc.returncode == 2
    assert_one_line_error(proc, "class_2", "strict")
    proc = run_cli("evaluate", "--table", str(clustered_table), "--model", "rf",
                   "--spatial-blocks", "3 furlongs", check=False)
    assert_one_line_error(proc, "block size")
