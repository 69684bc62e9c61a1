from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from cropscope.data.readers.align import AlignedCube, Grid
from cropscope.data.readers.cube import CubeLike, CubeSource
from cropscope.errors import DataError

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("rioxarray")

from affine import Affine  # noqa: E402
from rasterio.crs import CRS  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from tests.data.test_cube import write_raw  # noqa: E402

UTM = CRS.from_epsg(32633)
T10 = from_origin(500000.0, 4000000.0, 10.0, 10.0)


@pytest.fixture
def fine(tmp_path: Path) -> tuple[CubeSource, np.ndarray]:
    """Two dates of a 12 x 16 float band at 10 m."""
    rng = np.random.default_rng(2)
    arr = rng.random((2, 12, 16)).astype(np.float32)
    for t, d in enumerate(("2021-04-03", "2021-05-03")):
        write_raw(tmp_path / f"B04_{d}.tif", arr[t], nodata=-1.0)
    return CubeSource.scan(tmp_path), arr


def test_grid_helpers(tmp_path: Path) -> None:
    g = Grid(UTM, T10, 12, 16)
    assert g.shape == (12, 16) and g.resolution == (10.0, 10.0)
    assert g.bounds == (500000.0, 3999880.0, 500160.0, 4000000.0)
    assert Grid.from_bounds((500001.0, 3999881.0, 500159.0, 3999999.0), "EPSG:32633", 20) == Grid(
        UTM, from_origin(500000.0, 4000000.0, 20.0, 20.0), 6, 8
    )
    assert g.with_resolution(20).shape == (6, 8)
    assert Grid.of({"crs": UTM, "transform": T10, "height": 12, "width": 16}) == g
    path = write_raw(tmp_path / "x.tif", np.zeros((12, 16), np.float32))
    assert Grid.of(path) == g
    assert g.to_crs("EPSG:4326").crs == CRS.from_epsg(4326)
    with pytest.raises(DataError, match="grid"):
        Grid.of(3)


def test_shifted_grid_nearest_is_exact(fine: tuple[CubeSource, np.ndarray]) -> None:
    source, arr = fine
    # the target starts 3 columns right and 2 rows above the source: partly outside
    target = Grid(UTM, from_origin(500030.0, 4000020.0, 10.0, 10.0), 10, 16)
    aligned = AlignedCube(source, target, resampling="nearest")
    assert isinstance(aligned, CubeLike)
    assert aligned.shape == (10, 16) and aligned.transform == target.transform
    cube = aligned.read()
    assert cube.rio.transform() == target.transform and cube.rio.crs == UTM
    expected = np.full((2, 10, 16), np.nan, np.float32)
    expected[:, 2:, :13] = arr[:, :8, 3:]
    np.testing.assert_array_equal(cube.values[:, 0], expected)
    part = aligned.read(((3, 7), (5, 15)))
    np.testing.assert_array_equal(part.values, cube.values[:, :, 3:7, 5:15])
    # the source window read covers only the target window (+ a 2-pixel margin)
    rows, cols = aligned.source_window(((3, 7), (5, 15)))
    assert (rows.start, rows.stop, cols.start, cols.stop) == (0, 7, 6, 16)
    back = pickle.loads(pickle.dumps(aligned))
    np.testing.assert_array_equal(back.read(((3, 7), (5, 15))).values, part.values)
    outside = AlignedCube(source, Grid(UTM, from_origin(600000.0, 4000000.0, 10, 10), 4, 4))
    assert np.isnan(outside.read().values).all()


