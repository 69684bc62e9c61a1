from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from cropscope.data.readers.xarray_cube import XarrayCubeSource
from cropscope.errors import DataError

xr = pytest.importorskip("xarray")
pytest.importorskip("rioxarray")
pytest.importorskip("h5netcdf")

from affine import Affine  # noqa: E402
from rasterio.crs import CRS  # noqa: E402

TIMES = np.array(["2021-01-05", "2021-02-04", "2021-03-06"], dtype="datetime64[ns]")
X = 600005.0 + 10.0 * np.arange(9)
Y = 5000095.0 - 10.0 * np.arange(7)
TRANSFORM = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000100.0)


def variables_cube(seed: int = 0) -> tuple[xr.Dataset, dict[str, np.ndarray]]:
    """WorldCereal-style: one (t, y, x) uint16 variable per band, 65535 = nodata."""
    rng = np.random.default_rng(seed)
    raw = {}
    data_vars = {}
    for name in ("S2-L2A-B02", "S2-L2A-B04", "S2-L2A-B08", "S1-SIGMA0-VV"):
        a = rng.integers(0, 10000, (3, 7, 9)).astype(np.uint16)
        a[1, 2, 3] = 65535
        raw[name] = a
        data_vars[name] = (("t", "y", "x"), a, {"grid_mapping": "crs"})
    ds = xr.Dataset(data_vars, coords={"t": TIMES, "y": Y, "x": X})
    ds["crs"] = xr.DataArray(np.int32(0), attrs={"crs_wkt": CRS.from_epsg(32631).to_wkt()})
    return ds, raw


@pytest.fixture(params=["nc", "zarr"])
def cube_path(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, dict]:
    ds, raw = variables_cube()
    if request.param == "nc":
        path = tmp_path / "cube.nc"
        ds.to_netcdf(path, engine="h5netcdf")
    else:
        pytest.importorskip("zarr")
        path = tmp_path / "cube.zarr"
        ds.chunk({"t": 1, "y": 4, "x": 4}).to_zarr(path, consolidated=False)
    return path, raw


def test_variables_as_bands_window_equals_full_slice(cube_path: tuple[Path, dict]) -> None:
    path, raw = cube_path
    src = XarrayCubeSource.open(path, variables="S2-L2A-*", nodata=65535, scale=1e-4)
    assert src.bands == ["S2-L2A-B02", "S2-L2A-B04", "S2-L2A-B08"]
    assert src.shape == (7, 9) and (src.height, src.width) == (7, 9)
    assert [str(t) for t in src.times] == ["2021-01-05", "2021-02-04", "2021-03-06"]
    assert src.crs == CRS.from_epsg(32631)
    assert src.transform == TRANSFORM
    assert src.files == [path]
    full = src.read()
    assert full.dims == ("time", "band", "y", "x") and full.dtype == np.float32
    assert full.shape == (3, 3, 7, 9)
    expected = raw["S2-L2A-B04"].astype(np.float32) * np.float32(1e-4)
    expected[1, 2, 3] = np.nan
    np.testing.assert_allclose(full.sel(band="S2-L2A-B04").values, expected, rtol=1e-6)
    assert np.isnan(full.values[1, :, 2, 3]).all()
    assert full.rio.crs == src.crs and full.rio.transform() == TRANSFORM
    np.testing.assert_array_equal(full["x"].values, X)
    window = ((2, 6), (3, 8))
    part = src.read(window)
    np.testing.assert_array_equal(part.values, full.values[:, :, 2:6, 3:8])
    assert part.rio.transform() == TRANSFORM * Affine.translation(3, 2)
    np.testing.assert_array_equal(part["y"].values, Y[2:6])
    with src.opened():
        np.testing.assert_array_equal(src.read(window).values, part.values)
        assert src._ds is not None
    assert src._ds is None


def test_read_isels_the_window_before_loading(cube_path: tuple[Path, dict]) -> None:
    path, _ = cube_path
    src = XarrayCubeSource.open(path, variables=["S2-L2A-B02", "S1-*"])
    assert src.bands == ["S2-L2A-B02", "S1-SIGMA0-VV"]
    with src.opened():
        lazy = src.lazy_window(src._ds, ((1, 3), (0, 2)))
        assert [v.shape for v in lazy] == [(3, 2, 2), (3, 2, 2)]
        # nothing loaded yet: the backend is indexed with the window only on to_numpy()
        assert not any(v.variable._in_memory for v in lazy)
        assert not src._ds["S2-L2A-B02"].variable._in_memory


