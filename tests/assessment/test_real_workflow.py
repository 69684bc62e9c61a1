"""The agency workflow end to end on real data: map the real WorldCereal cube, design a
stratified sample of the map, label the points, estimate accuracy and areas with confidence
intervals, and open the HTML report in headless Chromium.

The reference labels are WorldCereal's own cropland classification of the same patch (a
model output, not ground truth: `../shared/data/worldcereal_s2s1_patch/SOURCE.md`), so the
"accuracy" here is agreement with WorldCereal's product; what is tested is that every step
runs on real inputs and that the estimates are consistent with the full-grid truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_worldcereal_map_sample_accuracy_report(real_data_dir: Path, tmp_path: Path) -> None:
    import geopandas as gpd

    from cropscope.assessment import assess_map, design_sample, write_sample_points
    from cropscope.data.readers.open import open_cube_source
    from cropscope.data.readers.worldcereal import load_worldcereal_patch
    from cropscope.data.timeseries import TimeSeriesSet
    from cropscope.mapping import deliver_map
    from cropscope.models import create_model
    from cropscope.reporting import map_report

    folder = real_data_dir / "worldcereal_s2s1_patch"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    patch = load_worldcereal_patch(folder, target="cropland")
    truth, classes = patch["label"], [str(c) for c in patch["classes"]]
    nc = folder / "worldcereal_preprocessed_inputs.nc"
    source = open_cube_source(nc, variables="S2-L2A-*", nodata=65535, scale=1e-4)
    cube = source.read()
    # train on a random fifth of the pixels, labelled by WorldCereal's cropland map
    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(truth >= 0)
    pick = rng.choice(rows.size, rows.size // 5, replace=False)
    series = np.asarray(cube.values)[:, :, rows[pick], cols[pick]].transpose(2, 0, 1)
    train = TimeSeriesSet.from_labels(series, list(source.bands),
                                      [classes[k] for k in truth[rows[pick], cols[pick]]],
                                      classes=classes,
                                      dates=np.asarray(source.times, dtype="datetime64[D]"))
    model = create_model("rf", n_estimators=30, n_jobs=1).fit(train)
    product = deliver_map(model, source, tmp_path / "map.tif", tile=50, progress=False)
    labels = product.paths["labels"]

    design = design_sample(labels, n=120, min_per_class=40, seed=0)
    assert sum(design.allocation) == 120 and min(design.allocation) >= 40
    write_sample_points(design, tmp_path / "points.gpkg", labels)
    gdf = gpd.read_file(tmp_path / "points.gpkg")
    gdf["reference"] = [classes[truth[r, c]] for r, c in zip(gdf["row"], gdf["col"],
                                                             strict=True)]
    gdf.to_file(tmp_path / "labelled.gpkg", driver="GPKG")
    result = assess_map(labels, tmp_path / "labelled.gpkg", label_column="reference")

    # the full-grid agreement and areas lie within the estimates' intervals (99.9 %)
    import rasterio

    with rasterio.open(labels) as src:
        mapped = src.read(1)
    valid = (mapped != 255) & (truth >= 0)
    true_oa = float((mapped[valid] == truth[valid]).mean())
    assert abs(result.overall_accuracy.value - true_oa) < 3.3 * result.overall_accuracy.se
    for k, name in enumerate(classes):
        true_ha = float(((truth == k) & (mapped != 255)).sum()) * 0.01  # 10 m pixels
        est = result.area_ha[name]
        assert abs(est.value - true_ha) < 3.3 * est.se + 1.0, name
    report = map_report(labels, tmp_path / "report.html", assessment=result, samples=train)
    text = report.read_text()
    assert "Overall accuracy" in text and all(c in text for c in classes)
