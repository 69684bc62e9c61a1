"""Stratified accuracy and area estimators: Olofsson et al. (2014)'s worked example, and
Stehman (2014)'s general estimators checked against a brute-force population."""

from __future__ import annotations

import numpy as np
import pytest

from cropscope.assessment.estimators import estimate_accuracy_and_area
from cropscope.errors import EvaluationError

# Olofsson et al. (2014), Remote Sens. Environ. 148:42-57, section 5 and tables 8-9
OLOFSSON_MATRIX = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
OLOFSSON_PIXELS = [200_000, 150_000, 3_200_000, 6_450_000]
OLOFSSON_CLASSES = ["deforestation", "forest gain", "stable forest", "stable non-forest"]


def _points(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mc, ref = [], []
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            mc += [i] * int(matrix[i, j])
            ref += [j] * int(matrix[i, j])
    return np.array(mc), np.array(ref)


def test_olofsson_worked_example_as_published() -> None:
    mc, ref = _points(OLOFSSON_MATRIX)
    res = estimate_accuracy_and_area(mc, ref, mc, OLOFSSON_PIXELS, OLOFSSON_CLASSES,
                                     pixel_area=0.09)  # 30 m pixels, hectares
    areas = [(round(res.area_ha[c].value), round(res.area_ha[c].ci95))
             for c in OLOFSSON_CLASSES]
    assert areas == [(21_158, 6_158), (11_686, 3_756), (285_770, 15_510), (581_386, 16_282)]
    assert [round(res.users_accuracy[c].value, 2) for c in OLOFSSON_CLASSES] == \
        [0.88, 0.73, 0.93, 0.96]
    assert [round(res.producers_accuracy[c].value, 2) for c in OLOFSSON_CLASSES] == \
        [0.75, 0.85, 0.93, 0.96]
    assert round(res.overall_accuracy.value, 2) == 0.95
    assert res.proportions.sum() == pytest.approx(1.0)
    assert res.total_area_ha == pytest.approx(900_000)
    # the area estimates add up to the map's area
    assert sum(res.area_ha[c].value for c in OLOFSSON_CLASSES) == pytest.approx(900_000)


def test_finite_population_correction_narrows_intervals() -> None:
    mc, ref = _points(OLOFSSON_MATRIX)
    plain = estimate_accuracy_and_area(mc, ref, mc, [80, 100, 400, 700], OLOFSSON_CLASSES)
    fpc = estimate_accuracy_and_area(mc, ref, mc, [80, 100, 400, 700], OLOFSSON_CLASSES,
                                     fpc=True)
    assert fpc.overall_accuracy.value == plain.overall_accuracy.value
    assert fpc.overall_accuracy.se < plain.overall_accuracy.se


def test_stehman_strata_unbiased_over_repeated_samples() -> None:
    """Strata that are not the map classes: over many stratified samples of a known
    population the estimates centre on the true values and the SE matches their spread."""
    rng = np.random.default_rng(0)
    n_pix = 20_000
    strata = rng.integers(0, 3, n_pix)  # e.g. an older map
    mapped = np.where(rng.random(n_pix) < 0.7, strata, rng.integers(0, 3, n_pix)) % 3
    truth = np.where(rng.random(n_pix) < 0.8, mapped, rng.integers(0, 3, n_pix))
    area = rng.uniform(0.5, 1.5, n_pix)  # unequal pixel areas (a geographic grid)
    true_oa = area[mapped == truth].sum() / area.sum()
    true_area1 = area[truth == 1].sum()
    true_ua1 = area[(mapped == 1) & (truth == 1)].sum() / area[mapped == 1].sum()
    big_n = np.bincount(strata, minlength=3)
    s_area = np.bincount(strata, weights=area, minlength=3)
    alloc = [40, 60, 80]
    oa, a1, ua1, se_oa = [], [], [], []
    for _ in range(400):
        pick = np.concatenate([rng.choice(np.flatnonzero(strata == h), alloc[h],
                                          replace=False) for h in range(3)])
        res = estimate_accuracy_and_area(mapped[pick], truth[pick], strata[pick], big_n,
                                         ["a", "b", "c"], pixel_area=area[pick],
                                         stratum_area=s_area, fpc=True, strata="old map")
        oa.append(res.overall_accuracy.value)
        se_oa.append(res.overall_accuracy.se)
        a1.append(res.area_ha["b"].value)
        ua1.append(res.users_accuracy["b"].value)
    assert np.mean(oa) == pytest.approx(true_oa, abs=0.005)
    assert np.mean(a1) == pytest.approx(true_area1, rel=0.01)
    assert np.mean(ua1) == pytest.approx(true_ua1, abs=0.01)
    assert np.mean(se_oa) == pytest.approx(np.std(oa), rel=0.15)


def test_bad_samples_are_refused() -> None:
    mc = np.array([0, 0, 1, 1, 1])
    with pytest.raises(EvaluationError, match="single reference point"):
        estimate_accuracy_and_area(mc, mc, np.array([0, 0, 1, 1, 2]), [10, 10, 10],
                                   ["a", "b"])
    with pytest.raises(EvaluationError, match="no reference point"):
        estimate_accuracy_and_area(mc, mc, mc, [10, 10, 10], ["a", "b"])
    with pytest.raises(EvaluationError, match="more reference points than pixels"):
        estimate_accuracy_and_area(mc, mc, mc, [10, 2], ["a", "b"])
    with pytest.raises(EvaluationError, match="class codes"):
        estimate_accuracy_and_area(mc, mc + 1, mc, [10, 10], ["a", "b"])
