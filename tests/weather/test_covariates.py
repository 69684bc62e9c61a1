from __future__ import annotations

from pathlib import Path

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
    thermal_time_from_series,
)
from cropscope.weather.evaluate import stack_fields
from cropscope.weather.geometry import RegularGrid
from cropscope.weather.readers import standardize
from cropscope.weather.training import fit_field
from tests.conftest import shared_folder


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


# ------------------------------------------------------------- thermal time from step means
def _step_set(temp_k100, dates=("2021-09-01", "2021-10-01", "2021-11-01", "2021-12-01"),
              s2=None) -> TimeSeriesSet:
    """Two bands, S2-like ``b04`` and a temperature in K x 100 (WorldCereal's scaling)."""
    temp = np.asarray(temp_k100, float)
    n, t = temp.shape
    b04 = np.full((n, t), 0.1) if s2 is None else np.asarray(s2, float)
    values = np.stack([b04, temp], axis=2)
    return TimeSeriesSet(values=values, bands=["b04", "tmean"],
                         dates=np.asarray(dates, dtype="datetime64[D]"),
                         mask=np.isfinite(b04),
                         meta=pd.DataFrame({"latitude": [42.0] * n, "longitude": [9.0] * n}))


def test_step_gdd_equals_a_hand_computation():
    # 20 °C in September (30 d), 15 °C in October (31 d), 5 °C in November (30 d), then 12 °C
    ts = _step_set([[29315, 28815, 27815, 28515]])
    tt = thermal_time_from_series(ts, "tmean", scale=0.01, units="K", base=10, cap=30)
    sept, octo, nov = 10 * 30, 5 * 31, 0 * 30
    np.testing.assert_allclose(tt.cumulative[0], [0, sept, sept + octo, sept + octo + nov],
                               atol=1e-3)
    np.testing.assert_allclose(tt.increment[0], [0, sept, octo, nov], atol=1e-3)
    assert str(tt.start[0]) == "2021-09-01"
    # the middle of each period; the last step takes the previous step's length (30 d)
    mid = thermal_time_from_series(ts, "tmean", scale=0.01, units="K", at="middle")
    np.testing.assert_allclose(mid.cumulative[0], [150, 300 + 77.5, 455, 455 + 2 * 15],
                               atol=1e-3)
    # base 0, cap 18: the cap bites in September
    t0 = thermal_time_from_series(ts, "tmean", scale=0.01, units="K", base=0, cap=18)
    np.testing.assert_allclose(t0.cumulative[0, 1:], np.cumsum([18 * 30, 15 * 31, 5 * 30]),
                               atol=1e-3)
    # a season start within October: counted from there, negative before it
    st = thermal_time_from_series(ts, "tmean", scale=0.01, units="K", start="2021-10-11")
    np.testing.assert_allclose(st.cumulative[0], np.array([0, 300, 455, 455]) - 350,
                               atol=1e-3)
    # degrees Celsius directly, and per-sample dates
    c = _step_set([[20.0, 15.0, 5.0, 12.0]])
    np.testing.assert_allclose(thermal_time_from_series(c, "tmean", units="C").cumulative,
                               tt.cumulative, atol=1e-3)


def test_step_thermal_time_with_per_sample_dates_and_dekads():
    dates = np.array([["2022-09-01", "2022-09-11", "2022-09-21"],
                      ["2022-09-11", "2022-09-21", "2022-10-01"]], dtype="datetime64[D]")
    ts = TimeSeriesSet(values=np.array([[[20.0], [14.0], [30.0]], [[12.0], [11.0], [9.0]]]),
                       bands=["t"], dates=dates)
    tt = thermal_time_from_series(ts, "t", units="C", base=10, cap=25)
    np.testing.assert_allclose(tt.cumulative, [[0, 100, 140], [0, 20, 30]], atol=1e-4)


def test_step_thermal_time_gaps_are_interpolated_or_refused():
    # cloudy S2 (mask False) does not make a temperature gap
    ts = _step_set([[29315, 28815, 27815, 28515]], s2=[[0.1, np.nan, np.nan, 0.2]])
    full = thermal_time_from_series(ts, "tmean", scale=0.01, units="K")
    assert np.all(np.isfinite(full.cumulative))
    # a missing October (NaN) and an impossible 0 K in November: linear in time
    gap = _step_set([[29315, np.nan, 0, 28515]])
    tt = thermal_time_from_series(gap, "tmean", scale=0.01, units="K")
    # days 0, 30, 61, 91: October = 20 - 8 * 30 / 91 °C, November = 20 - 8 * 61 / 91 °C
    oct_c, nov_c = 20 - 8 * 30 / 91, 20 - 8 * 61 / 91
    expected = np.cumsum([0, 10 * 30, (oct_c - 10) * 31, (nov_c - 10) * 30])
    np.testing.assert_allclose(tt.cumulative[0], expected, atol=1e-2)
    with pytest.raises(DataError, match="gap"):
        thermal_time_from_series(gap, "tmean", scale=0.01, units="K", gaps="raise")
    # a leading gap takes the first valid value
    lead = thermal_time_from_series(_step_set([[np.nan, 29315, 28815, 28515]]), "tmean",
                                    scale=0.01, units="K")
    np.testing.assert_allclose(lead.cumulative[0, :2], [0, 300], atol=1e-3)


