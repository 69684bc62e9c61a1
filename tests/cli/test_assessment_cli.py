"""``cropscope sample-design`` then ``cropscope accuracy`` as a user runs them, and the bad
inputs each give one ``error:`` line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from tests.assessment.test_sampling_and_assess import CLASSES, truth_and_map, write_class_map
from tests.cli.test_cli import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("assess")
    truth, mapped = truth_and_map()
    map_path = write_class_map(folder / "map.tif", mapped, names=CLASSES)
    proc = run_cli("sample-design", "--map", str(map_path), "--out", str(folder / "pts.gpkg"),
                   "--target-se", "0.02", "--expected-ua", "0.85,water=0.6",
                   "--min-per-class", "30", "--seed", "3", "--threads", "1")
    design = json.loads(proc.stdout)
    gdf = gpd.read_file(folder / "pts.gpkg")
    assert len(gdf) == design["n"] == sum(s["points"] for s in design["strata"])
    gdf["reference"] = [CLASSES[truth[r, c]] for r, c in zip(gdf["row"], gdf["col"],
                                                             strict=True)]
    gdf.to_file(folder / "labelled.gpkg", driver="GPKG")
    return {"map": map_path, "points": folder / "labelled.gpkg", "folder": folder}


def test_accuracy_end_to_end(labelled: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli("accuracy", "--map", str(labelled["map"]), "--reference",
                   str(labelled["points"]), "--label-column", "reference", "--json",
                   "--out", str(tmp_path / "report"))
    result = json.loads(proc.stdout)
    assert set(result["area_ha"]) == set(CLASSES)
    assert 0.8 < result["overall_accuracy"]["estimate"] < 1.0
    assert (tmp_path / "report" / "estimates.csv").is_file()
    table = pd.read_csv(tmp_path / "report" / "estimates.csv")
    assert list(table["class"]) == CLASSES
    text = run_cli("accuracy", "--map", str(labelled["map"]), "--reference",
                   str(labelled["points"]), "--label-column", "reference").stdout
    assert "overall accuracy" in text and "water" in text


def _variant(labelled: dict[str, Path], tmp_path: Path, edit) -> Path:
    gdf = gpd.read_file(labelled["points"])
    gdf = edit(gdf)
    out = tmp_path / "bad.gpkg"
    gdf.to_file(out, driver="GPKG")
    return out


def _accuracy(labelled: dict[str, Path], points: Path, *extra: str):
    return run_cli("accuracy", "--map", str(labelled["map"]), "--reference", str(points),
                   "--label-column", "reference", *extra, check=False)


def test_points_outside_the_map(labelled: dict[str, Path], tmp_path: Path) -> None:
    def shift(gdf):
        gdf.loc[0, "geometry"] = gdf.geometry[0].__class__(0.0, 0.0)
        return gdf

    proc = _accuracy(labelled, _variant(labelled, tmp_path, shift))
    assert_one_line_error(proc, "outside the map")
    assert proc.returncode == 2


def test_reference_class_missing_from_the_map(labelled: dict[str, Path],
                                              tmp_path: Path) -> None:
    def rename(gdf):
        gdf.loc[3, "reference"] = "cotton"
        return gdf

    proc = _accuracy(labelled, _variant(labelled, tmp_path, rename))
    assert_one_line_error(proc, "'cotton'", "not a class of the map")
    assert proc.returncode == 2


def test_stratum_with_one_sample(labelled: dict[str, Path], tmp_path: Path) -> None:
    def thin(gdf):
        water = gdf.index[gdf["map_class"] == "water"]
        return gdf.drop(index=water[1:])

    proc = _accuracy(labelled, _variant(labelled, tmp_path, thin))
    assert_one_line_error(proc, "single reference point")
    assert proc.returncode == 2


def test_crs_mismatch(labelled: dict[str, Path], tmp_path: Path) -> None:
    proc = _accuracy(labelled, _variant(labelled, tmp_path, lambda g: g.to_crs(4326)))
    assert_one_line_error(proc, "EPSG:4326", "EPSG:32721", "--reproject")
    assert proc.returncode == 2
    ok = _accuracy(labelled, tmp_path / "bad.gpkg", "--reproject", "--json")
    assert ok.returncode == 0, ok.stderr


def test_bad_design_requests(labelled: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli("sample-design", "--map", str(labelled["map"]), "--out",
                   str(tmp_path / "p.gpkg"), "--n", "5", check=False)
    assert_one_line_error(proc, "2 points each")
    proc = run_cli("sample-design", "--map", str(labelled["map"]), "--out",
                   str(tmp_path / "p.gpkg"), check=False)
    assert_one_line_error(proc, "--n", "--target-se")
    proc = run_cli("sample-design", "--map", str(tmp_path / "none.tif"), "--out",
                   str(tmp_path / "p.gpkg"), "--n", "50", check=False)
    assert_one_line_error(proc, "map not found")
    assert not (tmp_path / "p.gpkg").exists()
    assert np.all([p.suffix != ".tmp" for p in tmp_path.iterdir()])


def test_smooth_command(tmp_path: Path) -> None:
    from tests.mapping.test_smoothing import noisy_map

    prob, _, _ = noisy_map(tmp_path)
    proc = run_cli("smooth", "--probabilities", str(prob), "--out", str(tmp_path / "s"),
                   "--window", "5", "--keep-above", "0.85", "--threads", "1")
    out = json.loads(proc.stdout)
    assert out["isolated_after"] < out["isolated_before"]
    assert Path(out["outputs"]["labels"]).is_file()
    bad = run_cli("smooth", "--probabilities", str(tmp_path / "nope.tif"), "--out",
                  str(tmp_path / "t"), check=False)
    assert_one_line_error(bad, "not found")
    bad = run_cli("smooth", "--probabilities", str(prob), "--out", str(tmp_path / "t"),
                  "--window", "4", check=False)
    assert_one_line_error(bad, "odd")


def test_propose_samples_command(tmp_path: Path) -> None:
    from tests.mapping.test_active import _prob_map

    path, _ = _prob_map(tmp_path)
    existing = tmp_path / "have.csv"
    pd.DataFrame({"x": [500_000 + 10 * 30.5], "y": [8_000_000 - 10 * 25.5],
                  "label": ["a"]}).to_csv(existing, index=False)
    proc = run_cli("propose-samples", "--probabilities", str(path), "--n", "6",
                   "--min-distance", "5", "--exclude", str(existing), "--out",
                   str(tmp_path / "next.csv"))
    assert json.loads(proc.stdout)["n"] == 6
    got = pd.read_csv(tmp_path / "next.csv")
    assert (np.maximum(abs(got["row"] - 25), abs(got["col"] - 30)) >= 5).all()
    bad = run_cli("propose-samples", "--probabilities", str(tmp_path / "no.tif"), "--n", "3",
                  "--out", str(tmp_path / "x.csv"), check=False)
    assert_one_line_error(bad, "not found")


def test_relabel_commands(tmp_path: Path) -> None:
    from tests.mapping.test_relabel import _speckled, _write

    lab = _speckled()
    src = _write(tmp_path / "map.tif", lab, ["maize", "soy", "forest"])
    out = run_cli("sieve", "--map", str(src), "--min-pixels", "8", "--out",
                  str(tmp_path / "s.tif")).stdout.strip()
    assert Path(out).is_file()
    run_cli("reclassify", "--map", str(src), "--rule", "maize=crop", "--rule", "soy=crop",
            "--out", str(tmp_path / "r.tif"))
    from cropscope.mapping import read_map_classes

    assert read_map_classes(tmp_path / "r.tif") == ["crop", "forest"]
    run_cli("mosaic", str(src), "--out", str(tmp_path / "m.tif"))
    bad = run_cli("reclassify", "--map", str(src), "--rule", "cotton=crop", "--out",
                  str(tmp_path / "x.tif"), check=False)
    assert_one_line_error(bad, "cotton")
    bad = run_cli("rollup", "--map", str(src), "--taxonomy", "sits-matogrosso", "--out",
                  str(tmp_path / "lv"), check=False)
    assert_one_line_error(bad, "not in the taxonomy")
