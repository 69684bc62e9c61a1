"""``cropscope weather``, run as a user runs it."""

from __future__ import annotations

import json

import pytest
import xarray as xr

from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.weather.conftest_helpers import make_uvz_dataset

FAST = ["--set", "steps=12", "--set", "warmup=6", "--set", "cells=16", "--set",
        "node_cells=8", "--set", "pde_cells=8", "--set", "pde_points=4", "--set",
        "eval_points=128", "--set", "d_model=16", "--set", "n_query=8", "--set", "n_layers=1",
        "--threads", "1"]


@pytest.fixture
def uvz_file(tmp_path):
    path = tmp_path / "uvz.nc"
    make_uvz_dataset(n_lat=25, n_lon=48).to_netcdf(path, engine="scipy")
    return path


def test_evaluate_json_contract(uvz_file):
    proc = run_cli("weather", "evaluate", "--input", str(uvz_file), "--coarsen", "2",
                   "--seed", "0", "--json", *FAST)
    result = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert result["variables"] == ["u", "v", "z"]
    for var in ("u", "v", "z"):
        for key in ("rmse_model", "rmse_bilinear", "rmse_bicubic", "mae_model"):
            assert result[var][key] >= 0
    geo = result["residuals"]["geostrophic"]
    assert {"model", "bicubic", "bilinear", "truth"} <= set(geo)
    # --variables restricts the fit
    proc = run_cli("weather", "evaluate", "--input", str(uvz_file), "--coarsen", "2",
                   "--variables", "z", "--json", *FAST)
    result = json.loads(proc.stdout)
    assert result["variables"] == ["z"] and "u" not in result


def test_fit_sample_export(uvz_file, tmp_path):
    out = tmp_path / "field"
    run_cli("weather", "fit", "--input", str(uvz_file), "--out", str(out), *FAST)
    proc = run_cli("weather", "sample", "--field", str(out), "--variable", "z",
                   "--lat", "45,-30.5", "--lon", "10,200", "--select", "level=500", "--json")
    values = json.loads(proc.stdout)["values"]
    assert len(values) == 2 and all(4e4 < v < 6e4 for v in values)
    nc = tmp_path / "out.nc"
    run_cli("weather", "export", "--field", str(out), "--out", str(nc), "--resolution", "5")
    ds = xr.open_dataset(nc, engine="h5netcdf")
    assert ds["z"].shape == (2, 37, 72)


def test_user_errors(uvz_file, tmp_path):
    assert_one_line_error(run_cli("weather", "evaluate", "--input", str(tmp_path / "no.nc"),
                                  "--coarsen", "3", check=False), "not found")
    assert_one_line_error(run_cli("weather", "evaluate", "--input", str(uvz_file),
                                  "--coarsen", "1", check=False), "coarsen")
    assert_one_line_error(run_cli("weather", "evaluate", "--input", str(uvz_file),
                                  "--coarsen", "2", "--variables", "q", check=False), "q")
    assert_one_line_error(run_cli("weather", "sample", "--field", str(tmp_path),
                                  "--variable", "z", "--lat", "1", "--lon", "2",
                                  check=False), "no weather field")
