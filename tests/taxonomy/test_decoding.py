"""Independent and consistent decoding of per-level probabilities."""

from __future__ import annotations

import numpy as np

from cropscope.taxonomy import decode, decode_consistent, decode_independent, inconsistent
from tests.taxonomy.test_tree import small


def random_levels(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.dirichlet(np.ones(k) * 0.3, size=n) for k in small().sizes]


def test_consistent_decoding_never_contradicts_the_tree() -> None:
    tax = small()
    probas = random_levels(2000, 0)
    ind = decode_independent(tax, probas)
    con = decode_consistent(tax, probas)
    assert inconsistent(tax, ind).any(), "random probabilities should produce contradictions"
    assert not inconsistent(tax, con).any()


def test_consistent_decoding_is_the_best_path_by_brute_force() -> None:
    tax = small()
    probas = random_levels(200, 1)
    con = decode(tax, probas, "consistent")
    table = tax.ancestor_table()
    for i in range(200):
        scores = [sum(np.log(probas[k][i, path[k]]) for k in range(3)) for path in table]
        assert con[i].tolist() == table[int(np.argmax(scores))].tolist()


def test_agreeing_levels_decode_alike() -> None:
    tax = small()
    fine = np.eye(4)[[0, 2, 3]] * 0.9 + 0.025
    probas = [tax.rollup_proba(fine, -1, k) for k in range(3)]
    assert (decode_independent(tax, probas) == decode_consistent(tax, probas)).all()
