from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from cropscope.data import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.weather.covariates import (
    GriddedField,
    add_covariates,
    align_on_thermal_time,
    daily_gdd,
    day_length,
    thermal_time,
)
from cropscope.weather.evaluate import stack_fields
from cropscope.weather.geometry import RegularGrid
from cropscope.weather.readers import standardize
from cropscope.weather.training import fit_field


def test_day_length():
    assert day_length(0.0, 80) == pytest.approx(12.0, abs=0.01)
    june, dec = day_length(50.0, 172), day_length(50.0, 355)
    assert 16.0 < june < 16.6 and 7.8 < dec < 8.4
    assert day_length(-50.0, 172) == pytest.approx(dec, abs=0.1)  # hemispheres mirror
    assert day_length(80.0, 172) == 24.0 and day_length(80.0, 355) == 0.0


def test_daily_gdd_units_and_cap():
    np.testing.assert_allclose(daily_gdd([5.0, 15.0, 40.0], base=10, cap=30), [0, 5, 20])
    np.testing.assert_allclose(daily_gdd(np.array([288.15]), base=10, cap=None), [5.0])
    with pytest.raises(DataError):
        daily_gdd([1.0], units="F")


def _daily_temperature() -> xr.Dataset:
    rng = np.random.default_rng(0)
    time = np.arange("2021-03-01", "2021-07-01", dtype="datetime64[D]")
    lat = np.arange(30.0, 50.1, 2.0)
    lon = np.arange(-10.0, 10.1, 2.0)
    doy = np.arange(time.size)
    t = (280 + 0.12 * doy[:, None, None] - 0.4 * (lat[None, :, None] - 40)
         + 0.2 * lon[None, None, :] + rng.normal(0, 1.5, (time.size, lat.size, lon.size)))
    return xr.Dataset({"t2m": (("time", "latitude", "longitude"), t)},
                      coords={"time": time.astype("datetime64[ns]") + np.timedelta64(12, "h"),
                              "latitude": lat, "longitude": lon})


def _samples(lat, lon) -> TimeSeriesSet:
    dates = np.array(["2021-03-10", "2021-04-01", "2021-05-01", "2021-06-15"],
                     dtype="datetime64[D]")
    values = np.linspace(0.1, 0.8, len(lat) * 4).reshape(len(lat), 4, 1)
    return TimeSeriesSet(values=values, bands=["ndvi"], dates=dates,
                         meta=pd.DataFrame({"latitude": lat, "longitude": lon}))


def _direct(ds, lat, lon, start="2021-03-01"):
    """Cumulative GDD before each observation date, straight from the grid."""
    out = []
    for la, lo in zip(lat, lon, strict=True):
        series = ds["t2m"].sel(latitude=la, longitude=lo).values
        gdd = np.maximum(np.minimum(series - 273.15, 30.0) - 10.0, 0)
        days = np.array(["2021-03-10", "2021-04-01", "2021-05-01", "2021-06-15"],
                        dtype="datetime64[D]") - np.datetime64(start)
        out.append([gdd[: d.astype(int)].sum() for d in days])
    return np.array(out)


def test_thermal_time_from_gridded_field_matches_direct_sum():
    ds = _daily_temperature()
    lat, lon = np.array([30.0, 40.0, 48.0]), np.array([-10.0, 0.0, 6.0])
    ts = _samples(lat, lon)
    tt = thermal_time(ts, GriddedField(ds), "t2m", base=10, cap=30, start="2021-03-01")
    np.testing.assert_allclose(tt.cumulative, _direct(ds, lat, lon), rtol=1e-5, atol=1e-3)
    assert np.all(np.diff(tt.cumulative, axis=1) >= 0)
    np.testing.assert_allclose(tt.increment.sum(axis=1), tt.cumulative[:, -1], rtol=1e-5)


def test_thermal_time_from_fitted_field_matches_direct_sum_at_grid_points():
    torch.set_num_threads(1)
    ds = _daily_temperature().isel(time=slice(0, 120))
    std = standardize(ds)
    values, names, slices, _ = stack_fields(std)
    grid = RegularGrid.from_coords(std["latitude"].values, std["longitude"].values)
    field = fit_field(values, grid, names, slices,
                      {"steps": 15, "warmup": 15, "cells": 16, "node_cells": 16,
                       "selfsup_factor": 0, "d_model": 16, "n_query": 8, "n_layers": 1})
    lat, lon = np.array([34.0, 40.0, 46.0]), np.array([-6.0, 0.0, 4.0])
    ts = _samples(lat, lon)
    tt = thermal_time(ts, field, "t2m", base=10, cap=30, start="2021-03-01")
    direct = _direct(ds, lat, lon)
    np.testing.assert_allclose(tt.cumulative, direct, rtol=0.01, atol=0.5)


def test_covariate_bands_and_alignment():
    ds = _daily_temperature()
    ts = _samples(np.array([30.0, 48.0]), np.array([0.0, 0.0]))
    tt = thermal_time(ts, GriddedField(ds), "t2m", start="2021-03-01")
    ext = add_covariates(ts, tt)
    assert ext.bands == ["ndvi", "gdd_cum", "day_length"]
    assert ext.values[0, -1, 2] > ext.values[0, 0, 2]  # days lengthen in spring
    aligned = align_on_thermal_time(ts, tt, step=25.0)
    assert aligned.dates is None and aligned.n_bands == 1
    # the warmer (southern) sample spans more thermal time
    assert np.isfinite(aligned.values[0, :, 0]).sum() > np.isfinite(aligned.values[1, :, 0]).sum()


def test_thermal_time_errors():
    ds = _daily_temperature()
    ts = TimeSeriesSet(values=np.zeros((1, 2, 1)), bands=["a"],
                       dates=np.array(["2021-04-01", "2021-05-01"], dtype="datetime64[D]"))
    with pytest.raises(DataError, match="longitude/latitude"):
        thermal_time(ts, GriddedField(ds))
    ts2 = _samples(np.array([40.0]), np.array([0.0]))
    with pytest.raises(DataError, match="season start"):
        thermal_time(ts2, GriddedField(ds), start="2021-04-01")
