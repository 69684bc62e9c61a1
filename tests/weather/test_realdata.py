"""ERA-Interim u/v/z (../shared/data/weather_reanalysis): reading and a short real fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cropscope.weather.evaluate import stack_fields
from cropscope.weather.geometry import RegularGrid
from cropscope.weather.readers import open_weather
from cropscope.weather.training import fit_field

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def eraint(real_data_dir):
    path = real_data_dir / "weather_reanalysis" / "eraint_uvz.nc"
    if not path.is_file():
        pytest.skip(f"missing {path}")
    return open_weather(path)


def test_reader_conventions(eraint):
    ds = eraint
    assert set(ds.data_vars) == {"u", "v", "z"}
    assert ds["latitude"].values[0] == -90 and ds["latitude"].values[-1] == 90
    assert ds["longitude"].values[0] == -180 and ds["longitude"].values[-1] == 179.25
    assert ds["level"].values.tolist() == [200, 500, 850]
    assert 1e4 < float(ds["z"].sel(level=850).mean()) < 1.6e4  # geopotential, m² s⁻²


@pytest.mark.slow
def test_short_fit_improves_over_its_start(eraint):
    torch.set_num_threads(1)
    sub = eraint.sel(month=1, level=[500], latitude=slice(20, 70),
                     longitude=slice(-60, 60)).isel(latitude=slice(None, None, 3),
                                                    longitude=slice(None, None, 3))
    values, names, slices, _ = stack_fields(sub)
    grid = RegularGrid.from_coords(sub["latitude"].values, sub["longitude"].values)
    field = fit_field(values, grid, names, slices,
                      {"steps": 80, "warmup": 30, "cells": 48, "pde_cells": 32,
                       "eval_points": 1024, "w_pde": {"geostrophic": 1.0}})
    hist = field.info["history"]
    first = next(h for h in hist["loss"] if "multiscale" in h)["multiscale"]
    last = np.mean([h["multiscale"] for h in hist["loss"][-3:]])
    assert last < first  # the data term fell
    assert hist["pde_rms_after"]["geostrophic"] < hist["pde_rms_before"]["geostrophic"]
    assert np.isfinite(field.sample("z", 45.2, 10.1, level=500))
