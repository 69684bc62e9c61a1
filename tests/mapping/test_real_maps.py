"""Map jobs on real scenes: FTW Austria (S2 GeoTIFF) and the WorldCereal NetCDF cube.

(The Sinop MODIS cube is mapped in ``test_job.py``.) Each job's outputs must be valid COGs
on the input's exact grid, equal the whole-scene classification, and be nodata where the
input has no valid observation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.mapping import classify_cube, run_map_job
from cropscope.models import create_model
from tests.mapping.test_job import assert_cog, read_outputs

rasterio = pytest.importorskip("rasterio")

from rasterio.crs import CRS  # noqa: E402

from cropscope.data.readers.open import open_cube_source  # noqa: E402


def pixels_of(cube, labels: np.ndarray, classes: list[str], n: int, seed: int) -> TimeSeriesSet:
    """``n`` random labelled pixels of a ``(time, band, y, x)`` cube as a training set."""
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(labels >= 0)
    pick = rng.choice(rows.size, size=min(n, rows.size), replace=False)
    r, c = rows[pick], cols[pick]
    values = cube.values[:, :, r, c].transpose(2, 0, 1)  # [N, T, C]
    return TimeSeriesSet.from_labels(
        values, [str(b) for b in cube["band"].values], [classes[k] for k in labels[r, c]],
        dates=cube["time"].values.astype("datetime64[D]"),
    )  # fmt: skip


def check_outputs(result, source, cube, model) -> np.ndarray:
    for name, path in result.paths.items():
        assert_cog(path)
        with rasterio.open(path) as src:
            assert src.crs == source.crs, name
            assert tuple(src.transform)[:6] == pytest.approx(tuple(source.transform)[:6]), name
            assert src.shape == source.shape and src.nodata == 255, name
    out = read_outputs(result.paths)
    labels = out["labels"][0]
    no_obs = ~np.isfinite(cube.values).any(axis=(0, 1))
    assert ((labels == 255) == no_obs).all()
    assert (out["probabilities"][:, no_obs] == 255).all()
    np.testing.assert_array_equal(labels, classify_cube(model, cube).labels)
    return labels


def test_ftw_austria_stack_maps_to_cogs(real_data_dir: Path, tmp_path: Path) -> None:
    path = real_data_dir / "s2_geotiff_ftw_austria" / "inference-img.tif"
    source = open_cube_source(path, dates=["2021-06-17", "2021-09-25"],
                              band_names=["B04", "B03", "B02", "B08"], scale=1e-4)  # fmt: skip
    cube = source.read()
    # unlabelled scene: targets from NDVI terciles of the June image (a capacity check)
    red, nir = cube.values[0, 0], cube.values[0, 3]
    ndvi = (nir - red) / (nir + red)
    labels = np.digitize(ndvi, np.nanquantile(ndvi, [1 / 3, 2 / 3]))
    train = pixels_of(cube, labels, ["low", "mid", "high"], 1500, seed=0)
    model = create_model("rf", n_estimators=20, n_jobs=1).fit(train)
    result = run_map_job(model, source, tmp_path / "austria", tile=128, progress=False)
    assert result.n_windows == 3 * 5
    with rasterio.open(path) as ref:
        assert source.crs == ref.crs == CRS.from_epsg(32633)
        assert source.transform == ref.transform
    mapped = check_outputs(result, source, cube, model)
    names = np.array([*model.classes, ""])[np.where(mapped == 255, -1, mapped)]
    assert (names == np.array(["low", "mid", "high"])[labels]).mean() > 0.9


def test_worldcereal_netcdf_cube_maps_to_cogs(real_data_dir: Path, tmp_path: Path) -> None:
    from cropscope.data.readers.worldcereal import load_worldcereal_patch

    folder = real_data_dir / "worldcereal_s2s1_patch"
    source = open_cube_source(folder / "worldcereal_preprocessed_inputs.nc",
                              variables="S2-L2A-*", nodata=65535, scale=1e-4)  # fmt: skip
    cube = source.read()
    patch = load_worldcereal_patch(folder, target="cropland")
    assert patch["transform"] == pytest.approx(tuple(source.transform)[:6])
    train = pixels_of(cube, patch["label"], patch["classes"], 3000, seed=0)
    model = create_model("logreg").fit(train)
    result = run_map_job(model, source, tmp_path / "wc", tile=32, progress=False)
    assert source.crs == CRS.from_epsg(32631)
    labels = check_outputs(result, source, cube, model)
    names = np.array([*model.classes, ""])[np.where(labels == 255, -1, labels)]
    want = np.array([*patch["classes"], ""])[patch["label"]]
    agree = (names == want)[patch["label"] >= 0].mean()
    assert agree > 0.8, f"agreement with WorldCereal's cropland map {agree:.2f}"


def test_predict_cli_netcdf_with_parcels(real_data_dir: Path, tmp_path: Path) -> None:
    gpd = pytest.importorskip("geopandas")
    from click.testing import CliRunner
    from shapely.geometry import box

    from cropscope.cli.main import cli
    from cropscope.data.readers.worldcereal import load_worldcereal_patch
    from cropscope.models import save_classifier_run

    folder = real_data_dir / "worldcereal_s2s1_patch"
    nc = folder / "worldcereal_preprocessed_inputs.nc"
    source = open_cube_source(nc, variables="S2-L2A-*", nodata=65535, scale=1e-4)
    cube = source.read()
    patch = load_worldcereal_patch(folder, target="cropland")
    model = create_model("logreg").fit(pixels_of(cube, patch["label"], patch["classes"], 2000, 1))
    save_classifier_run(model, tmp_path / "run")  # a complete run (bare folders are refused)
    x0, y0 = source.transform.c, source.transform.f  # upper-left corner, 10 m pixels
    parcels = gpd.GeoDataFrame(
        {"field": ["a", "b", "c"]},
        geometry=[box(x0 + 50, y0 - 300, x0 + 250, y0 - 100),
                  box(x0 + 500, y0 - 900, x0 + 900, y0 - 500),
                  box(x0 + 5000, y0 - 5000, x0 + 5100, y0 - 4900)],  # off the scene
        crs="EPSG:32631",
    )  # fmt: skip
    parcels.to_file(tmp_path / "fields.gpkg")
    out = tmp_path / "maps" / "wc.tif"
    res = CliRunner().invoke(cli, [
        "predict", "--model", str(tmp_path / "run"), "--input", str(nc), "--out", str(out),
        "--variables", "S2-L2A-*", "--nodata", "65535", "--scale", "1e-4", "--tile", "48",
        "--parcels", str(tmp_path / "fields.gpkg"), "--id-column", "field",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    for name in ("wc.tif", "wc_probabilities.tif", "wc_uncertainty.tif", "wc.png",
                 "wc_areas.json", "wc_parcels.parquet"):
        assert (out.parent / name).is_file(), name
    assert_cog(out)
    table = gpd.read_parquet(out.parent / "wc_parcels.parquet").set_index("field")
    assert list(table["pixel_count"]) == [20 * 20, 40 * 40, 0]
    with rasterio.open(out.parent / "wc_probabilities.tif") as src:
        proba = src.read().astype(float) / 254
    mean_a = proba[:, 10:30, 5:25].mean(axis=(1, 2))
    np.testing.assert_allclose(table.loc["a", [f"p_{c}" for c in model.classes]].to_numpy(float),
                               mean_a, atol=1e-6)  # fmt: skip
    assert table.loc["a", "class"] == model.classes[int(mean_a.argmax())]
