"""One test over every registered model: build, fit, predict, save, load."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cropscope.errors import DataError, ModelError
from cropscope.models import Classifier, create_model, list_models
from tests.conftest import make_toy_set

#: small settings so each model trains in a second or two on toy data
FAST: dict[str, dict[str, Any]] = {
    "rf": {"n_estimators": 25},
    "extratrees": {"n_estimators": 25},
    "quant": {"n_estimators": 25},
    "lightgbm": {"n_estimators": 40, "min_child_samples": 3},
    "logreg": {},
    "svm": {},
    "lda": {},
    "tempcnn": {"epochs": 15, "batch_size": 16, "lr": 3e-3},
    "cropnet": {"epochs": 15, "batch_size": 16, "channels": 16, "augment": False, "lr": 3e-3},
    "ltae": {"epochs": 15, "batch_size": 16, "lr": 3e-3, "d_model": 32, "n_head": 4, "mlp": 32},
    "lstm-fcn": {"epochs": 15, "batch_size": 16, "lr": 3e-3, "filters": [16, 32, 16],
                 "augment": False},
    "spectral-cnn": {"epochs": 15, "batch_size": 16, "filters": 8, "hidden": 32, "lr": 3e-3},
    "spectral-transformer": {"epochs": 15, "batch_size": 16, "lr": 3e-3, "spatial_dim": 16,
                             "spectral_dim": 16, "out_dim": 16, "spatial_depth": 1,
                             "spectral_depth": 1},
}
FAST["minirocket"] = {"n_features": 840, "hydra": True, "hydra_k": 4, "hydra_g": 8}
FAST["inceptiontime"] = {"epochs": 15, "batch_size": 16, "lr": 3e-3, "n_models": 1, "filters": 8}
FAST["hierarchical"] = {"base": "rf", "base_config": FAST["rf"]}
FAST["ensemble"] = {
    "members": [{"model": "rf", "config": FAST["rf"]},
                {"model": "tempcnn", "config": FAST["tempcnn"]}],
}
FAST["stacking"] = {"members": [{"model": "rf", "config": FAST["rf"]}, "logreg"], "cv": 3}
FAST["resampled"] = {"base": "rf", "base_config": FAST["rf"], "resample": "smote"}


def test_every_builtin_model_has_fast_settings() -> None:
    assert set(list_models()) <= set(FAST), "add new models to FAST"


@pytest.mark.parametrize("name", sorted(list_models()))
def test_model_contract(name: str, tmp_path) -> None:
    train = make_toy_set(n_per_class=24, seed=1)
    test = make_toy_set(n_per_class=10, seed=2)
    if name == "hierarchical":  # trains on a class hierarchy
        from tests.models.test_hierarchical import taxonomy

        train = train.with_taxonomy(taxonomy())
    model = create_model(name, **FAST[name])
    assert model.fit(train) is model
    proba = model.predict_proba(test)
    assert proba.shape == (test.n_samples, 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-4)
    accuracy = (model.predict(test) == test.labels).mean()
    assert accuracy >= 0.8, f"{name} accuracy {accuracy:.2f} on separable toy classes"

    model.save(tmp_path / name)
    loaded = Classifier.load(tmp_path / name)
    assert type(loaded) is type(model) and loaded.classes == model.classes
    np.testing.assert_allclose(loaded.predict_proba(test), proba, atol=1e-5)

    # bands are matched by name, whatever their order in the input
    swapped = test.select_bands(list(reversed(test.bands)))
    np.testing.assert_allclose(loaded.predict_proba(swapped), proba, atol=1e-5)
    with pytest.raises(DataError, match="trained on bands"):
        loaded.predict_proba(test.select_bands(["B4"]))
    with pytest.raises(DataError, match="time steps"):
        loaded.predict_proba(test.replace(values=test.values[:, :6], dates=test.dates[:6]))


@pytest.mark.parametrize("name", sorted(list_models()))
def test_unknown_option_is_a_clear_error(name: str) -> None:
    with pytest.raises(ModelError, match="unknown option"):
        create_model(name, not_an_option=1)


def test_unknown_model_lists_available() -> None:
    with pytest.raises(ModelError, match="available models"):
        create_model("svm-of-the-future")


def test_predict_before_fit_is_an_error() -> None:
    with pytest.raises(ModelError, match="not fitted"):
        create_model("rf").predict(make_toy_set())


def test_fit_needs_labels_and_two_classes() -> None:
    ts = make_toy_set()
    with pytest.raises(DataError, match="no labels"):
        create_model("rf").fit(ts.replace(labels=None))
    one_class = ts.subset(ts.labels == 0)
    with pytest.raises(DataError, match="two classes"):
        create_model("rf").fit(one_class)


def test_tree_models_handle_gaps() -> None:
    train = make_toy_set(n_per_class=24, seed=3, nan_fraction=0.2)
    model = create_model("rf", **FAST["rf"]).fit(train)
    assert np.isfinite(model.predict_proba(train)).all()


@pytest.mark.parametrize("name", ["logreg", "rf", "lightgbm", "svm"])
def test_class_weights_by_class_name(name: str) -> None:
    """``class_weight`` may weigh classes by name; anything else is one clear error."""
    train = make_toy_set(n_per_class=24, seed=1)
    model = create_model(name, **FAST[name], class_weight={train.classes[0]: 3.0})
    model.fit(train)
    assert model.class_weight_ == {0: 3.0}
    for bad, words in [({"class_x": 1}, "do not have"), ({train.classes[0]: -1}, "positive"),
                       ([1, 2], "object"), ({train.classes[0]: "x"}, "positive")]:
        with pytest.raises(ModelError, match=words):
            create_model(name, **FAST[name], class_weight=bad).fit(train)
