"""Sample extraction (:mod:`cropscope.data.extract`) checked against direct numpy indexing
of the arrays the tiny generated cubes were written from: pixel membership by the
pixel-centre rule (computed here with shapely on the centre coordinates), masked
observations as gaps, the inward buffer, the per-polygon cap, mean/median, nearest pixel
at points, CRS handling, labels outside the cube, patches; plus the real eo-learn patch
(68 Sentinel-2 NDVI dates, cloud mask, 88 land-use polygons) end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cropscope.errors import DataError

gpd = pytest.importorskip("geopandas")
rasterio = pytest.importorskip("rasterio")
pytest.importorskip("pyarrow")

import pandas as pd  # noqa: E402
import shapely  # noqa: E402
from rasterio.crs import CRS  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from shapely.geometry import Polygon, box  # noqa: E402

from cropscope.data.extract import (  # noqa: E402
    extract_label_patches,
    extract_samples,
    read_labels,
    write_samples,
)
from cropscope.data.readers.cube import write_geotiff  # noqa: E402
from cropscope.data.readers.table import read_table  # noqa: E402

H, W = 23, 31
X0, Y0, RES = 500000.0, 4000000.0, 10.0
UTM = CRS.from_epsg(32633)
TRANSFORM = from_origin(X0, Y0, RES, RES)
DATES = ["2021-04-01", "2021-05-01", "2021-06-01", "2021-07-01", "2021-08-01"]
BANDS = ["B04", "B08"]
MASKED_EVERYWHERE = (12, 6)  # a pixel cloudy on every date (inside polygon "a")


class Scene:
    """The arrays behind the generated cube: ``data [T, C, H, W]``, ``cloud [T, H, W]``."""

    def __init__(self, folder: Path, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.folder = folder
        self.data = rng.uniform(0.0, 1.0, (len(DATES), len(BANDS), H, W)).astype(np.float32)
        self.cloud = rng.random((len(DATES), H, W)) < 0.25
        self.cloud[:, MASKED_EVERYWHERE[0], MASKED_EVERYWHERE[1]] = True
        folder.mkdir(parents=True)
        for t, day in enumerate(DATES):
            stack = np.concatenate([self.data[t], self.cloud[t][None].astype(np.float32)])
            write_geotiff(stack, folder / f"s2_{day}.tif", crs=UTM, transform=TRANSFORM,
                          band_names=[*BANDS, "CLM"])

    @property
    def masked(self) -> np.ndarray:
        """``[T, C, H, W]`` with cloudy observations as NaN."""
        return np.where(self.cloud[:, None], np.nan, self.data)

    def series(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``[M, T, C]`` of the given pixels, straight from the arrays."""
        return np.moveaxis(self.masked[:, :, rows, cols], 2, 0)


def centres() -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(X, Y)`` of the grid, ``[H, W]`` each."""
    xs = X0 + RES * (np.arange(W) + 0.5)
    ys = Y0 - RES * (np.arange(H) + 0.5)
    return np.meshgrid(xs, ys)


def inside(geom: object) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns (row-major) of the pixels whose centre the polygon contains."""
    x, y = centres()
    return np.nonzero(shapely.contains_xy(geom, x, y))


def polygons() -> gpd.GeoDataFrame:
    """Four labelled polygons in UTM: an irregular one, a box overlapping it, a box, and a
    sliver smaller than a pixel. No edge passes through a pixel centre."""
    a = Polygon([(X0 + 13, Y0 - 33), (X0 + 147, Y0 - 52), (X0 + 121, Y0 - 168),
                 (X0 + 27, Y0 - 141)])
    b = box(X0 + 103, Y0 - 97, X0 + 193, Y0 - 43)
    c = box(X0 + 212, Y0 - 204, X0 + 288, Y0 - 118)
    d = box(X0 + 252, Y0 - 33, X0 + 256, Y0 - 29)
    return gpd.GeoDataFrame({"crop": ["wheat", "maize", "wheat", "soy"],
                             "pid": ["a", "b", "c", "d"]}, geometry=[a, b, c, d], crs=UTM)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    return Scene(tmp_path_factory.mktemp("extract") / "cube")


@pytest.fixture(scope="module")
def labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "fields.gpkg"
    polygons().to_file(path)
    return path


MASK = {"mask_band": "CLM", "invalid": [1]}


