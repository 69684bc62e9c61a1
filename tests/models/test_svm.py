"""The RBF support vector machine (``svm``) and feature models on neighbourhood means
(``patch_size``), which together are the most accurate models on the Indian Pines window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cropscope.data.patches import PatchSet, extract_patches
from cropscope.errors import DataError, ModelError
from cropscope.models import Classifier, create_model
from tests.conftest import make_toy_set


def test_svm_probabilities_are_calibrated_reproducible_and_saved_exactly(
        tmp_path: Path) -> None:
    train = make_toy_set(n_per_class=20, seed=1, nan_fraction=0.1)
    test = make_toy_set(n_per_class=10, seed=2)
    model = create_model("svm", seed=3).fit(train)
    proba = model.predict_proba(test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert (model.predict(test) == test.labels).mean() >= 0.9
    # the calibration folds come from the seed: the same seed, the same model
    np.testing.assert_array_equal(create_model("svm", seed=3).fit(train).predict_proba(test),
                                  proba)
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "svm.npz",
                                                                  "svm.skops"]
    np.testing.assert_array_equal(Classifier.load(tmp_path / "m").predict_proba(test), proba)


def test_svm_refuses_what_it_cannot_fit() -> None:
    train = make_toy_set(n_per_class=6)
    with pytest.raises(ModelError, match="calibration_folds"):
        create_model("svm", calibration_folds=1).fit(train)
    with pytest.raises(ModelError, match="gamma"):
        create_model("svm", gamma="wide").fit(train)
    lonely = train.subset(np.r_[np.flatnonzero(train.labels != 2), np.flatnonzero(
        train.labels == 2)[:1]])
    with pytest.raises(ModelError, match="at least 2 training samples"):
        create_model("svm").fit(lonely)
    # fewer samples of a class than folds: the folds shrink to fit
    few = train.subset(np.r_[np.flatnonzero(train.labels != 2), np.flatnonzero(
        train.labels == 2)[:3]])
    assert create_model("svm").fit(few).predict_proba(few).shape == (few.n_samples, 3)


def test_svm_loads_only_a_calibrated_svm(tmp_path: Path) -> None:
    train = make_toy_set(n_per_class=8)
    create_model("svm").fit(train).save(tmp_path / "svm")
    create_model("rf", n_estimators=3).fit(train).save(tmp_path / "rf")
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    # a forest holds a type the SVM loader does not trust: refused before it is built
    (tmp_path / "svm" / "svm.skops").write_bytes((tmp_path / "rf" / "forest.skops").read_bytes())
    with pytest.raises(ModelError, match="refusing"):
        Classifier.load(tmp_path / "svm")
    # a trusted but different estimator is not an SVM either
    sio.dump(LogisticRegression().fit(np.eye(3), [0, 1, 2]), tmp_path / "svm" / "svm.skops")
    with pytest.raises(ModelError, match="calibrated SVM"):
        Classifier.load(tmp_path / "svm")


def _patches(seed: int, n: int = 90, size: int = 3) -> tuple[PatchSet, np.ndarray]:
    """Three classes of 5-band spectra in a noisy image: a pixel is noisy, its
    neighbourhood's mean much less so."""
    rng = np.random.default_rng(seed)
    truth = (np.arange(30)[None, :] // 10 + np.zeros((30, 1), int)) % 3
    spectra = np.array([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1], [1, 3, 1, 3, 1]], np.float32)
    image = spectra[truth].transpose(2, 0, 1) + rng.normal(0, 1.5, (5, 30, 30))
    image = image.astype(np.float32)
    rows, cols = rng.integers(0, 30, n), rng.integers(0, 30, n)
    ps = PatchSet(extract_patches(image, rows, cols, size), [f"b{i}" for i in range(5)],
                  labels=truth[rows, cols], classes=["a", "b", "c"])
    return ps, image


def test_feature_models_on_neighbourhood_means(tmp_path: Path) -> None:
    train, _ = _patches(0, n=150)
    test, _ = _patches(1)
    model = create_model("logreg", patch_size=3).fit(train)
    assert model.input_kind == "patches" and model.card.extra["patch_size"] == 3
    proba = model.predict_proba(test)
    # the same as the pixel model fitted on the neighbourhood means
    plain = create_model("logreg").fit(train.mean_set())
    assert plain.input_kind == "pixels"
    np.testing.assert_array_equal(proba, plain.predict_proba(test.mean_set()))
    # the mean beats the noisy centre pixel
    centre = create_model("logreg").fit(train.centre_set())
    acc = (proba.argmax(1) == test.labels).mean()
    assert acc > (centre.predict(test.centre_set()) == test.labels).mean() and acc > 0.9
    # larger patches are cropped to the model's neighbourhood
    bigger, _ = _patches(1, size=5)
    np.testing.assert_array_equal(model.predict_proba(bigger), proba)
    model.save(tmp_path / "m")
    loaded = Classifier.load(tmp_path / "m")
    assert loaded.input_kind == "patches"
    np.testing.assert_array_equal(loaded.predict_proba(test), proba)


def test_neighbourhood_models_refuse_the_wrong_input() -> None:
    train, _ = _patches(0)
    series = make_toy_set(n_per_class=6)
    with pytest.raises(DataError, match="takes image patches"):
        create_model("rf", n_estimators=3, patch_size=3).fit(series)
    with pytest.raises(ModelError, match="odd"):
        create_model("rf", n_estimators=3, patch_size=2).fit(train)
    model = create_model("logreg", patch_size=3).fit(train)
    with pytest.raises(DataError, match="not pixel series"):
        model.predict_proba(train.mean_set())
    with pytest.raises(DataError, match="expects 3x3 patches"):
        model.predict_proba(train.crop(1))
    with pytest.raises(DataError, match="single pixels"):
        model.predict_proba_pixels(np.zeros((5, 1, 4), np.float32))
    with pytest.raises(DataError, match="patches like the training data"):
        create_model("logreg", patch_size=3).fit(train, train.mean_set())
    pixel = create_model("logreg").fit(train.mean_set())
    with pytest.raises(DataError, match="trained on pixel series"):
        pixel.predict_proba(train)
