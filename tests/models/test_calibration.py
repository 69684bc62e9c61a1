"""Temperature scaling (cropscope.models.calibration): known miscalibrations are undone."""

import numpy as np
import pytest

from cropscope.models.calibration import fit_logit_scale, fit_temperature, softmax, tempered


def test_fit_logit_scale_recovers_the_scale_of_the_logits() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20_000, 5))
    p = np.exp(2.5 * logits)
    p /= p.sum(axis=1, keepdims=True)
    target = (rng.random((len(p), 1)) > p.cumsum(axis=1)).sum(axis=1)
    assert fit_logit_scale(logits, target) == pytest.approx(2.5, rel=0.05)
    assert fit_logit_scale(logits[:0], target[:0]) == 1.0


def test_fit_temperature_undoes_a_known_miscalibration() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (4000, 5))
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(5, p=p) for p in truth])  # labels drawn from the true odds
    for factor in (3.0, 0.4):  # overconfident, then underconfident
        member = np.exp(factor * logits)
        member /= member.sum(axis=1, keepdims=True)
        t = fit_temperature(member, y)
        assert t == pytest.approx(factor, rel=0.15), (factor, t)
        np.testing.assert_allclose(tempered(member, t), truth, atol=0.05)
        # the arg-max, hence the member's own prediction, is unchanged
        np.testing.assert_array_equal(tempered(member, t).argmax(1), member.argmax(1))


def test_softmax_is_stable_and_normalised() -> None:
    logits = np.array([[1000.0, 1000.0, -1000.0], [0.0, np.log(3.0), -np.inf]])
    p = softmax(logits)
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0], [0.25, 0.75, 0.0]], atol=1e-12)
