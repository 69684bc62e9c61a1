from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from cropscope.errors import DataError
from cropscope.weather.geometry import G0
from cropscope.weather.readers import open_weather, spatial_slices, standardize
from tests.weather.conftest_helpers import make_uvz_dataset


def _raw() -> xr.Dataset:
    lat = np.array([60.0, 30.0, 0.0, -30.0, -60.0])  # north → south
    lon = np.array([0.0, 90.0, 180.0, 270.0])  # 0–360
    data = np.arange(2 * 5 * 4, dtype=float).reshape(2, 5, 4)
    return xr.Dataset(
        {"UU": (("plev", "lat", "lon"), data, {}),
         "GHT": (("plev", "lat", "lon"), data + 1000, {"units": "m"})},
        coords={"plev": np.array([85000.0, 50000.0], ), "lat": lat, "lon": lon},
    )


def test_standardize_conventions():
    raw = _raw()
    ds = standardize(raw)
    assert set(ds.data_vars) == {"u", "z"}
    assert list(ds["u"].dims) == ["level", "latitude", "longitude"]
    assert np.all(np.diff(ds["latitude"].values) > 0)
    assert ds["longitude"].values.tolist() == [-180.0, -90.0, 0.0, 90.0]
    assert ds["level"].values.tolist() == [850.0, 500.0]  # Pa → hPa
    # the value at (level 850, 60N, 270E = -90) is unchanged by the reordering
    expect = raw["UU"].sel(plev=85000.0, lat=60.0, lon=270.0).item()
    assert ds["u"].sel(level=850.0, latitude=60.0, longitude=-90.0).item() == expect
    # geopotential height (m) becomes geopotential (m² s⁻²)
    assert ds["z"].sel(level=500.0, latitude=0.0, longitude=0.0).item() == pytest.approx(
        (raw["GHT"].sel(plev=50000.0, lat=0.0, lon=0.0).item()) * G0)
    assert [s["level"] for s in spatial_slices(ds)] == [850.0, 500.0]


def test_standardize_select_and_errors():
    ds = standardize(_raw(), variables=["u"])
    assert list(ds.data_vars) == ["u"]
    with pytest.raises(DataError, match="not in the file"):
        standardize(_raw(), variables=["q"])
    with pytest.raises(DataError, match="latitude/longitude"):
        standardize(xr.Dataset({"a": (("p", "q"), np.zeros((2, 2)))}))


@pytest.mark.parametrize("fmt", ["netcdf3", "h5netcdf", "zarr"])
def test_open_roundtrip(tmp_path, fmt):
    src = make_uvz_dataset(n_lat=9, n_lon=12)
    if fmt == "netcdf3":
        path = tmp_path / "f.nc"
        src.to_netcdf(path, engine="scipy")
    elif fmt == "h5netcdf":
        path = tmp_path / "f.nc"
        src.to_netcdf(path, engine="h5netcdf")
    else:
        path = tmp_path / "f.zarr"
        src.to_zarr(path)
    ds = open_weather(path, variables=["u", "z"])
    assert list(ds.data_vars) == ["u", "z"]
    assert ds["longitude"].min() >= -180 and ds["longitude"].max() < 180
    np.testing.assert_allclose(
        ds["z"].sel(level=500, latitude=90.0, longitude=30.0).item(),
        src["z"].sel(level=500, latitude=90.0, longitude=30.0).item())


def test_open_grib_needs_cfgrib(tmp_path):
    path = tmp_path / "f.grib"
    path.write_bytes(b"GRIB")
    try:
        import cfgrib  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="cfgrib"):
            open_weather(path)
    else:
        pytest.skip("cfgrib installed: needs a real GRIB file")


def test_open_missing(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_weather(tmp_path / "nope.nc")
    bad = tmp_path / "bad.nc"
    bad.write_text("not netcdf")
    with pytest.raises(DataError, match="cannot read"):
        open_weather(bad)


def test_a_file_that_is_not_netcdf_is_one_line(tmp_path):
    path = tmp_path / "x.nc"
    path.write_text("not netcdf\n")
    with pytest.raises(DataError, match="cannot read") as exc:
        open_weather(path)
    assert "\n" not in str(exc.value) and "pip install" not in str(exc.value)
