"""Sample quality: class temporal profiles (against a direct numpy computation) and
out-of-fold noisy-label detection (finds planted label flips)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cropscope.errors import EvaluationError
from cropscope.evaluation.quality import class_profiles, noisy_labels, plot_class_profiles
from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.conftest import make_toy_set
from tests.evaluation.test_crossval import CentroidClassifier


def test_profiles_equal_numpy_quantiles() -> None:
    ts = make_toy_set(n_per_class=11, nan_fraction=0.2, seed=3)
    prof = class_profiles(ts)
    assert len(prof) == ts.n_classes * ts.n_bands * ts.n_times
    values = np.where(ts.mask[:, :, None], ts.values, np.nan)
    for (name, band), part in prof.groupby(["class", "band"]):
        members = values[ts.label_names == name][:, :, ts.bands.index(band)]
        part = part.sort_values("step")
        np.testing.assert_array_equal(part["n"], np.isfinite(members).sum(axis=0))
        for col, q in (("q25", 0.25), ("median", 0.5), ("q75", 0.75)):
            expected = [np.quantile(col_v[np.isfinite(col_v)], q) for col_v in members.T]
            np.testing.assert_allclose(part[col], expected, rtol=1e-6)
        assert (pd.to_datetime(part["date"]).to_numpy() == ts.dates).all()


def test_profiles_skip_unlabelled_and_empty_steps() -> None:
    ts = make_toy_set(n_per_class=4, n_classes=2)
    labels = ts.labels.copy()
    labels[0] = -1
    ts = ts.replace(labels=labels)
    values = ts.values.copy()
    values[ts.labels == 1, 3] = np.nan  # class_1 has no observation at step 3
    ts = ts.replace(values=values)
    prof = class_profiles(ts)
    row = prof[(prof["class"] == "class_1") & (prof["step"] == 3)]
    assert (row["n"] == 0).all() and row["median"].isna().all()
    assert prof[(prof["class"] == "class_0") & (prof["step"] == 0)]["n"].iloc[0] == 3


def test_profile_plot_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    ts = make_toy_set(n_per_class=5)
    path = plot_class_profiles(ts, tmp_path / "p.png", title="toy")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]  # no temp file left
    with pytest.raises(EvaluationError, match="columns"):
        plot_class_profiles(pd.DataFrame({"x": [1]}), tmp_path / "q.png")


def test_noisy_labels_find_planted_flips() -> None:
    ts = make_toy_set(n_per_class=30, n_classes=3, seed=5)
    rng = np.random.default_rng(0)
    flipped = rng.choice(ts.n_samples, size=6, replace=False)
    labels = ts.labels.copy()
    labels[flipped] = (labels[flipped] + 1) % 3
    noisy = ts.replace(labels=labels)
    res = noisy_labels(CentroidClassifier, noisy, cv=5, seed=0, threshold=0.8)
    suspects = set(res.suspects["id"].tolist())
    assert suspects == set(ts.ids[flipped].tolist())
    # the suspects' "predicted" class is the true (unflipped) one, with a high score
    top = res.suspects.set_index("id")
    truth = dict(zip(ts.ids, ts.label_names, strict=True))
    assert all(top.loc[i, "predicted"] == truth[i] for i in suspects)
    assert (top["p_predicted"] >= 0.8).all() and (top["margin"] > 0.5).all()
    assert res.table["suspect"].iloc[: len(suspects)].all()  # suspects first
    assert np.allclose(res.proba.sum(axis=1), 1.0)
    assert res.config["n_suspects"] == 6


def test_noisy_labels_clean_set_and_threshold() -> None:
    ts = make_toy_set(n_per_class=20, seed=2)
    assert noisy_labels(CentroidClassifier, ts, cv=4).suspects.empty
    with pytest.raises(EvaluationError, match="threshold"):
        noisy_labels(CentroidClassifier, ts, threshold=1.5)


def test_quality_cli(tmp_path: Path) -> None:
    ts = make_toy_set(n_per_class=15, seed=1)
    labels = ts.labels.copy()
    labels[[0, 20]] = (labels[[0, 20]] + 1) % 3
    table = tmp_path / "s.csv"
    ts.replace(labels=labels).to_long().drop(columns="valid").to_csv(table, index=False)
    png, csv = tmp_path / "prof.png", tmp_path / "prof.csv"
    proc = run_cli("quality", "profiles", "--table", str(table), "--out", str(png),
                   "--csv", str(csv))
    assert png.is_file() and "3 classes x 2 bands" in proc.stdout
    assert set(pd.read_csv(csv)["class"]) == {"class_0", "class_1", "class_2"}
    out = tmp_path / "noisy.csv"
    proc = run_cli("quality", "noisy", "--table", str(table), "--model", "rf", "--cv", "3",
                   "--set", "n_estimators=50", "--threshold", "0.6", "--out", str(out))
    flagged = pd.read_csv(out)
    assert {0, 20} <= set(flagged["id"]) and "suspects" in proc.stdout
    proc = run_cli("quality", "noisy", "--table", str(table), "--json", "--cv", "3",
                   "--set", "n_estimators=20")
    assert json.loads(proc.stdout)["model"] == "rf"
    proc = run_cli("quality", "noisy", "--table", str(table), "--threshold", "2", check=False)
    assert_one_line_error(proc, "threshold")
