from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cropscope.errors import DataError
from cropscope.models import create_model
from tests.conftest import make_toy_set

gpd = pytest.importorskip("geopandas")
rasterio = pytest.importorskip("rasterio")
pytest.importorskip("rioxarray")
pytest.importorskip("pyarrow")

import shapely  # noqa: E402
from rasterio.crs import CRS  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from shapely.geometry import MultiPolygon, Point, Polygon, box  # noqa: E402

from cropscope.data.readers.cube import CubeSource  # noqa: E402
from cropscope.mapping.parcels import (  # noqa: E402
    aggregate_parcels,
    parcel_series,
    predict_parcels,
    read_parcels,
    write_parcels,
)

HEIGHT, WIDTH, K = 30, 40, 3
X0, Y0, RES = 500000.0, 4000000.0, 10.0
UTM = CRS.from_epsg(32633)
TRANSFORM = from_origin(X0, Y0, RES, RES)
CLASSES = ["maize", "soy", "wheat"]
N_TIMES = 4


def cell(c0: float, r0: float, c1: float, r1: float) -> Polygon:
    """A rectangle from pixel coordinates (column, row) of its corners."""
    return box(X0 + c0 * RES, Y0 - r1 * RES, X0 + c1 * RES, Y0 - r0 * RES)


def parcel_geoms() -> dict[str, object]:
    return {
        "cross": cell(2, 3, 12, 10),  # crosses the window edges at 8 (window_size=8)
        "overlap": cell(10, 5, 20, 16),  # overlaps "cross"
        "inner": cell(4, 4, 6, 6),  # inside "cross": both count its pixels
        "tiny": cell(30.1, 20.1, 30.3, 20.3),  # no pixel centre inside: centroid pixel
        "outside": cell(50, 2, 55, 6),  # off the raster
        "nodata": cell(25, 0, 28, 3),  # only nodata pixels
        "multi": MultiPolygon([cell(33, 10, 36, 13), cell(36, 20, 39, 29)]),
        "edge": cell(-5, 25, 3, 35),  # partly off the raster
    }


def make_gdf(crs: object = UTM) -> gpd.GeoDataFrame:
    geoms = parcel_geoms()
    gdf = gpd.GeoDataFrame(
        {"name": list(geoms), "crop": ["a"] * len(geoms)}, geometry=list(geoms.values()), crs=UTM
    )
    return gdf.to_crs(crs)


def make_probabilities(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    proba = rng.integers(0, 255, (K, HEIGHT, WIDTH)).astype(np.uint8)
    proba[:, 0:4, 24:30] = 255  # nodata
    proba[:, 12, 11:14] = 255
    return proba


def write_raster(
    path: Path, data: np.ndarray, *, tags: dict[str, str] | None = None, **kw: Any
) -> Path:
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
        count=data.shape[0], dtype=data.dtype.name, crs=kw.get("crs", UTM),
        transform=kw.get("transform", TRANSFORM), nodata=kw.get("nodata"),
    ) as dst:  # fmt: skip
        dst.write(data)
        if tags:
            dst.update_tags(**tags)
    return path


@pytest.fixture(scope="module")
def rasters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("map")
    proba = make_probabilities()
    labels = proba.argmax(axis=0).astype(np.uint8)
    labels[(proba == 255).all(axis=0)] = 255
    labels[7, 5] = 2  # a label that disagrees with the argmax
    tags = {f"class_{i}": c for i, c in enumerate(CLASSES)}
    return {
        "probabilities": write_raster(folder / "probabilities.tif", proba, tags=tags, nodata=255),
        "labels": write_raster(folder / "labels.tif", labels[None], tags=tags, nodata=255),
    }


def pixel_masks(geoms: list, all_touched: bool = False) -> list[np.ndarray]:
    """Each parcel's pixels on the full grid, computed with shapely (not rasterio)."""
    cols, rows = np.meshgrid(np.arange(WIDTH), np.arange(HEIGHT))
    xs, ys = X0 + (cols + 0.5) * RES, Y0 - (rows + 0.5) * RES
    out = []
    for g in geoms:
        if all_touched:
            boxes = shapely.box(xs - 5, ys - 5, xs + 5, ys + 5)
            out.append(shapely.intersects(boxes, g))
        else:
            out.append(shapely.contains_xy(g, xs, ys))
    return out