def test_pickles_without_handles_and_reads(cube_path: tuple[Path, dict]) -> None:
    path, _ = cube_path
    src = XarrayCubeSource.open(path, variables="S2-L2A-*", nodata=65535)
    with src.opened():
        blob = pickle.dumps(src)
    assert len(blob) < 5000
    back = pickle.loads(blob)
    assert back._ds is None
    np.testing.assert_array_equal(back.read(((0, 2), (0, 2))).values,
                                  src.read(((0, 2), (0, 2))).values)  # fmt: skip


def test_band_dimension_south_up_and_any_dim_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    arr = rng.random((5, 4, 3, 2)).astype(np.float32)  # (y, x, time, band), y ascending
    ds = xr.Dataset(
        {"refl": (("lat", "lon", "time", "band"), arr)},
        coords={"lat": 10.0 + np.arange(5) * 0.5, "lon": 20.0 + np.arange(4) * 0.5,
                "time": TIMES, "band": ["red", "nir"]},
    )  # fmt: skip
    ds = ds.rio.write_crs("EPSG:4326")
    path = tmp_path / "refl.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    src = XarrayCubeSource.open(path, bands=["NIR", "red"], rename={"nir": "NIR"})
    assert src.bands == ["NIR", "red"]
    assert src.crs == CRS.from_epsg(4326)
    # north-up: the first row is the northernmost latitude
    assert src.transform == Affine(0.5, 0.0, 19.75, 0.0, -0.5, 12.25)
    cube = src.read()
    np.testing.assert_array_equal(cube.values[:, 0, 0], arr[::-1, :, :, 1].transpose(2, 0, 1)[:, 0])
    np.testing.assert_array_equal(cube["y"].values, (10.0 + np.arange(5) * 0.5)[::-1])
    part = src.read(((1, 3), (1, 4)))
    np.testing.assert_array_equal(part.values, cube.values[:, :, 1:3, 1:4])
    with pytest.raises(DataError, match="bands"):
        XarrayCubeSource.open(path, bands=["swir"])


def test_ndvi_scale_default_and_errors(tmp_path: Path) -> None:
    ndvi = np.full((2, 3, 4), 5000, dtype=np.int16)
    ds = xr.Dataset({"NDVI": (("time", "y", "x"), ndvi)},
                    coords={"time": TIMES[:2], "y": Y[:3], "x": X[:4]})  # fmt: skip
    path = tmp_path / "ndvi.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    src = XarrayCubeSource.open(path)
    np.testing.assert_allclose(src.read().values, 0.5)
    assert src.crs is None
    assert XarrayCubeSource.open(path, scale={"ND*": 1.0}).read().values.max() == 5000
    with pytest.raises(DataError, match="no variable"):
        XarrayCubeSource.open(path, variables="S2-*")
    with pytest.raises(DataError, match="not found"):
        XarrayCubeSource.open(tmp_path / "absent.nc")
    with pytest.raises(DataError, match="time dimension"):
        XarrayCubeSource.open(path, time_dim="date")
    irregular = ds.assign_coords(x=[0.0, 1.0, 3.0, 4.0])
    irregular.to_netcdf(tmp_path / "irr.nc", engine="h5netcdf")
    with pytest.raises(DataError, match="regularly spaced"):
        XarrayCubeSource.open(tmp_path / "irr.nc")


# ---------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_worldcereal_netcdf(real_data_dir: Path) -> None:
    path = real_data_dir / "worldcereal_s2s1_patch" / "worldcereal_preprocessed_inputs.nc"
    src = XarrayCubeSource.open(path, variables="S2-L2A-*", nodata=65535, scale=1e-4)
    assert len(src.times) == 12
    assert str(src.times[0]) == "2020-11-01" and str(src.times[-1]) == "2021-10-01"
    assert src.bands == [f"S2-L2A-B{b}" for b in
                         ("02", "03", "04", "05", "06", "07", "08", "11", "12")]  # fmt: skip
    assert src.crs == CRS.from_epsg(32631)
    # pixel centres x 664005-664995, y 5612115-5611125 (SOURCE.md), 10 m
    assert src.transform == Affine(10.0, 0.0, 664000.0, 0.0, -10.0, 5612120.0)
    assert src.shape == (100, 100)
    cube = src.read()
    months = [str(t)[:7] for t in cube["time"].values]
    for month in ("2020-12", "2021-01"):
        assert np.isnan(cube.values[months.index(month)]).all()
    others = [i for i, m in enumerate(months) if m not in ("2020-12", "2021-01")]
    assert not np.isnan(cube.values[others]).any()
    assert 0.0 <= float(np.nanmin(cube.values)) and float(np.nanmax(cube.values)) < 2.0
    part = src.read(((40, 72), (10, 60)))
    np.testing.assert_array_equal(part.values, cube.values[:, :, 40:72, 10:60])
    back = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(back.read(((0, 5), (0, 5))).values, cube.values[:, :, :5, :5])
