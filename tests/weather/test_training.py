from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from cropscope.errors import DataError, ModelError
from cropscope.weather import training
from cropscope.weather.evaluate import stack_fields
from cropscope.weather.field import WeatherField
from cropscope.weather.geometry import RegularGrid
from cropscope.weather.readers import standardize
from cropscope.weather.training import fit_field
from tests.weather.conftest_helpers import make_uvz_dataset

FAST = {"steps": 24, "warmup": 8, "cells": 16, "node_cells": 8, "pde_cells": 8,
        "pde_points": 4, "eval_points": 256, "d_model": 16, "n_query": 8, "n_layers": 1}


def _data():
    ds = standardize(make_uvz_dataset(n_lat=25, n_lon=48))
    values, names, slices, _ = stack_fields(ds)
    grid = RegularGrid.from_coords(ds["latitude"].values, ds["longitude"].values)
    return values, names, slices, grid


def test_fit_records_history_and_reduces_pde_residual():
    torch.set_num_threads(1)
    values, names, slices, grid = _data()
    field = fit_field(values, grid, names, slices, {
        **FAST, "steps": 60, "warmup": 10, "pde_cells": 32, "pde_points": 8,
        "w_multiscale": 0.0, "w_pde": {"geostrophic": 1.0}})
    hist = field.info["history"]
    assert hist["loss"] and np.isfinite(hist["loss"][-1]["total"])
    assert "geostrophic" in hist["loss"][-1]  # PDE term active after the warm-up
    assert "geostrophic" not in hist["loss"][0]  # … and not during it
    assert hist["pde_rms_after"]["geostrophic"] < hist["pde_rms_before"]["geostrophic"]


def test_save_load_sample_export(tmp_path):
    values, names, slices, grid = _data()
    field = fit_field(values, grid, names, slices, FAST, out_dir=tmp_path / "f")
    for name in ("model.safetensors", "context.safetensors", "field.json",
                 "optimizer.safetensors"):
        assert (tmp_path / "f" / name).is_file()
    from cropscope.runs import open_run

    assert open_run(tmp_path / "f").spec.kind == "weather-field"
    loaded = WeatherField.load(tmp_path / "f")
    lat, lon = np.array([10.3, -45.0]), np.array([200.0, -20.5])  # 200E = -160
    a = field.sample("u", lat, lon, level=500)
    np.testing.assert_allclose(loaded.sample("u", lat, lon, level=500), a, rtol=1e-6)
    np.testing.assert_allclose(field.sample("u", lat, lon - 360, level=500), a, rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(DataError, match="select one"):
        field.sample("u", lat, lon)
    with pytest.raises(DataError, match="not in the field"):
        field.sample("q", lat, lon, level=500)
    out = loaded.to_netcdf(tmp_path / "f.nc", resolution=2.5)
    ds = xr.open_dataset(out, engine="h5netcdf")
    assert ds["z"].shape == (2, 73, 144)
    np.testing.assert_allclose(
        ds["z"].sel(level=850).sel(latitude=lat[0], longitude=-160.0, method="nearest"),
        loaded.sample("z", ds["latitude"].sel(latitude=lat[0], method="nearest").item(),
                      -160.0, level=850), rtol=1e-5)


def test_resume_continues_to_the_same_result(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    values, names, slices, grid = _data()
    cfg = {**FAST, "steps": 20, "checkpoint_every": 10}
    full = fit_field(values, grid, names, slices, cfg)

    real_save = training._save_checkpoint
    calls = {"n": 0}

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "_save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        fit_field(values, grid, names, slices, cfg, out_dir=tmp_path / "run")
    monkeypatch.setattr(training, "_save_checkpoint", real_save)
    assert calls["n"] == 1
    with pytest.raises(ModelError, match="not a complete run"):
        WeatherField.load(tmp_path / "run")  # interrupted: not loadable
    resumed = fit_field(values, grid, names, slices, cfg, out_dir=tmp_path / "run", resume=True)
    for k, v in full.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[k], v)


def test_damaged_field_is_refused(tmp_path):
    values, names, slices, grid = _data()
    fit_field(values, grid, names, slices, {**FAST, "steps": 4}, out_dir=tmp_path / "f")
    path = tmp_path / "f" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-4] + b"0000")
    with pytest.raises(ModelError, match="checksum"):
        WeatherField.load(tmp_path / "f")


def test_bad_config():
    values, names, slices, grid = _data()
    with pytest.raises(ModelError, match="unknown training option"):
        fit_field(values, grid, names, slices, {"stepz": 3})
    with pytest.raises(DataError, match="NaN"):
        bad = values.copy()
        bad[0, 0, 0, 0] = np.nan
        fit_field(bad, grid, names, slices, FAST)
