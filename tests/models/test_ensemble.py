from __future__ import annotations

import numpy as np
import pytest

from cropscope.errors import ModelError
from cropscope.models import create_model
from tests.conftest import make_toy_set

MEMBERS = [{"model": "rf", "config": {"n_estimators": 10}},
           {"model": "lightgbm", "config": {"n_estimators": 20, "min_child_samples": 3}}]


def test_probabilities_are_the_weighted_mean_of_members() -> None:
    train, test = make_toy_set(seed=1), make_toy_set(n_per_class=5, seed=2)
    model = create_model("ensemble", members=MEMBERS, weights=[3, 1]).fit(train)
    rf, lgb = model.members_
    expected = 0.75 * rf.predict_proba(test) + 0.25 * lgb.predict_proba(test)
    np.testing.assert_allclose(model.predict_proba(test), expected, atol=1e-6)


def test_members_get_distinct_seeds() -> None:
    model = create_model("ensemble", members=["rf", "rf"], seed=7)
    assert [model._member(i).config["seed"] for i in range(2)] == [7, 8]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"members": []}, "non-empty"),
        ({"members": [{"model": "ensemble"}]}, "cannot include another ensemble"),
        ({"members": [{"model": "rf", "config": {"n_estimators": 0}}]}, "n_estimators"),
        ({"members": ["rf", {"model": "rf", "config": [1]}]}, "member 1: .config. must be"),
        ({"members": [{"model": "nope"}]}, "unknown model"),
        ({"members": MEMBERS, "weights": [1]}, "weights"),
    ],
)
def test_bad_configs(config: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        create_model("ensemble", **config)
