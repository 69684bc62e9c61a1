"""Linear discriminant analysis with a shrunk covariance (``lda``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cropscope.errors import DataError, ModelError
from cropscope.models import Classifier, create_model
from cropscope.models._tabular import standardise
from tests.conftest import make_toy_set


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("shrinkage", ["auto", 0.3, None])
def test_lda_probabilities_are_scikit_learns_and_saved_exactly(
        tmp_path: Path, n_classes: int, shrinkage: str | float | None) -> None:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    train = make_toy_set(n_per_class=25, seed=1, n_classes=n_classes, nan_fraction=0.1)
    test = make_toy_set(n_per_class=10, seed=2, n_classes=n_classes)
    model = create_model("lda", shrinkage=shrinkage).fit(train)
    proba = model.predict_proba(test)
    # the same fit straight from scikit-learn on the standardised feature table
    x, _ = model.features(train)
    ref = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage).fit(
        standardise(x, model.mean_, model.scale_), train.labels)
    xt, _ = model.features(test)
    expected = ref.predict_proba(standardise(xt, model.mean_, model.scale_))
    np.testing.assert_allclose(proba, expected, atol=2e-5)
    assert (model.predict(test) == test.labels).mean() >= 0.9
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["lda.npz", "model.json"]
    np.testing.assert_array_equal(Classifier.load(tmp_path / "m").predict_proba(test), proba)


def test_lda_balanced_priors_are_equal_priors_and_favour_the_rare_class() -> None:
    """``priors="balanced"`` is scikit-learn's LDA with equal priors (which also weigh the
    classes equally in the shared covariance), and gives a rare class more probability."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    ts = make_toy_set(n_per_class=30, seed=4)
    ts = ts.subset(np.r_[np.flatnonzero(ts.labels != 1), np.flatnonzero(ts.labels == 1)[:5]])
    empirical = create_model("lda").fit(ts)
    balanced = create_model("lda", priors="balanced").fit(ts)
    x, _ = balanced.features(ts)
    z = standardise(x, balanced.mean_, balanced.scale_)
    ref = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto",
                                     priors=np.full(3, 1 / 3)).fit(z, ts.labels)
    np.testing.assert_allclose(balanced.predict_proba(ts), ref.predict_proba(z), atol=2e-5)
    # series halfway between a common and the rare class: equal priors lean to the rare one
    # (compared on the scores, whose softmax saturates in float32 on this easy toy set)
    mixed = ts.subset(np.flatnonzero(ts.labels == 0)[:5])
    mixed.values[:] = (mixed.values + ts.values[ts.labels == 1]) / 2

    def margin(model: Classifier) -> np.ndarray:
        xm, _ = model.features(mixed)
        scores = standardise(xm, model.mean_, model.scale_) @ model.coef_.T + model.intercept_
        return scores[:, 1] - scores[:, 0]

    assert (margin(balanced) > margin(empirical)).all()


def test_lda_refuses_what_it_cannot_fit() -> None:
    train = make_toy_set(n_per_class=6)
    for bad in ("ledoit", 1.5, -0.1, True):
        with pytest.raises(ModelError, match="shrinkage"):
            create_model("lda", shrinkage=bad).fit(train)
    with pytest.raises(ModelError, match="priors"):
        create_model("lda", priors="uniform").fit(train)
    lonely = train.subset(np.r_[np.flatnonzero(train.labels != 2), np.flatnonzero(
        train.labels == 2)[:1]])
    with pytest.raises(ModelError, match="at least 2 training samples"):
        create_model("lda").fit(lonely)
    one_class = train.subset(np.flatnonzero(train.labels == 0))
    with pytest.raises(DataError, match="two classes"):
        create_model("lda").fit(one_class)


def test_lda_on_constant_and_gappy_columns_stays_finite() -> None:
    """A band without spread (standardised to zeros) and gaps (the mean) keep every
    probability finite."""
    train = make_toy_set(n_per_class=15, seed=5, nan_fraction=0.3)
    train.values[:, :, 0] = 0.25  # band B4 constant
    proba = create_model("lda").fit(train).predict_proba(train)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
