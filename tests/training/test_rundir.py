from __future__ import annotations

import json

import numpy as np
import pytest

from cropscope.errors import ModelError
from cropscope.training.rundir import load_run, run_info, train_run
from tests.conftest import make_toy_set


def test_train_run_writes_self_contained_directory(tmp_path) -> None:
    ts = make_toy_set(n_per_class=30)
    result = train_run(ts, "rf", tmp_path / "run", config={"n_estimators": 20}, holdout=0.25,
                       seed=3, source="toy")
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"model.json", "forest.skops", "run.json", "metrics.json",
            "confusion_matrix.png"} <= files
    info = run_info(tmp_path / "run")
    assert info["kind"] == "classifier" and info["model"]["name"] == "rf"
    assert info["classes"] == ts.classes and info["sources"]["input"]["bands"] == ts.bands
    assert info["time_grid"]["n_times"] == ts.n_times
    info = info["training"]
    assert info["n_train"] + info["n_holdout"] == ts.n_samples and info["seed"] == 3
    card = json.loads((tmp_path / "run" / "model.json").read_text())["card"]
    assert card["bands"] == ts.bands and card["classes"] == ts.classes
    assert result.metrics is not None and result.metrics["n_samples"] == info["n_holdout"]
    model = load_run(tmp_path / "run")
    np.testing.assert_allclose(model.predict_proba(ts), result.model.predict_proba(ts))


def test_train_run_without_holdout_uses_every_sample(tmp_path) -> None:
    ts = make_toy_set(n_per_class=10)
    result = train_run(ts, "rf", tmp_path / "run", config={"n_estimators": 5}, holdout=0)
    assert result.metrics is None
    assert run_info(tmp_path / "run")["training"]["n_train"] == ts.n_samples


def test_load_run_errors(tmp_path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a cropscope run"):
        load_run(tmp_path / "empty")
