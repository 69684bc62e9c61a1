"""HTML reports: self-contained (no network), with legend and tables; rendered in a real
headless Chromium without a script error (screenshot checked)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from cropscope.assessment import assess_map, design_sample, write_sample_points
from cropscope.errors import DataError
from cropscope.reporting import evaluation_report, map_report
from tests.assessment.test_sampling_and_assess import CLASSES, truth_and_map, write_class_map
from tests.conftest import make_toy_set

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _assessed_map(folder: Path) -> tuple[Path, object]:
    import geopandas as gpd

    truth, mapped = truth_and_map()
    path = write_class_map(folder / "map.tif", mapped, names=CLASSES)
    design = design_sample(path, n=300, min_per_class=30, seed=0)
    write_sample_points(design, folder / "p.gpkg", path)
    gdf = gpd.read_file(folder / "p.gpkg")
    gdf["reference"] = [CLASSES[truth[r, c]] for r, c in zip(gdf["row"], gdf["col"],
                                                             strict=True)]
    gdf.to_file(folder / "labelled.gpkg", driver="GPKG")
    return path, assess_map(path, folder / "labelled.gpkg", label_column="reference")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    path, result = _assessed_map(folder)
    return map_report(path, folder / "report.html", assessment=result,
                      samples=make_toy_set(n_per_class=10), title="Test map")


def test_report_is_self_contained(report: Path) -> None:
    text = report.read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # no resource to fetch
    # the only addresses are those of the optional basemap, fetched after load by script
    hosts = set(re.findall(r"https://([a-z0-9.{}-]+)/", text))
    assert hosts <= {"unpkg.com", "tile.openstreetmap.org", "{s}.tile.openstreetmap.org"}
    assert text.count("data:image/png;base64,") == 3  # map, basemap overlay, profiles
    for c in CLASSES:
        assert c in text
    assert 'id="legend"' in text and 'class="estimates"' in text
    assert "Overall accuracy" in text and "± " in text


def test_evaluation_report_and_bad_inputs(tmp_path: Path) -> None:
    from cropscope.evaluation import cross_validate
    from cropscope.models import create_model

    res = cross_validate(lambda: create_model("rf", n_estimators=10),
                         make_toy_set(n_per_class=10), cv=2, seed=0)
    out = evaluation_report(res, tmp_path / "eval.html")
    text = out.read_text()
    assert 'class="confusion"' in text and "macro_f1" in text
    with pytest.raises(DataError, match="html"):
        evaluation_report(res, tmp_path / "eval.pdf")
    with pytest.raises(DataError, match="not found"):
        map_report(tmp_path / "nope.tif", tmp_path / "x.html")


@pytest.mark.skipif(CHROMIUM is None and os.environ.get("CI") != "true",
                    reason="no Chromium on this machine (CI installs it)")
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api") if os.environ.get("CI") != "true" \
        else __import__("playwright.sync_api", fromlist=["sync_playwright"])
    assert CHROMIUM is not None, "CI needs Chromium (.ci/run installs it)"
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # offline, the optional basemap's fetch fails: a resource error, not a script one
            page.on("console", lambda msg: errors.append(msg.text)
                    if msg.type == "error" and "Failed to load resource" not in msg.text
                    else None)
            page.goto(report.as_uri())
            page.wait_for_load_state("load")
            assert page.evaluate("document.body.dataset.rendered") == "yes"
            assert page.locator("#legend li").count() == len(CLASSES)
            assert page.locator("table.estimates tbody tr").count() == len(CLASSES)
            assert page.locator("table.error-matrix tbody tr").count() == len(CLASSES)
            widths = page.evaluate(
                "Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
            assert len(widths) == 2 and min(widths) > 100  # the embedded images decoded
            # offline (as in CI) the basemap stays hidden; online it shows the map on tiles
            page.wait_for_timeout(1500)
            if os.environ.get("CI") == "true":
                assert page.locator("#basemap-section").is_hidden()
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert img.shape[0] > 900 and img.std() > 20  # a page with content, not blank


def test_an_assessment_of_another_map_is_refused(tmp_path: Path) -> None:
    path, result = _assessed_map(tmp_path)
    _, mapped = truth_and_map(seed=5)  # another map on the same grid
    other = write_class_map(tmp_path / "other.tif", mapped[:150], names=CLASSES)
    with pytest.raises(DataError, match=r"not of other\.tif"):
        map_report(other, tmp_path / "r.html", assessment=result)
    assert not (tmp_path / "r.html").exists()
    assert map_report(path, tmp_path / "ok.html", assessment=result).is_file()


def test_edited_result_files_are_one_data_error(tmp_path: Path) -> None:
    """Result files edited by hand (types changed, keys removed) are refused in one line."""
    from cropscope.evaluation import cross_validate
    from cropscope.models import create_model

    res = cross_validate(lambda: create_model("rf", n_estimators=10),
                         make_toy_set(n_per_class=10), cv=2, seed=0).to_dict()
    for key, value in [("per_class", 5), ("confusion_matrix", "x"), ("summary", 5),
                       ("per_class", [5])]:
        with pytest.raises(DataError, match="layout 'cropscope evaluate --json'"):
            evaluation_report({**res, key: value}, tmp_path / "e.html")
    assert not (tmp_path / "e.html").exists()
    path, result = _assessed_map(tmp_path)
    good = result.to_dict()
    assert map_report(path, tmp_path / "ok.html", assessment=good).is_file()
    for key, value in [("classes", "crop"), ("n_points", "x"), ("users_accuracy", None),
                       ("overall_accuracy", {"estimate": None}), ("area_ha", None)]:
        with pytest.raises(DataError, match="layout 'cropscope accuracy --out'"):
            map_report(path, tmp_path / "r.html", assessment={**good, key: value})
    assert not (tmp_path / "r.html").exists()
