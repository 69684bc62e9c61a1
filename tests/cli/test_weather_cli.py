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


# ---------------------------------------------------------------------------- supervised
SUP_FAST = ["--set", "steps=4", "--set", "batch=128", "--set", "d_model=8", "--set",
            "n_heads=2", "--set", "n_query=4", "--set", "hidden=16", "--threads", "1"]


@pytest.fixture
def t2m_file(tmp_path):
    from tests.weather.conftest_helpers import make_t2m_dataset

    path = tmp_path / "t2m.nc"
    make_t2m_dataset().to_netcdf(path, engine="scipy")
    return path


def test_train_evaluate_sample_export(t2m_file, tmp_path):
    run = tmp_path / "run"
    proc = run_cli("weather", "train", "--input", str(t2m_file), "--coarsen", "4",
                   "--input-step", "6", "--until", "2019-03-03T11", "--out", str(run),
                   "--seed", "1", "--json", *SUP_FAST)
    summary = json.loads(proc.stdout)
    assert summary["variables"] == ["t2m"] and summary["threads"] == 1
    proc = run_cli("weather", "evaluate", "--run", str(run), "--input", str(t2m_file),
                   "--from", "2019-03-03T12", "--json", "--threads", "1")
    result = json.loads(proc.stdout)  # exactly one JSON object on stdout
    entry = result["t2m"]
    for key in ("rmse_model", "mae_model", "rmse_bilinear_linear", "rmse_bicubic_linear",
                "rmse_hour_bias"):
        assert entry[key] > 0
    assert result["n_times"] == 96 - 60 and result["n_points_per_time"] == 13 * 17 - 4 * 5
    assert not result["overlaps_training"]
    # sample at arbitrary points and times; export at another resolution
    proc = run_cli("weather", "sample", "--field", str(run), "--variable", "t2m",
                   "--lat", "51.1,49.4", "--lon", "-3.3,-0.1", "--time",
                   "2019-03-03T17:20", "--json")
    values = json.loads(proc.stdout)["values"]
    assert len(values) == 2 and all(270 < v < 290 for v in values)
    nc = tmp_path / "out.nc"
    run_cli("weather", "export", "--field", str(run), "--out", str(nc), "--resolution", "0.5",
            "--start", "2019-03-03T12", "--end", "2019-03-03T18", "--time-step", "0.5")
    ds = xr.open_dataset(nc, engine="h5netcdf")
    assert ds["t2m"].shape == (13, 7, 9)
    point = run_cli("weather", "sample", "--field", str(run), "--variable", "t2m", "--lat",
                    str(float(ds.latitude[2])), "--lon", str(float(ds.longitude[3])),
                    "--time", "2019-03-03T13:30", "--json")
    assert json.loads(point.stdout)["values"][0] == pytest.approx(
        float(ds["t2m"][3, 2, 3]), rel=1e-6)
    # a file without the run's variable
    other = tmp_path / "other.nc"
    xr.open_dataset(t2m_file).rename({"t2m": "foo"}).to_netcdf(other, engine="scipy")
    proc = run_cli("weather", "evaluate", "--run", str(run), "--input", str(other),
                   "--from", "2019-03-03T12", "--json", check=False)
    assert proc.returncode == 2
    assert_one_line_error(proc, "t2m", "not in the file")


def test_train_user_errors(t2m_file, tmp_path):
    out = str(tmp_path / "run")

    def train(*args, path=t2m_file):
        return run_cli("weather", "train", "--input", str(path), "--coarsen", "4",
                       "--out", out, *args, *SUP_FAST, check=False)

    def error(proc, *needles):
        assert proc.returncode == 2
        assert_one_line_error(proc, *needles)

    error(train("--input-step", "6", "--until", "2019-04-01T00"), "outside the file")
    error(train("--input-step", "6", "--until", "2019-03-01T23"), "fewer than two windows")
    error(train("--input-step", "6", "--until", "2019-03-03T00", "--variables", "u10"),
          "u10", "not in the file")
    from tests.weather.conftest_helpers import make_t2m_dataset

    three_hourly = tmp_path / "t3.nc"
    make_t2m_dataset(hours=40, step_h=3).to_netcdf(three_hourly, engine="scipy")
    error(train("--input-step", "4", "--until", "2019-03-04T00", path=three_hourly),
          "does not divide")
    error(train("--input-step", "6", "--until", "yesterday"), "--until")
    import torch

    if not torch.cuda.is_available():
        error(train("--input-step", "6", "--until", "2019-03-03T00", "--device", "cuda"),
              "CUDA is not available")
    error(train("--input-step", "6", "--until", "2019-03-03T00", "--set", "window=10"),
          "window")
    # evaluate --run: needs --from; a missing run; a file without the run's variable
    error(run_cli("weather", "evaluate", "--run", out, "--input", str(t2m_file), "--json",
                  check=False), "--from")
    error(run_cli("weather", "evaluate", "--run", out, "--input", str(t2m_file), "--from",
                  "2019-03-03T12", check=False), "run")
    error(run_cli("weather", "evaluate", "--input", str(t2m_file), check=False), "--coarsen")
