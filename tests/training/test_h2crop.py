"""The H2Crop protocol on generated files in the H2Crop layout: every configuration trains
an epoch on CPU and writes per-level reports; runs reload; the temporal-window experiment;
an end-to-end run on samples built from the real EnMAP Potsdam tiles."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from cropscope.data.readers.h2crop import H2CropDataset, generate_h2crop, read_level_sizes
from cropscope.errors import DataError, ModelError
from cropscope.models.h2crop import H2CROP_CONFIGS
from cropscope.training.h2crop import (
    h2crop_recipe,
    load_h2crop_run,
    run_normalisation,
    temporal_window_experiment,
    train_h2crop,
)

QUICK = {"epochs": 1, "batch_size": 2, "device": "cpu"}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_h2crop(tmp_path_factory.mktemp("h2crop") / "data", 8, size=24,
                           hyper_size=8, hyper_bands=12, months=12, seed=0)


def test_recipe_is_the_reference_one() -> None:
    cfg = h2crop_recipe()
    assert (cfg.lr, cfg.weight_decay, cfg.min_lr, cfg.warmup_iters) == (6e-5, 5e-4, 6e-6, 1000)
    assert (cfg.epochs, cfg.batch_size, cfg.cutmix, cfg.augment, cfg.amp) == (100, 4, 0.5,
                                                                               True, True)
    assert h2crop_recipe(epochs=3).epochs == 3
    with pytest.raises(ModelError):
        h2crop_recipe(cutmix=2.0)


@pytest.mark.parametrize("config", list(H2CROP_CONFIGS))
def test_every_configuration_trains_an_epoch_and_reports(root: Path, tmp_path: Path,
                                                         config: str) -> None:
    out = tmp_path / "run"
    run = train_h2crop(root, config, months=6, out_dir=out, training=QUICK,
                       normalise="train", progress=False)
    assert run.config == config and len(run.history) == 1
    assert math.isfinite(run.history[0]["loss"]) and "val_macro_f1" in run.history[0]
    assert run.test is not None and len(run.test["levels"]) == 4
    for name in ("weights.safetensors", "best.safetensors", "last.safetensors", "last.json",
                 "history.json", "run.json", "manifest.json", "test/levels.json",
                 "test/levels.csv"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "test" / "levels.csv").open()))
    per_level = [r for r in rows if r["level"] != "mean"]
    # 4 levels x (all, changed, unchanged) x (with, without background)
    assert len(per_level) == 4 * 3 * 2
    for r in per_level:
        assert {"overall_accuracy", "macro_f1", "miou"} <= set(r)
        if r["subset"] == "all":
            assert 0.0 <= float(r["overall_accuracy"]) <= 1.0
    summary = run.summary()
    assert summary["config"] == config and 0 <= summary["all_bg_overall_accuracy"] <= 1


def test_run_reloads_and_predicts_the_same(root: Path, tmp_path: Path) -> None:
    train_h2crop(root, "S2+H+P", months=8, out_dir=tmp_path, training=QUICK,
                 normalise="train", progress=False)
    model = load_h2crop_run(tmp_path)
    assert model.config == "S2+H+P" and model.months == 8
    stats = run_normalisation(tmp_path)
    ds = H2CropDataset(root, "test", months=8, with_priors=True, normalise=stats)
    inputs, _ = ds[0]
    batch = {k: v[None] for k, v in inputs.items()}
    again = load_h2crop_run(tmp_path)
    with torch.no_grad():
        a, b = model(batch), again(batch)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)
    spec = json.loads((tmp_path / "run.json").read_text())
    assert spec["kind"] == "h2crop" and spec["network"]["name"] == "h2crop"
    assert spec["network"]["kwargs"]["levels"] == list(read_level_sizes(root))
    assert spec["time_grid"] == {"kind": "steps", "n_times": 8}
    with pytest.raises(ModelError, match=r"run directory|run\.json"):
        load_h2crop_run(tmp_path / "test")


def test_reference_normalisation_needs_the_reference_bands(root: Path, tmp_path: Path
                                                           ) -> None:
    with pytest.raises(DataError, match="normalise='train'"):
        train_h2crop(root, "S2", out_dir=tmp_path, training=QUICK, progress=False)


def test_a_last_batch_of_one_sample_is_dropped(tmp_path: Path) -> None:
    # 5 training samples at batch 2: the 1 x 1 deepest map of a 24 px input cannot be
    # batch-normalised for a single sample, so that batch is dropped instead of failing
    data = generate_h2crop(tmp_path / "d", 7, splits={"train": 5, "val": 1, "test": 1},
                           size=24, hyper_size=8, hyper_bands=12)
    run = train_h2crop(data, "S2", training=QUICK, normalise="train", progress=False)
    assert len(run.history) == 1 and math.isfinite(run.history[0]["loss"])


def test_level_sizes_must_fit_the_labels(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="level sizes"):
        train_h2crop(root, "S2", levels=(2, 2, 2, 2), out_dir=tmp_path, training=QUICK,
                     normalise="train", progress=False)
    with pytest.raises(ModelError, match="configuration"):
        train_h2crop(root, "H", out_dir=tmp_path, training=QUICK, progress=False)


def test_temporal_window_experiment(root: Path, tmp_path: Path) -> None:
    table = temporal_window_experiment(root, tmp_path, configs=("S2", "S2+H"), months=(6, 12),
                                       training=QUICK, normalise="train", progress=False)
    assert list(zip(table["config"], table["months"], strict=True)) == [
        ("S2", 6), ("S2+H", 6), ("S2", 12), ("S2+H", 12)]
    key = "all_nobg_macro_f1"
    for m in (6, 12):
        with_h = table[(table["config"] == "S2+H") & (table["months"] == m)].iloc[0]
        s2 = table[(table["config"] == "S2") & (table["months"] == m)].iloc[0]
        assert with_h["enmap_gain_f1"] == pytest.approx(with_h[key] - s2[key])
        assert s2["enmap_gain_f1"] is None or math.isnan(s2["enmap_gain_f1"])
    assert (tmp_path / "experiment.csv").is_file()
    assert (tmp_path / "S2_H_12m" / "test" / "levels.json").is_file()


@pytest.mark.slow
def test_end_to_end_on_real_enmap_spectra(real_data_dir: Path, tmp_path: Path) -> None:
    """Samples built from the real EnMAP Potsdam tiles (S2 simulated from them): the
    S2+H configuration trains, its loss falls, and the test report covers real pixels."""
    from cropscope.hyperspectral.to_h2crop import build_h2crop_from_enmap

    data = build_h2crop_from_enmap(tmp_path / "potsdam", real_data_dir, months=6)
    training = {"epochs": 4, "batch_size": 4, "device": "cpu", "ignore_index": 0,
                "lr": 1e-3, "warmup_iters": 0}
    run = train_h2crop(data, "S2+H", months=6, out_dir=tmp_path / "run", training=training,
                       normalise="train", progress=False)
    losses = [h["loss"] for h in run.history]
    assert losses[-1] < losses[0]
    assert run.test is not None
    fine = run.test["levels"][-1]["all"]["without_background"]
    assert fine["n_pixels"] > 0 and 0.0 <= fine["overall_accuracy"] <= 1.0
