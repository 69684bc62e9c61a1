"""Turning per-level class probabilities into per-level predictions.

- **independent**: the argmax of every level on its own (may contradict itself: a "wheat"
  under "grassland");
- **consistent**: the most probable root-to-leaf path, maximising the sum over levels of
  the log-probability of the path's node on that level. Always a valid path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cropscope.errors import DataError
from cropscope.taxonomy.tree import Taxonomy

__all__ = [
    "DECODINGS",
    "decode",
    "decode_consistent",
    "decode_independent",
    "inconsistent",
    "level_probas_from_leaf",
]

DECODINGS = ("consistent", "independent")
_EPS = 1e-12


def _check(taxonomy: Taxonomy, probas: Sequence[np.ndarray]) -> list[np.ndarray]:
    if len(probas) != taxonomy.n_levels:
        raise DataError(f"{len(probas)} probability arrays for {taxonomy.n_levels} levels")
    out = []
    n = None
    for k, p in enumerate(probas):
        p = np.asarray(p, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != taxonomy.n_classes(k):
            raise DataError(
                f"level {taxonomy.levels[k]!r}: probabilities must be "
                f"[N, {taxonomy.n_classes(k)}], got {p.shape}"
            )
        if n is not None and p.shape[0] != n:
            raise DataError("per-level probabilities disagree on the number of samples")
        n = p.shape[0]
        out.append(p)
    return out


def decode_independent(taxonomy: Taxonomy, probas: Sequence[np.ndarray]) -> np.ndarray:
    """``[N, L]``: the argmax of each level."""
    ps = _check(taxonomy, probas)
    return np.stack([p.argmax(axis=1) for p in ps], axis=1).astype(np.int64)


def decode_consistent(taxonomy: Taxonomy, probas: Sequence[np.ndarray]) -> np.ndarray:
    """``[N, L]``: the root-to-leaf path with the highest summed log-probability.

    Needs a complete tree (every leaf on the finest level; see :meth:`Taxonomy.complete`),
    so that all paths have one node per level and their scores are comparable.
    """
    if not taxonomy.is_complete:
        raise DataError("consistent decoding needs a complete taxonomy (Taxonomy.complete())")
    ps = _check(taxonomy, probas)
    table = taxonomy.ancestor_table()  # [K_fine, L]
    score = np.zeros((ps[0].shape[0], table.shape[0]), dtype=np.float64)
    for k, p in enumerate(ps):
        score += np.log(np.clip(p, _EPS, None))[:, table[:, k]]
    return table[score.argmax(axis=1)]


def decode(taxonomy: Taxonomy, probas: Sequence[np.ndarray],
           method: str = "consistent") -> np.ndarray:
    """Per-level predictions ``[N, L]`` by ``method`` (``consistent`` or ``independent``)."""
    if method == "consistent":
        return decode_consistent(taxonomy, probas)
    if method == "independent":
        return decode_independent(taxonomy, probas)
    raise DataError(f"unknown decoding {method!r}; choose from {list(DECODINGS)}")


def inconsistent(taxonomy: Taxonomy, predictions: np.ndarray) -> np.ndarray:
    """Boolean ``[N]``: True where some level's prediction is not a child of the one above."""
    return ~taxonomy.check_consistent(predictions)


def level_probas_from_leaf(taxonomy: Taxonomy, proba: np.ndarray) -> list[np.ndarray]:
    """Finest-level probabilities ``[N, K_fine]`` rolled up to every level (coarse to fine);
    what a flat model offers for hierarchical evaluation."""
    last = taxonomy.n_levels - 1
    return [taxonomy.rollup_proba(proba, last, k) for k in range(taxonomy.n_levels)]
