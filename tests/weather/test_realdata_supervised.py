"""ERA5 UK t2m (../shared/data/weather_era5_uk_t2m): the reference numbers of its SOURCE.md,
and a few training steps end to end (no long training here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cropscope.weather.readers import open_weather
from cropscope.weather.windows import heldout_mask, reference_predictions
from tests.conftest import shared_folder

pytestmark = pytest.mark.realdata

FILE = "era5_t2m_uk_2019-03-01_to_15.nc"


@pytest.fixture(scope="module")
def era5(real_data_dir):
    path = shared_folder(real_data_dir, "weather_era5_uk_t2m") / FILE
    if not path.is_file():
        pytest.skip(f"missing {path}")
    return path


def test_references_reproduce_source_md(era5):
    ds = open_weather(era5)
    fine = ds["t2m"].values[:, None]
    times = ds["time"].values.astype("datetime64[s]")
    lat, lon = ds["latitude"].values, ds["longitude"].values
    assert fine.shape == (360, 1, 33, 49)
    scored = times >= np.datetime64("2019-03-11T00")
    train = times <= np.datetime64("2019-03-10T23")
    ref, _ = reference_predictions(fine, times, 4, 6, lat, lon, scored, train)
    held = heldout_mask(33, 49, 4)
    rmse = {k: float(np.sqrt(np.mean(((v - fine[scored])[:, 0][:, held]) ** 2)))
            for k, v in ref.items()}
    # SOURCE.md: bilinear × linear 0.658 K, bicubic × linear 0.723 K, hour-of-day bias 0.549 K
    assert round(rmse["bilinear_linear"], 3) == 0.658
    assert round(rmse["bicubic_linear"], 3) == 0.723
    assert round(rmse["hour_bias"], 3) == 0.549


def test_a_few_training_steps_end_to_end(era5, tmp_path):
    from cropscope.weather.supervised import (
        evaluate_supervised,
        prepare_training,
        train_supervised,
    )

    torch.set_num_threads(1)
    data = prepare_training(era5, 4, 6, "2019-03-10T23")  # 18 h windows
    assert data.n_complete_windows == 40 - 3 and data.times.size == 240
    train_supervised(data, {"steps": 3, "batch": 256}, tmp_path / "run")
    result = evaluate_supervised(tmp_path / "run", era5, "2019-03-15T00")
    entry = result["t2m"]
    assert result["n_times"] == 24 and result["n_points_per_time"] == 33 * 49 - 9 * 13
    assert np.isfinite(entry["rmse_model"]) and entry["rmse_model"] < 2 * entry[
        "rmse_bilinear_linear"]