def expected_aggregate(geoms: list, proba: np.ndarray, labels: np.ndarray, **kw) -> list[dict]:
    valid = (proba != 255).all(axis=0)
    rows = []
    for g, mask in zip(geoms, pixel_masks(geoms, **kw), strict=True):
        centroid = False
        if not mask.any():
            c = g.centroid
            col, row = int((c.x - X0) // RES), int((Y0 - c.y) // RES)
            if 0 <= row < HEIGHT and 0 <= col < WIDTH:
                mask[row, col] = True
                centroid = True
        sel = mask & valid
        n = int(sel.sum())
        if n == 0:
            rows.append({"pixel_count": 0, "class": None, "from_centroid": False})
            continue
        mean = proba[:, sel].astype(np.float64).mean(axis=1) / 254
        votes = np.bincount(labels[sel], minlength=K)
        rows.append({
            "pixel_count": n, "mean": mean, "class": CLASSES[int(mean.argmax())],
            "majority_class": CLASSES[int(votes.argmax())],
            "majority_fraction": votes.max() / n, "from_centroid": centroid,
        })  # fmt: skip
    return rows


def check_aggregate(result: gpd.GeoDataFrame, expected: list[dict]) -> None:
    assert len(result) == len(expected)
    for i, exp in enumerate(expected):
        row = result.iloc[i]
        assert row["pixel_count"] == exp["pixel_count"], (i, row["pixel_count"], exp)
        assert bool(row["from_centroid"]) == exp["from_centroid"], i
        if exp["pixel_count"] == 0:
            assert row["class"] is None or row["class"] is gpd.pd.NA
            assert np.isnan(row["probability"]) and np.isnan(row["p_soy"])
            continue
        got = np.array([row[f"p_{c}"] for c in CLASSES])
        np.testing.assert_allclose(got, exp["mean"], rtol=1e-12)
        assert row["class"] == exp["class"]
        assert row["probability"] == pytest.approx(exp["mean"].max())
        assert row["majority_class"] == exp["majority_class"]
        assert row["majority_fraction"] == pytest.approx(exp["majority_fraction"])


def write_formats(gdf: gpd.GeoDataFrame, folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    paths = {
        "gpkg": folder / "parcels.gpkg",
        "parquet": folder / "parcels.parquet",
        "shp": folder / "parcels.shp",
        "geojson": folder / "parcels.geojson",
    }
    gdf.to_file(paths["gpkg"], driver="GPKG")
    gdf.to_parquet(paths["parquet"])
    gdf.to_file(paths["shp"])
    gdf.to_file(paths["geojson"], driver="GeoJSON")
    return paths


@pytest.mark.parametrize("fmt", ["gpkg", "parquet", "shp", "geojson"])
def test_aggregate_matches_numpy_for_every_format(
    fmt: str, rasters: dict[str, Path], tmp_path: Path
) -> None:
    path = write_formats(make_gdf(), tmp_path)[fmt]
    parcels = read_parcels(path)
    assert parcels.attrs["id_column"] == "parcel_id"
    assert parcels["parcel_id"].tolist() == list(range(8))
    result = aggregate_parcels(
        parcels, rasters["probabilities"], labels_tif=rasters["labels"], window_size=8,
        progress=False,
    )  # fmt: skip
    with rasterio.open(rasters["probabilities"]) as src:
        proba = src.read()
    with rasterio.open(rasters["labels"]) as src:
        labels = src.read(1)
    expected = expected_aggregate(list(parcel_geoms().values()), proba, labels)
    check_aggregate(result, expected)
    names = dict(zip(parcels["name"], range(8), strict=True))
    assert result.loc[names["tiny"], "from_centroid"]
    assert result.loc[names["tiny"], "pixel_count"] == 1
    assert result.loc[names["outside"], "pixel_count"] == 0
    assert result.loc[names["nodata"], "pixel_count"] == 0
    # the "inner" parcel's pixels count for both it and the parcel around it
    assert result.loc[names["cross"], "pixel_count"] == 70
    assert result.loc[names["inner"], "pixel_count"] == 4
    assert list(result.columns) == [
        "parcel_id", "class", "probability", "pixel_count", "majority_class",
        "majority_fraction", "p_maize", "p_soy", "p_wheat", "from_centroid", "geometry",
    ]  # fmt: skip
    assert result.crs == UTM


def test_window_size_and_labels_do_not_change_means(rasters: dict[str, Path]) -> None:
    gdf = make_gdf()
    small = aggregate_parcels(gdf, rasters["probabilities"], window_size=3, progress=False)
    big = aggregate_parcels(gdf, rasters["probabilities"], window_size=1024, progress=False)
    assert "parcel_id" not in gdf.columns and not gdf.attrs  # the caller's frame is untouched
    cols = ["class", "probability", "pixel_count", "p_maize", "p_soy", "p_wheat"]
    gpd.pd.testing.assert_frame_equal(gpd.pd.DataFrame(small[cols]), gpd.pd.DataFrame(big[cols]))
    # without a labels raster the vote is over the argmax of the probabilities
    with rasterio.open(rasters["probabilities"]) as src:
        proba = src.read()
    expected = expected_aggregate(list(parcel_geoms().values()), proba, proba.argmax(axis=0))
    check_aggregate(small, expected)


def test_parcels_are_reprojected_to_the_raster(rasters: dict[str, Path]) -> None:
    utm = aggregate_parcels(make_gdf(), rasters["probabilities"], window_size=8, progress=False)
    wgs = aggregate_parcels(
        make_gdf("EPSG:4326"), rasters["probabilities"], window_size=8, progress=False
    )
    assert wgs.crs == CRS.from_epsg(4326)  # the output keeps the parcels' CRS
    np.testing.assert_array_equal(wgs["pixel_count"], utm["pixel_count"])
    np.testing.assert_allclose(wgs["p_soy"], utm["p_soy"])


def test_all_touched_counts_every_touched_pixel(rasters: dict[str, Path]) -> None:
    # edges off the pixel grid; two parcels share a pixel column without overlapping
    geoms = [
        cell(2.3, 3.3, 11.7, 9.6),
        cell(11.7, 3.3, 15.2, 9.6),  # adjacent to the first, inside the same pixels
        cell(5.2, 5.2, 5.4, 5.4),  # tiny, inside the first
        cell(20.5, 20.5, 24.5, 26.5),
    ]
    gdf = gpd.GeoDataFrame({"fid": [10, 20, 30, 40]}, geometry=geoms, crs=UTM)
    result = aggregate_parcels(
        gdf, rasters["probabilities"], window_size=4, all_touched=True, progress=False,
        id_column="fid",
    )  # fmt: skip
    with rasterio.open(rasters["probabilities"]) as src:
        proba = src.read()
    expected = expected_aggregate(geoms, proba, proba.argmax(axis=0), all_touched=True)
    check_aggregate(result, expected)
    assert result["fid"].tolist() == [10, 20, 30, 40]
    # column 11 is touched by both neighbours and counts for each
    assert result["pixel_count"].tolist()[:3] == [10 * 7, 5 * 7, 1]


def test_write_parcels_round_trips(rasters: dict[str, Path], tmp_path: Path) -> None:
    result = aggregate_parcels(make_gdf(), rasters["probabilities"], progress=False)
    for name in ("out.parquet", "out.gpkg"):
        path = write_parcels(result, tmp_path / name)
        back = gpd.read_parquet(path) if name.endswith("parquet") else gpd.read_file(path)
        assert back.crs == UTM
        assert list(back.columns) == list(result.columns)
        assert back["class"].isna().tolist() == result["class"].isna().tolist()
        np.testing.assert_allclose(back["p_wheat"], result["p_wheat"])
        np.testing.assert_array_equal(back["pixel_count"], result["pixel_count"])
        assert back.geometry.geom_equals(result.geometry).all()
    # no temporary file is left; the GeoPackage layer is named after the file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gpkg", "out.parquet"]
    assert gpd.list_layers(tmp_path / "out.gpkg")["name"].tolist() == ["out"]
    # overwriting replaces the file
    write_parcels(result.iloc[:2], tmp_path / "out.gpkg")
    assert len(gpd.read_file(tmp_path / "out.gpkg")) == 2


# ---------------------------------------------------------------------------- parcel series
def write_cube(folder: Path, seed: int = 1) -> tuple[Path, np.ndarray]:
    """Four dates of two-band float GeoTIFFs with gaps; returns the folder and the array."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    data = rng.random((N_TIMES, 2, HEIGHT, WIDTH)).astype(np.float32)
    data[rng.random(data.shape) < 0.15] = np.nan
    data[:, :, 0:4, 24:30] = np.nan  # never observed
    for t in range(N_TIMES):
        path = folder / f"scene_2021-0{t + 3}-01.tif"
        with rasterio.open(
            path, "w", driver="GTiff", width=WIDTH, height=HEIGHT, count=2, dtype="float32",
            crs=UTM, transform=TRANSFORM, nodata=float("nan"),
        ) as dst:  # fmt: skip
            dst.write(data[t])
            dst.set_band_description(1, "B4")
            dst.set_band_description(2, "B8")
    return folder, data


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    return write_cube(tmp_path_factory.mktemp("cube") / "scene")


def expected_series(geoms: list, data: np.ndarray, stat: str) -> tuple[np.ndarray, np.ndarray]:
    values, counts = [], []
    reduce = np.nanmean if stat == "mean" else np.nanmedian
    for g, mask in zip(geoms, pixel_masks(geoms), strict=True):
        if not mask.any():
            c = g.centroid
            col, row = int((c.x - X0) // RES), int((Y0 - c.y) // RES)
            if 0 <= row < HEIGHT and 0 <= col < WIDTH:
                mask[row, col] = True
        pix = data[:, :, mask]  # [T, C, m]
        counts.append(int(np.isfinite(pix).any(axis=(0, 1)).sum()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
            values.append(reduce(pix, axis=2) if pix.shape[2] else np.full(pix.shape[:2], np.nan))
    return np.array(values), np.array(counts)


@pytest.mark.parametrize("stat", ["mean", "median"])
def test_parcel_series_matches_numpy(stat: str, cube: tuple[Path, np.ndarray]) -> None:
    folder, data = cube
    gdf = make_gdf()
    ts = parcel_series(gdf, CubeSource.scan(folder), window_size=7, stat=stat, progress=False)
    exp, counts = expected_series(list(parcel_geoms().values()), data, stat)
    assert ts.values.shape == (8, N_TIMES, 2)
    assert ts.bands == ["B4", "B8"]
    assert str(ts.dates[0]) == "2021-03-01"
    np.testing.assert_allclose(ts.values, exp, rtol=1e-5, equal_nan=True)
    assert ts.meta["pixel_count"].tolist() == counts.tolist()
    assert ts.ids.tolist() == list(range(8))
    assert ts.meta["from_centroid"].tolist() == [n == "tiny" for n in parcel_geoms()]
    assert not ts.mask[4].any() and not ts.mask[5].any()  # outside, nodata


def test_predict_parcels_with_a_parcel_model(cube: tuple[Path, np.ndarray]) -> None:
    folder, _ = cube
    model = create_model("rf", n_estimators=5, n_jobs=1).fit(
        make_toy_set(n_per_class=10, n_times=N_TIMES, bands=("B8", "B4"))
    )
    gdf = make_gdf()
    result = predict_parcels(model, gdf, folder, window_size=9, batch_size=2, progress=False)
    ts = parcel_series(gdf, folder, window_size=9, progress=False)
    valid = ts.mask.any(axis=1)
    proba = model.predict_proba(ts.subset(valid))
    assert result["pixel_count"].tolist() == ts.meta["pixel_count"].tolist()
    got = result.loc[valid, [f"p_{c}" for c in model.classes]].to_numpy()
    np.testing.assert_allclose(got, proba, rtol=1e-6)
    assert result.loc[valid, "class"].tolist() == [model.classes[i] for i in proba.argmax(1)]
    np.testing.assert_allclose(result.loc[valid, "probability"], proba.max(axis=1), rtol=1e-6)
    assert result.loc[~valid, "class"].isna().all()
    assert "majority_class" not in result.columns
    bad = create_model("rf", n_estimators=5, n_jobs=1).fit(make_toy_set(n_per_class=5))
    with pytest.raises(DataError, match="time steps"):
        predict_parcels(bad, gdf, folder, progress=False)


# ---------------------------------------------------------------------------- errors
def test_read_parcels_errors(tmp_path: Path) -> None:
    gdf = make_gdf()
    with pytest.raises(DataError, match="not found"):
        read_parcels(tmp_path / "absent.gpkg")
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(DataError, match="unsupported"):
        read_parcels(tmp_path / "x.csv")
    gpd.pd.DataFrame({"a": [1, 2]}).to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(DataError, match="GeoParquet"):
        read_parcels(tmp_path / "plain.parquet")
    points = gpd.GeoDataFrame({"a": [1]}, geometry=[Point(X0, Y0)], crs=UTM)
    points.to_parquet(tmp_path / "points.parquet")
    with pytest.raises(DataError, match="Point"):
        read_parcels(tmp_path / "points.parquet")
    holes = gdf.copy()
    holes.loc[2, "geometry"] = None
    holes.to_parquet(tmp_path / "holes.parquet")
    with pytest.raises(DataError, match=r"1 parcel\(s\) without geometry \(row 2\)"):
        read_parcels(tmp_path / "holes.parquet")
    gdf.assign(code=[1, 2, 3, 3, 4, 5, 6, 7]).to_parquet(tmp_path / "dup.parquet")
    with pytest.raises(DataError, match="duplicate ids"):
        read_parcels(tmp_path / "dup.parquet", id_column="code")
    with pytest.raises(DataError, match="no id column 'fid'"):
        read_parcels(tmp_path / "dup.parquet", id_column="fid")
    ok = read_parcels(tmp_path / "dup.parquet", id_column="name")
    assert ok.attrs["id_column"] == "name" and "parcel_id" not in ok.columns
    gdf.to_file(tmp_path / "two.gpkg", layer="a")
    gdf.iloc[:2].to_file(tmp_path / "two.gpkg", layer="b")
    with pytest.raises(DataError, match="several layers"):
        read_parcels(tmp_path / "two.gpkg")
    assert len(read_parcels(tmp_path / "two.gpkg", layer="b")) == 2


def test_aggregate_errors(rasters: dict[str, Path], tmp_path: Path) -> None:
    nocrs = make_gdf().set_crs(None, allow_override=True)
    with pytest.raises(DataError, match="no CRS"):
        aggregate_parcels(nocrs, rasters["probabilities"], progress=False)
    with pytest.raises(DataError, match="cannot read"):
        aggregate_parcels(make_gdf(), tmp_path / "absent.tif", progress=False)
    other = write_raster(tmp_path / "small.tif", np.zeros((1, 5, 5), np.uint8))
    with pytest.raises(DataError, match="same grid"):
        aggregate_parcels(make_gdf(), rasters["probabilities"], labels_tif=other, progress=False)
    clash = make_gdf().rename(columns={"name": "class"})
    with pytest.raises(DataError, match="clashes"):
        aggregate_parcels(clash, rasters["probabilities"], id_column="class", progress=False)
    source = CubeSource.scan(rasters["probabilities"], dates=["2021-01-01"])
    with pytest.raises(DataError, match="stat"):
        parcel_series(make_gdf(), source, stat="max")
    with pytest.raises(DataError, match=r"use \.parquet"):
        write_parcels(make_gdf(), tmp_path / "out.shp")