def test_coarser_grid_average_and_bilinear(fine: tuple[CubeSource, np.ndarray]) -> None:
    source, arr = fine
    target = Grid(UTM, from_origin(500000.0, 4000000.0, 20.0, 20.0), 6, 8)
    avg = AlignedCube(source, target, resampling="average").read()
    blocks = arr.reshape(2, 6, 2, 8, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(avg.values[:, 0], blocks, rtol=1e-5)
    bil = AlignedCube(source, target).read()  # bilinear: between the min and max of its block
    assert np.isfinite(bil.values).all()
    lo = arr.reshape(2, 6, 2, 8, 2).min(axis=(2, 4)) - 0.25
    hi = arr.reshape(2, 6, 2, 8, 2).max(axis=(2, 4)) + 0.25
    assert ((bil.values[:, 0] >= lo) & (bil.values[:, 0] <= hi)).all()
    with pytest.raises(DataError, match="resampling"):
        AlignedCube(source, target, resampling="magic")


def test_reprojection_window_equals_full_read(fine: tuple[CubeSource, np.ndarray]) -> None:
    source, _ = fine
    target = Grid(UTM, T10, 12, 16).to_crs("EPSG:4326")
    aligned = AlignedCube(source, target, resampling="nearest")
    full = aligned.read()
    assert full.rio.crs == CRS.from_epsg(4326)
    assert np.isfinite(full.values).mean() > 0.8
    h, w = aligned.shape
    part = aligned.read(((1, h - 1), (2, w - 1)))
    np.testing.assert_array_equal(part.values, full.values[:, :, 1 : h - 1, 2 : w - 1])


def test_cube_source_warps_files_on_other_grids(tmp_path: Path) -> None:
    """A 10 m band and a 20 m band (e.g. B04 and B11) aligned to the 10 m grid with
    WarpedVRT; SCL at 20 m is categorical and always nearest."""
    rng = np.random.default_rng(4)
    b04 = rng.integers(1, 5000, (8, 12)).astype(np.uint16)
    b11 = rng.integers(1, 5000, (4, 6)).astype(np.uint16)
    scl = np.array([[4, 9, 4, 4, 4, 4]] * 4, np.uint8)
    t20 = from_origin(500000.0, 4000000.0, 20.0, 20.0)
    write_raw(tmp_path / "B04_2021-04-03.tif", b04, nodata=0)
    write_raw(tmp_path / "B11_2021-04-03.tif", b11, transform=t20)  # no nodata
    write_raw(tmp_path / "SCL_2021-04-03.tif", scl, transform=t20)
    with pytest.raises(DataError, match="target="):
        CubeSource.scan(tmp_path)
    src = CubeSource.scan(tmp_path, target="first", resampling="nearest", scale=1e-4)
    assert src.shape == (8, 12) and src.transform == T10
    cube = src.read()
    np.testing.assert_allclose(cube.sel(band="B04").values[0], b04 * 1e-4, rtol=1e-6)
    up = np.kron(b11, np.ones((2, 2), np.uint16))
    np.testing.assert_allclose(cube.sel(band="B11").values[0], up * 1e-4, rtol=1e-6)
    np.testing.assert_array_equal(cube.sel(band="SCL").values[0], np.kron(scl, np.ones((2, 2))))
    # same result through the generic wrapper, window by window
    single = CubeSource.scan(tmp_path / "B11_2021-04-03.tif")
    via = AlignedCube(single, Grid(UTM, T10, 8, 12), resampling="nearest")
    np.testing.assert_allclose(via.read(((2, 6), (1, 9))).values[0, 0],
                               up[2:6, 1:9].astype(np.float32))  # fmt: skip
    # a larger target: the files do not cover it -> NaN (alpha band / nodata)
    big = Grid(UTM, from_origin(499980.0, 4000000.0, 10.0, 10.0), 8, 14)
    wide = CubeSource.scan(tmp_path, target=big, resampling="nearest")
    cube = wide.read()
    assert np.isnan(cube.values[0, :, :, :2]).all()
    assert np.isfinite(cube.values[0, :, :, 2:]).all()
    with wide.opened():
        np.testing.assert_array_equal(wide.read(((0, 4), (0, 5))).values,
                                      cube.values[:, :, :4, :5])  # fmt: skip
    assert pickle.loads(pickle.dumps(wide)).read().shape == cube.shape
    assert isinstance(Affine(*cube.attrs["transform"]), Affine)