def test_step_thermal_time_works_with_covariates_and_alignment():
    ts = _step_set([[29315, 28815, 27815, 28515], [29815, 29315, 28815, 28515]],
                   s2=[[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]])
    tt = thermal_time_from_series(ts, "tmean", scale=0.01, units="K", base=0)
    ext = add_covariates(ts, tt, bands=("gdd_cum", "gdd_step", "day_length"))
    assert ext.bands == ["b04", "tmean", "gdd_cum", "gdd_step", "day_length"]
    np.testing.assert_array_equal(ext.band("gdd_step"), tt.increment)
    assert add_covariates(ts, tt).bands == ["b04", "tmean", "gdd_cum", "day_length"]
    with pytest.raises(DataError, match="covariate bands"):
        add_covariates(ts, tt, bands=("gdd",))
    aligned = align_on_thermal_time(ts.select_bands(["b04"]), tt, step=100.0)
    assert aligned.dates is None
    # the warmer sample reaches the same reflectance at a higher thermal time
    assert np.isfinite(aligned.values[1, :, 0]).sum() > np.isfinite(aligned.values[0, :, 0]).sum()
    np.testing.assert_allclose(aligned.values[0, 0, 0], 0.1)


def test_step_thermal_time_errors():
    ts = _step_set([[29315, 28815, 27815, 28515]])
    with pytest.raises(DataError, match="not found"):
        thermal_time_from_series(ts, "AGERA5-TMEAN")
    with pytest.raises(DataError, match="calendar dates"):
        thermal_time_from_series(ts.replace(dates=None), "tmean")
    with pytest.raises(DataError, match="no valid temperature"):
        thermal_time_from_series(_step_set([[np.nan] * 4]), "tmean")
    with pytest.raises(DataError, match="without any valid"):
        thermal_time_from_series(_step_set([[29315] * 4, [np.nan] * 4]), "tmean", scale=0.01)
    with pytest.raises(DataError, match="check scale"):  # K x 100 read as K
        thermal_time_from_series(ts, "tmean", units="K")
    with pytest.raises(DataError, match="season start"):
        thermal_time_from_series(ts, "tmean", scale=0.01, start="2021-08-01")
    with pytest.raises(DataError, match="two time steps"):
        thermal_time_from_series(_step_set([[29315]], dates=["2021-09-01"]), "tmean")
    with pytest.raises(DataError, match="gaps must be"):
        thermal_time_from_series(ts, "tmean", gaps="drop")
    with pytest.raises(DataError, match="units"):
        thermal_time_from_series(ts, "tmean", units="F")


@pytest.mark.realdata
def test_step_thermal_time_of_an_lpis_parcel_matches_pandas(real_data_dir: Path) -> None:
    from cropscope.data.readers.table import read_table

    folder = shared_folder(real_data_dir, "worldcereal_lpis_samples")
    path = folder / "2023_FRA_LPIS_POLY_110.geoparquet"
    ts = read_table(path, time_col="timestamp", label_col="ewoc_code",
                    bands=["AGERA5-TMEAN"], nodata=65535)  # native dekads
    tt = thermal_time_from_series(ts, "AGERA5-TMEAN", scale=0.01, units="K", base=0, cap=30)
    raw = pd.read_parquet(path, columns=["sample_id", "timestamp", "AGERA5-TMEAN"])
    counts = raw.groupby("sample_id").size()
    sid = str(counts[counts == ts.n_times].index[0])  # a parcel with every dekad
    one = raw[raw["sample_id"] == sid].sort_values("timestamp")
    celsius = one["AGERA5-TMEAN"].to_numpy(float) / 100 - 273.15
    days = one["timestamp"].diff().dt.days.shift(-1).ffill().to_numpy(float)
    gdd = np.clip(np.minimum(celsius, 30.0), 0, None) * days
    expected = np.concatenate([[0.0], np.cumsum(gdd)[:-1]])
    i = int(np.flatnonzero(np.asarray(ts.ids).astype(str) == sid)[0])
    np.testing.assert_allclose(tt.cumulative[i], expected, rtol=1e-5, atol=0.05)
    year = int(np.flatnonzero(ts.per_sample_dates[i] == np.datetime64("2023-09-01"))[0])
    assert 3500 < tt.cumulative[i, year] < 6000  # °C·d in a year (base 0 °C): plausible
