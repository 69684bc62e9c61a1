"""The transfer study grid: applicability, features, files, resuming, no leakage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.transfer import TransferSplit
from cropscope.transfer.study import (
    StudyConfig,
    ThermalAlignment,
    feature_set,
    median_series,
    not_applicable,
    run_study,
)
from tests.conftest import make_toy_set


def _toy(n_per_class: int = 18) -> TimeSeriesSet:
    ts = make_toy_set(n_per_class=n_per_class, bands=("red", "nir"), seed=3)
    years = np.array([2000 + i % 4 for i in range(ts.n_samples)])
    meta = pd.DataFrame({"year": years, "longitude": 10.0, "latitude": 45.0})
    return ts.replace(meta=meta)


def test_applicability_matrix() -> None:
    assert not_applicable("raw", "cropnet") is None
    assert not_applicable("median2d", "cropnet") is None
    assert "median2d" in not_applicable("median1d", "cropnet")
    assert "median1d" in not_applicable("median2d", "rf")
    assert "median1d" in not_applicable("median2d", "tempcnn")
    assert not_applicable("harmonic", "lightgbm") is None
    for model in ("tempcnn", "cropnet", "ltae"):
        assert "time axis" in not_applicable("harmonic", model)
        assert not_applicable("indices", model) is None


def test_feature_sets() -> None:
    ts = _toy()
    med = median_series(ts, window_days=60)
    assert med.n_times == 6 and med.bands == ts.bands and med.dates is not None
    np.testing.assert_array_equal(med.labels, ts.labels)
    with_idx = feature_set(ts, "indices")
    assert with_idx.bands[:2] == ["red", "nir"] and "NDVI" in with_idx.bands
    assert feature_set(ts, "raw") is ts


def _config(**kw) -> StudyConfig:
    base = dict(
        splits=[TransferSplit("year", ("2000", "2001", "2002"), ("2003",))],
        features=["raw", "harmonic", "median2d"],
        models={"rf": {"n_estimators": 10, "n_jobs": 1},
                "ltae": {"epochs": 2, "d_model": 16, "n_head": 4, "mlp": 16}},
        seeds=(0, 1), jobs=1,
    )
    return StudyConfig(**{**base, **kw})


def test_run_study_writes_table_and_resumes(tmp_path) -> None:
    ts = _toy()
    res = run_study(ts, _config(), tmp_path, progress=False, plot=True)
    for name in ("runs.csv", "study.csv", "study.md", "augmentation.csv", "study.json",
                 "study.png"):
        assert (tmp_path / name).is_file(), name
    runs = pd.read_csv(tmp_path / "runs.csv")
    # rf: raw + harmonic, ltae: raw; x 2 augmentation x 2 seeds
    assert len(runs) == 3 * 2 * 2
    table = res.table
    na = table[table["n_seeds"] == 0]
    assert set(zip(na["feature"], na["model"], strict=True)) == {
        ("median2d", "rf"), ("median2d", "ltae"), ("harmonic", "ltae")}
    assert (table[table["n_seeds"] > 0]["n_seeds"] == 2).all()
    # no leakage: target groups never in training; tree models augment the source only
    years = ts.meta["year"]
    assert (runs["n_source"] == (years < 2003).sum()).all()
    assert (runs["n_target"] == (years == 2003).sum()).all()
    aug_rf = runs[(runs["model"] == "rf") & runs["augment"]]
    assert (aug_rf["n_train"] == 3 * aug_rf["n_source"]).all()
    assert "Augmentation effect" in (tmp_path / "study.md").read_text()

    again = run_study(ts, _config(), tmp_path, progress=False, plot=False)
    assert json.loads((tmp_path / "study.json").read_text())["n_run_now"] == 0
    pd.testing.assert_frame_equal(again.runs, res.runs)


class _Warm:
    """A constant 20 °C field: 10 GDD a day above base 10."""

    def sample(self, variable, lat, lon, time=None):
        return np.full(np.shape(lat), 20.0)


def test_thermal_time_alignment(tmp_path) -> None:
    ts = _toy(6)
    cfg = _config(features=["raw", "median1d"], models={"rf": {"n_estimators": 5, "n_jobs": 1}},
                  seeds=(0,), augment=(False,),
                  thermal=ThermalAlignment(_Warm(), step=300.0))
    res = run_study(ts, cfg, tmp_path, progress=False, plot=False)
    ran = res.table[res.table["n_seeds"] > 0]
    assert list(ran["feature"]) == ["raw"]  # thermal-time series have no calendar dates
    assert "calendar dates" in res.table[res.table["feature"] == "median1d"]["note"].iloc[0]


def test_bad_feature_is_a_clear_error(tmp_path) -> None:
    from cropscope.errors import DataError

    with pytest.raises(DataError, match="unknown feature"):
        run_study(_toy(), _config(features=["raw", "fourier"]), tmp_path, progress=False)