def by_key(ts: object) -> pd.DataFrame:
    meta = ts.meta.copy()  # type: ignore[attr-defined]
    meta["i"] = np.arange(len(meta))
    return meta.set_index(["polygon_id", "row", "col"])


# ---------------------------------------------------------------------------- pixels
def test_pixels_match_numpy_indexing(scene: Scene, labels: Path) -> None:
    ex = extract_samples(scene.folder, labels, label_column="crop", id_column="pid",
                         progress=False, **MASK)
    ts = ex.samples
    assert ts.bands == BANDS and [str(d) for d in ts.dates] == DATES
    meta = by_key(ts)
    gdf = polygons()
    for pid, geom, crop in zip(gdf["pid"], gdf.geometry, gdf["crop"], strict=True):
        rows, cols = inside(geom)
        if pid == "d":  # holds no pixel centre: the pixel of its centroid, flagged
            assert rows.size == 0
            c = geom.centroid
            rows = np.array([int((Y0 - c.y) // RES)])
            cols = np.array([int((c.x - X0) // RES)])
        got = meta.loc[pid]
        expected = scene.series(rows, cols)
        empty = np.isnan(expected).all(axis=(1, 2))  # cloudy on every date: dropped
        keys = list(zip(rows[~empty].tolist(), cols[~empty].tolist(), strict=True))
        assert sorted(got.index.tolist()) == sorted(keys), pid
        idx = got.loc[keys, "i"].to_numpy()
        np.testing.assert_array_equal(ts.values[idx], expected[~empty])
        assert set(np.asarray(ts.label_names)[idx]) == {crop}
        assert (got["from_centroid"].to_numpy() == (pid == "d")).all()
        assert (got["polygon_pixels"].to_numpy() == rows.size).all()
    # the pixels both "a" and "b" hold are samples of both
    ra, ca = inside(gdf.geometry[0])
    rb, cb = inside(gdf.geometry[1])
    assert set(zip(ra, ca, strict=True)) & set(zip(rb, cb, strict=True))
    # gaps: the mask follows the cloud mask; the all-cloudy pixel was dropped and counted
    assert ex.n_empty == 1 and ("a", *MASKED_EVERYWHERE) not in meta.index
    np.testing.assert_array_equal(ts.mask, np.isfinite(ts.values).all(axis=2))
    # coordinates are the pixel centres, lon/lat their geographic position
    x, y = centres()
    np.testing.assert_allclose(ts.meta["x"], x[ts.meta["row"], ts.meta["col"]])
    np.testing.assert_allclose(ts.meta["y"], y[ts.meta["row"], ts.meta["col"]])
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(32633, 4326, always_xy=True).transform(
        ts.meta["x"].to_numpy(), ts.meta["y"].to_numpy())
    np.testing.assert_allclose(ts.meta["longitude"], lon)
    np.testing.assert_allclose(ts.meta["latitude"], lat)
    assert ex.n_used == 4 and ex.n_windows == 1


def test_keep_empty_and_windows(scene: Scene, labels: Path) -> None:
    every = extract_samples(scene.folder, labels, label_column="crop", id_column="pid",
                            keep_empty=True, progress=False, **MASK)
    tiled = extract_samples(scene.folder, labels, label_column="crop", id_column="pid",
                            window_size=7, progress=False, **MASK)
    assert every.n_empty == 0 and every.samples.n_samples == tiled.samples.n_samples + 1
    # small windows read several tiles (only those holding a pixel) and give the same data
    assert 1 < tiled.n_windows < -(-H // 7) * -(-W // 7)
    ref = extract_samples(scene.folder, labels, label_column="crop", id_column="pid",
                          progress=False, **MASK).samples
    np.testing.assert_array_equal(tiled.samples.values, ref.values)
    assert list(tiled.samples.ids) == list(ref.ids)


def test_inward_buffer(scene: Scene, labels: Path) -> None:
    ex = extract_samples(scene.folder, labels, label_column="crop", id_column="pid",
                         buffer=11.0, keep_empty=True, progress=False, **MASK)
    meta = by_key(ex.samples)
    gdf = polygons()
    for pid, geom in zip(gdf["pid"], gdf.geometry, strict=True):
        shrunk = geom.buffer(-11.0)
        if shrunk.is_empty:
            assert pid not in meta.index.get_level_values(0)
            continue
        rows, cols = inside(shrunk)
        assert sorted(meta.loc[pid].index.tolist()) == sorted(zip(rows.tolist(), cols.tolist(),
                                                                  strict=True))
        assert rows.size < inside(geom)[0].size  # the edge pixels are gone
    assert ex.n_vanished == 1  # the sliver "d"
    with pytest.raises(DataError, match="every polygon vanished"):
        extract_samples(scene.folder, labels, label_column="crop", buffer=500.0,
                        progress=False, **MASK)


def test_buffer_in_metres_on_a_geographic_cube(tmp_path: Path) -> None:
    """On a cube in degrees the buffer is still metres (applied in a local UTM zone)."""
    from cropscope.data.readers.cube import CubeSource

    tr = from_origin(15.0, 36.1, 0.0001, 0.0001)  # about 9 x 11 m pixels
    folder = tmp_path / "geo"
    folder.mkdir()
    for day in DATES[:2]:
        write_geotiff(np.ones((1, 40, 40), np.float32), folder / f"g_{day}.tif",
                      crs=CRS.from_epsg(4326), transform=tr, band_names=["NDVI"])
    field = box(15.0005, 36.0965, 15.0035, 36.0995)
    gdf = gpd.GeoDataFrame({"crop": ["wheat"]}, geometry=[field], crs=4326)
    source = CubeSource.scan(folder)
    full = extract_samples(source, gdf, label_column="crop", progress=False).samples
    shrunk = extract_samples(source, gdf, label_column="crop", buffer=30.0,
                             progress=False).samples
    utm = gpd.GeoSeries([field], crs=4326).to_crs(gpd.GeoSeries([field], crs=4326)
                                                  .estimate_utm_crs())
    inner = utm.buffer(-30.0).to_crs(4326).iloc[0]
    xs = 15.0 + 0.0001 * (np.arange(40) + 0.5)
    ys = 36.1 - 0.0001 * (np.arange(40) + 0.5)
    expected = int(shapely.contains_xy(inner, *np.meshgrid(xs, ys)).sum())
    assert shrunk.n_samples == expected and 0 < expected < full.n_samples


def test_cap_per_polygon_is_a_seeded_sample(scene: Scene, labels: Path) -> None:
    kw = {"label_column": "crop", "id_column": "pid", "keep_empty": True, "progress": False,
          **MASK}
    full = by_key(extract_samples(scene.folder, labels, **kw).samples)
    one = extract_samples(scene.folder, labels, max_pixels=5, seed=1, **kw)
    again = extract_samples(scene.folder, labels, max_pixels=5, seed=1, **kw)
    other = extract_samples(scene.folder, labels, max_pixels=5, seed=2, **kw)
    meta = by_key(one.samples)
    sizes = meta.groupby(level=0).size()
    full_sizes = full.groupby(level=0).size()
    for pid, n in full_sizes.items():
        assert sizes[pid] == min(n, 5)
        assert set(meta.loc[pid].index) <= set(full.loc[pid].index)
        assert (meta.loc[pid, "polygon_pixels"] == n).all()  # the size before the cap
    assert one.n_capped == int((full_sizes > 5).sum()) == 3
    assert list(one.samples.ids) == list(again.samples.ids)
    assert list(one.samples.ids) != list(other.samples.ids)
    # values of the capped samples are those of the same pixels uncapped
    ref = extract_samples(scene.folder, labels, **kw).samples
    pos = {sid: i for i, sid in enumerate(ref.ids)}
    np.testing.assert_array_equal(one.samples.values,
                                  ref.values[[pos[s] for s in one.samples.ids]])


# ---------------------------------------------------------------------------- mean, median
@pytest.mark.parametrize("stat", ["mean", "median"])
def test_polygon_statistics(scene: Scene, labels: Path, stat: str) -> None:
    ex = extract_samples(scene.folder, labels, label_column="crop", id_column="pid",
                         mode=stat, progress=False, **MASK)
    ts = ex.samples
    assert list(ts.ids) == ["a", "b", "c", "d"]
    assert list(ts.meta["polygon_id"]) == ["a", "b", "c", "d"]
    for i, geom in enumerate(polygons().geometry[:3]):
        rows, cols = inside(geom)
        pixels = scene.series(rows, cols)  # [M, T, C]
        with np.errstate(all="ignore"), _no_warning():
            want = np.nanmean(pixels, axis=0) if stat == "mean" else np.nanmedian(pixels,
                                                                                  axis=0)
        np.testing.assert_allclose(ts.values[i], want, rtol=1e-6)
        assert ts.meta["pixel_count"][i] == int(np.isfinite(pixels).any(axis=(1, 2)).sum())
    assert ts.meta["from_centroid"].tolist() == [False, False, False, True]


class _no_warning:
    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


# ---------------------------------------------------------------------------- points
def test_nearest_pixel_at_csv_points(scene: Scene, tmp_path: Path) -> None:
    from pyproj import Transformer

    rng = np.random.default_rng(3)
    x = X0 + rng.uniform(0, W * RES, 12)
    y = Y0 - rng.uniform(0, H * RES, 12)
    lon, lat = Transformer.from_crs(32633, 4326, always_xy=True).transform(x, y)
    path = tmp_path / "points.csv"
    pd.DataFrame({"id": [f"p{i}" for i in range(12)], "lon": lon, "lat": lat,
                  "crop": ["wheat", "maize"] * 6}).to_csv(path, index=False)
    ex = extract_samples(scene.folder, path, label_column="crop", id_column="id",
                         keep_empty=True, progress=False, **MASK)
    ts = ex.samples
    assert ex.mode == "nearest" and ex.group_column == "point_id"
    rows, cols = rasterio.transform.rowcol(TRANSFORM, x, y)
    np.testing.assert_array_equal(ts.meta["row"], rows)
    np.testing.assert_array_equal(ts.meta["col"], cols)
    np.testing.assert_array_equal(ts.values, scene.series(np.array(rows), np.array(cols)))
    assert list(ts.ids) == [f"p{i}" for i in range(12)]
    assert list(ts.label_names) == ["wheat", "maize"] * 6
    with pytest.raises(DataError, match="points have no area"):
        extract_samples(scene.folder, path, label_column="crop", mode="pixels",
                        progress=False)


def test_csv_xy_needs_a_crs(scene: Scene, tmp_path: Path) -> None:
    path = tmp_path / "xy.csv"
    pd.DataFrame({"x": [X0 + 55.0], "y": [Y0 - 55.0], "crop": ["wheat"]}).to_csv(path,
                                                                                 index=False)
    with pytest.raises(DataError, match="--labels-crs"):
        extract_samples(scene.folder, path, label_column="crop", progress=False)
    ts = extract_samples(scene.folder, path, label_column="crop", labels_crs="EPSG:32633",
                         keep_empty=True, progress=False).samples
    assert (ts.meta["row"][0], ts.meta["col"][0]) == (5, 5)
    pd.DataFrame({"lon": [X0], "lat": [Y0], "crop": ["wheat"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="beyond longitude/latitude"):
        extract_samples(scene.folder, path, label_column="crop", progress=False)


# ---------------------------------------------------------------------------- CRS, outside
def test_labels_in_another_crs_are_reprojected(scene: Scene, labels: Path,
                                               tmp_path: Path) -> None:
    ref = extract_samples(scene.folder, labels, label_column="crop", id_column="pid",
                          progress=False, **MASK).samples
    geo = tmp_path / "fields_4326.geojson"
    polygons().to_crs(4326).to_file(geo)
    got = extract_samples(scene.folder, geo, label_column="crop", id_column="pid",
                          progress=False, **MASK).samples
    assert list(got.ids) == list(ref.ids)
    np.testing.assert_array_equal(got.values, ref.values)


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_labels_without_crs(scene: Scene, tmp_path: Path) -> None:
    bare = polygons().set_crs(None, allow_override=True)
    shp = tmp_path / "bare.shp"
    bare.to_file(shp)
    assert gpd.read_file(shp).crs is None  # a shapefile without .prj: UTM metres, no CRS
    with pytest.raises(DataError, match="no CRS information; pass --labels-crs"):
        extract_samples(scene.folder, shp, label_column="crop", progress=False)
    got = extract_samples(scene.folder, shp, label_column="crop", labels_crs="EPSG:32633",
                          progress=False, **MASK)
    assert got.n_used == 4
    utm = tmp_path / "utm.gpkg"
    polygons().to_file(utm)
    with pytest.raises(DataError, match="declares EPSG:32633 but --labels-crs says EPSG:4326"):
        extract_samples(scene.folder, utm, label_column="crop", labels_crs="EPSG:4326",
                        progress=False)
    # UTM coordinates declared as degrees land nowhere near the cube: the error says so
    wrong = tmp_path / "wrong.gpkg"
    polygons().set_crs(3857, allow_override=True).to_file(wrong)
    with pytest.raises(DataError, match=r"none of the 4 polygons lie on the cube.*CRS right"):
        extract_samples(scene.folder, wrong, label_column="crop", progress=False)


def test_labels_outside_the_cube(scene: Scene, tmp_path: Path) -> None:
    gdf = polygons()
    far = box(X0 - 500, Y0 + 100, X0 - 400, Y0 + 200)
    straddling = box(X0 + W * RES - 27, Y0 - 43, X0 + W * RES + 80, Y0 - 17)
    gdf = pd.concat([gdf, gpd.GeoDataFrame({"crop": ["maize", "soy"], "pid": ["far", "edge"]},
                                           geometry=[far, straddling], crs=UTM)])
    path = tmp_path / "some_outside.gpkg"
    gdf.to_file(path)
    with pytest.raises(DataError, match=r"1 of 6 polygons lie outside the cube \(e\.g\. ids "
                                        r"'far'\).*--skip-outside"):
        extract_samples(scene.folder, path, label_column="crop", id_column="pid",
                        progress=False)
    ex = extract_samples(scene.folder, path, label_column="crop", id_column="pid",
                         skip_outside=True, keep_empty=True, progress=False, **MASK)
    assert ex.n_outside == 1 and any("outside" in m for m in ex.messages)
    meta = by_key(ex.samples)
    # the polygon across the cube's edge keeps its pixels on the grid
    rows, cols = inside(straddling)
    assert rows.size == 6 and cols.max() == W - 1
    assert sorted(meta.loc["edge"].index.tolist()) == sorted(zip(rows.tolist(), cols.tolist(),
                                                                 strict=True))


def test_missing_labels_are_left_out(scene: Scene, tmp_path: Path) -> None:
    gdf = polygons()
    gdf.loc[1, "crop"] = None
    gdf.loc[2, "crop"] = ""
    path = tmp_path / "partial.gpkg"
    gdf.to_file(path)
    ex = extract_samples(scene.folder, path, label_column="crop", id_column="pid",
                         progress=False, **MASK)
    assert ex.n_unlabelled == 2 and set(ex.samples.meta["polygon_id"]) == {"a", "d"}
    with pytest.raises(DataError, match="no label column 'kind'"):
        extract_samples(scene.folder, path, label_column="kind", progress=False)


def test_bad_inputs(scene: Scene, labels: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="mode must be"):
        extract_samples(scene.folder, labels, label_column="crop", mode="max")
    with pytest.raises(DataError, match="buffer"):
        extract_samples(scene.folder, labels, label_column="crop", buffer=-1.0)
    with pytest.raises(DataError, match="max_pixels caps"):
        extract_samples(scene.folder, labels, label_column="crop", mode="mean", max_pixels=3)
    with pytest.raises(DataError, match="label file not found"):
        read_labels(tmp_path / "nope.gpkg", label_column="crop")
    with pytest.raises(DataError, match="unsupported label file"):
        read_labels(tmp_path / "labels.xlsx", label_column="crop")
    mixed = gpd.GeoDataFrame({"crop": ["a", "b"]}, geometry=[box(0, 0, 1, 1),
                                                             shapely.Point(0, 0)], crs=UTM)
    with pytest.raises(DataError, match="Point"):
        read_labels(mixed, label_column="crop")
    dup = polygons().assign(pid=["a", "a", "c", "d"])
    with pytest.raises(DataError, match="duplicate ids"):
        read_labels(dup, label_column="crop", id_column="pid")


# ---------------------------------------------------------------------------- same day
def test_two_passes_on_one_day_are_averaged(tmp_path: Path) -> None:
    """A NetCDF cube (another source kind) with two acquisitions on one day."""
    import xarray as xr

    rng = np.random.default_rng(5)
    values = rng.uniform(0, 1, (3, 6, 8)).astype(np.float32)
    values[1, 2, 3] = np.nan  # the second pass misses one pixel
    times = np.array(["2021-05-01T10:00", "2021-05-01T10:20", "2021-05-11T10:00"],
                     dtype="datetime64[ns]")
    ds = xr.Dataset({"NDVI": (("time", "y", "x"), values, {"grid_mapping": "spatial_ref"}),
                     "spatial_ref": ((), 0, {"crs_wkt": UTM.to_wkt()})},
                    coords={"time": times, "y": Y0 - RES * (np.arange(6) + 0.5),
                            "x": X0 + RES * (np.arange(8) + 0.5)})
    path = tmp_path / "cube.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    field = gpd.GeoDataFrame({"crop": ["wheat"]}, geometry=[box(X0, Y0 - 60, X0 + 80, Y0)],
                             crs=UTM)
    ex = extract_samples(path, field, label_column="crop", progress=False)
    ts = ex.samples
    assert [str(d) for d in ts.dates] == ["2021-05-01", "2021-05-11"]
    assert any("share a day" in m for m in ex.messages)
    r, c = ts.meta["row"].to_numpy(), ts.meta["col"].to_numpy()
    want = np.stack([np.nanmean(values[:2], axis=0)[r, c], values[2][r, c]], axis=1)
    np.testing.assert_allclose(ts.values[:, :, 0], want, rtol=1e-6)


# ---------------------------------------------------------------------------- output
def test_table_round_trip_and_grouped_folds(scene: Scene, labels: Path,
                                            tmp_path: Path) -> None:
    from cropscope.data.splits import make_folds

    ex = extract_samples(scene.folder, labels, label_column="crop", id_column="pid",
                         progress=False, **MASK)
    for name in ("s.parquet", "s.csv"):
        out = write_samples(ex.samples, tmp_path / name)
        csv = {} if name.endswith("parquet") else {  # a CSV needs its columns named
            "bands": BANDS, "meta_cols": ["polygon_id", "row", "col", "longitude", "latitude"]}
        back = read_table(out, **csv)
        assert list(back.ids) == [str(i) for i in ex.samples.ids]
        np.testing.assert_array_equal(back.values, ex.samples.values)
        np.testing.assert_array_equal(back.mask, ex.samples.mask)
        assert list(back.label_names) == list(ex.samples.label_names)
        assert list(back.meta["polygon_id"].astype(str)) == \
            list(ex.samples.meta["polygon_id"].astype(str))
    folds = make_folds(ex.samples, cv=2, seed=0, group="polygon_id", stratify=False)
    groups = ex.samples.meta["polygon_id"].to_numpy()
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])


# ---------------------------------------------------------------------------- patches
def test_label_patches_match_numpy(scene: Scene, labels: Path, tmp_path: Path) -> None:
    import h5py

    out = tmp_path / "patches"
    res = extract_label_patches(scene.folder, labels, out, label_column="crop",
                                id_column="pid", patch_size=8, progress=False, **MASK)
    info = json.loads((out / "patches.json").read_text())
    assert info["classes"] == res.classes == ["maize", "soy", "wheat"]
    assert info["bands"] == BANDS and info["dates"] == DATES and info["patch_size"] == 8
    # expected label raster: centre rule; pixels of two polygons of different classes: -1
    gdf = polygons()
    code = {c: i for i, c in enumerate(res.classes)}
    claims: dict[tuple[int, int], set[int]] = {}
    for geom, crop in zip(gdf.geometry, gdf["crop"], strict=True):
        for r, c in zip(*inside(geom), strict=True):
            claims.setdefault((int(r), int(c)), set()).add(code[crop])
    truth = np.full((H, W), -1, dtype=np.int64)
    for (r, c), codes in claims.items():
        truth[r, c] = next(iter(codes)) if len(codes) == 1 else -1
    index = pd.read_csv(out / "patches.csv")
    expected_tiles = {(r, c) for r in range(0, H, 8) for c in range(0, W, 8)
                      if (truth[r:r + 8, c:c + 8] >= 0).any()}
    assert set(zip(index["row"], index["col"], strict=True)) == expected_tiles
    assert res.n_patches == len(expected_tiles) == len(list(out.glob("*.h5")))
    for name, r0, c0 in zip(index["name"], index["row"], index["col"], strict=True):
        with h5py.File(out / f"{name}.h5", "r") as f:
            image, label = f["S2"][()], f["label"][()]
        h, w = min(8, H - r0), min(8, W - c0)
        assert image.shape == (len(DATES), len(BANDS), 8, 8) and label.shape == (8, 8)
        np.testing.assert_array_equal(label[:h, :w], truth[r0:r0 + h, c0:c0 + w])
        np.testing.assert_array_equal(image[:, :, :h, :w],
                                      scene.masked[:, :, r0:r0 + h, c0:c0 + w])
        assert (label[h:] == -1).all() and (label[:, w:] == -1).all()
        assert np.isnan(image[:, :, h:]).all() and np.isnan(image[:, :, :, w:]).all()
    assert res.n_labelled == int((truth >= 0).sum())
    # the folder reads back through the project's patch dataset
    from cropscope.data.readers.h5patches import H5PatchDataset

    ds = H5PatchDataset(out)
    assert len(ds) == res.n_patches
    with pytest.raises(DataError, match="not an empty folder"):
        extract_label_patches(scene.folder, labels, out, label_column="crop", patch_size=8)


def test_failed_patch_extraction_leaves_nothing(scene: Scene, labels: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from cropscope.data.readers.cube import CubeSource

    calls = {"n": 0}
    real_read = CubeSource.read

    def failing(self: CubeSource, window: object = None) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise DataError("disk read failed half-way")
        return real_read(self, window)

    monkeypatch.setattr(CubeSource, "read", failing)
    out = tmp_path / "patches"
    with pytest.raises(DataError, match="half-way"):
        extract_label_patches(scene.folder, labels, out, label_column="crop", patch_size=8,
                              progress=False, **MASK)
    assert calls["n"] == 2  # it failed after writing a patch...
    assert list(tmp_path.iterdir()) == []  # ...and left neither the folder nor its draft


# ---------------------------------------------------------------------------- real data
EOPATCH = "eolearn_slovenia_eopatch"


def eopatch_netcdf(folder: Path, out: Path) -> Path:
    """The eo-learn patch's NDVI and cloud mask as a NetCDF cube (variables as bands, the
    grid from ``bbox.geojson``, the acquisition times from ``timestamps.json``)."""
    import xarray as xr

    ndvi = np.load(folder / "data" / "NDVI.npy")[..., 0]
    clm = np.load(folder / "mask" / "CLM.npy")[..., 0]
    ring = json.loads((folder / "bbox.geojson").read_text())["coordinates"][0]
    xs, ys = zip(*ring, strict=True)
    west, east, south, north = min(xs), max(xs), min(ys), max(ys)
    _, h, w = ndvi.shape
    dx, dy = (east - west) / w, (north - south) / h
    times = np.array([np.datetime64(s) for s in
                      json.loads((folder / "timestamps.json").read_text())],
                     dtype="datetime64[ns]")
    attrs = {"grid_mapping": "spatial_ref"}
    ds = xr.Dataset({"NDVI": (("time", "y", "x"), ndvi, attrs),
                     "CLM": (("time", "y", "x"), clm, attrs),
                     "spatial_ref": ((), 0, {"crs_wkt": CRS.from_epsg(32633).to_wkt()})},
                    coords={"time": times, "y": north - dy * (np.arange(h) + 0.5),
                            "x": west + dx * (np.arange(w) + 0.5)})
    ds.to_netcdf(out, engine="h5netcdf")
    return out


@pytest.mark.realdata
@pytest.mark.slow
def test_eolearn_patch_extract_train_map_and_grouped_evaluation(real_data_dir: Path,
                                                                 tmp_path: Path) -> None:
    """Acceptance (issue 18): pixel samples from the NDVI cube with the cloud mask as gaps,
    checked against numpy on the arrays; polygon-grouped CV; a map of the patch evaluated
    on held-out polygons."""
    from tests.conftest import shared_folder

    folder = shared_folder(real_data_dir, EOPATCH)
    cube = eopatch_netcdf(folder, tmp_path / "eopatch.nc")
    gpkg = folder / "vector_timeless" / "LULC.gpkg"
    ex = extract_samples(cube, gpkg, label_column="LULC_NAME", id_column="index",
                         mask_band="CLM", invalid=[1], progress=False)
    ts = ex.samples
    # -- extraction against a direct numpy computation on the arrays
    ndvi = np.load(folder / "data" / "NDVI.npy")[..., 0]
    clm = np.load(folder / "mask" / "CLM.npy")[..., 0]
    stamps = json.loads((folder / "timestamps.json").read_text())
    days = np.array([s[:10] for s in stamps], dtype="datetime64[D]")
    uniq, inverse = np.unique(days, return_inverse=True)
    np.testing.assert_array_equal(ts.dates, uniq)
    masked = np.where(clm == 1, np.nan, ndvi)  # [68, H, W]
    with np.errstate(all="ignore"), _no_warning():
        daily = np.stack([np.nanmean(masked[inverse == k], axis=0) for k in range(len(uniq))])
    rows, cols = ts.meta["row"].to_numpy(), ts.meta["col"].to_numpy()
    np.testing.assert_array_equal(ts.values[:, :, 0], daily[:, rows, cols].T)
    # membership: the pixel centres inside each polygon, computed with shapely
    gdf = gpd.read_file(gpkg)
    from cropscope.data.readers.open import open_cube_source

    tr = open_cube_source(cube).transform
    x, y = tr.c + tr.a * (np.arange(ndvi.shape[2]) + 0.5), tr.f + tr.e * (
        np.arange(ndvi.shape[1]) + 0.5)
    grid_x, grid_y = np.meshgrid(x, y)
    got = set(zip(ts.meta["polygon_id"], rows, cols, strict=True))
    want = set()
    for pid, geom, name in zip(gdf["index"], gdf.geometry, gdf["LULC_NAME"], strict=True):
        if not name:
            continue
        r, c = np.nonzero(shapely.contains_xy(geom, grid_x, grid_y))
        want |= {(pid, int(a), int(b)) for a, b in zip(r, c, strict=True)
                 if np.isfinite(daily[:, a, b]).any()}
    centroid = set(zip(ts.meta["polygon_id"][ts.meta["from_centroid"]],
                       rows[ts.meta["from_centroid"]], cols[ts.meta["from_centroid"]],
                       strict=True))
    assert got - centroid == want
    # the eo-learn rasterisation of the same polygons (LULC.npy) agrees on the classes
    lulc = np.load(folder / "mask_timeless" / "LULC.npy")[..., 0]
    id_of = dict(zip(gdf["LULC_NAME"], gdf["LULC_ID"], strict=True))
    codes = np.array([id_of[n] for n in ts.label_names])
    assert (lulc[rows, cols] == codes).mean() > 0.97
    # clouds are gaps: the share of valid observations is that of the cloud mask there
    observed = np.isfinite(daily[:, rows, cols]).T
    np.testing.assert_array_equal(ts.mask, observed)
    assert 0.3 < ts.mask.mean() < 0.9

    # -- polygon-grouped cross-validation through the table (the CLI's --table path)
    from cropscope.workflows import evaluate_model

    table = write_samples(ts, tmp_path / "samples.parquet")
    common = {"table": table, "cv": 3, "seed": 0, "config": {"n_estimators": 50,
                                                             "n_jobs": 1}}
    grouped = evaluate_model("rf", group="polygon_id", **common)
    assert grouped.metrics["overall_accuracy"] > 0.5

    # -- per polygon-grouped fold: train, map the patch, score the held-out polygons on the map
    from cropscope.data.extract import DailyCube
    from cropscope.data.readers.open import open_cube_source
    from cropscope.data.splits import make_folds
    from cropscope.mapping import deliver_map
    from cropscope.mapping.contract import as_map_model
    from cropscope.models import create_model

    # the cube on the samples' time axis: the two passes of 2015-12-08 averaged
    source = DailyCube(open_cube_source(cube, mask_band="CLM", invalid=[1]))
    assert len(source.times) == ts.n_times == len(stamps) - 1
    groups = ts.meta["polygon_id"].to_numpy()
    names = np.asarray(ts.label_names)
    from_map = np.full(ts.n_samples, None, dtype=object)
    for k, (train, test) in enumerate(make_folds(ts, cv=3, seed=0, group="polygon_id")):
        assert not set(groups[train]) & set(groups[test])
        model = create_model("rf", n_estimators=50, n_jobs=1)
        model.fit(ts.subset(train))
        product = deliver_map(as_map_model(model, 4096), source, tmp_path / f"map{k}.tif",
                              tile=64, progress=False)
        with rasterio.open(product.paths["labels"]) as src:
            mapped = src.read(1)[rows[test], cols[test]]
        assert (mapped < len(model.classes)).all()  # every sampled pixel is mapped
        from_map[test] = np.asarray(model.classes)[mapped]
        # the map's pixel is the model's prediction for that pixel's extracted series
        direct = np.asarray(model.classes)[np.asarray(model.predict(ts.subset(test)))]
        assert (from_map[test] == direct).mean() > 0.99
    accuracy = float((from_map == names).mean())
    majority = float(pd.Series(names).value_counts(normalize=True).iloc[0])
    assert accuracy > majority
