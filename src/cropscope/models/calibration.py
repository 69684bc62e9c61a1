"""Temperature scaling: one scalar that fixes how confident a model's class scores are.

A classifier's scores can rank the classes well and still be over- or under-confident: a
network's softmax is often too sharp, a forest's vote fractions too flat, a ridge
classifier's decision values have no probability scale at all. Temperature scaling (Guo et
al. 2017) fits one number on held-out predictions and leaves every arg-max, hence every
prediction, unchanged:

- :func:`fit_logit_scale` — the factor ``s > 0`` for which ``softmax(s * logits)`` has the
  least mean log-loss (``logits [N, K]``, any real scores; the ridge head of ``minirocket``);
- :func:`fit_temperature` / :func:`tempered` — the same on probabilities ``[N, K]``: ``T`` is
  fitted for ``softmax(log(p) / T)``, i.e. ``p ** (1 / T)`` renormalised (the members of the
  ``stacking`` model's ``meta="temperature"``); probabilities below ``1e-7`` count as
  ``1e-7`` so that a member's exact zeros have a finite logarithm.

Both searches are scipy's bounded scalar minimisation on the logarithm of the factor.
Computation is float64; ``y`` holds class indices (columns), not class codes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_logit_scale", "fit_temperature", "softmax", "tempered"]

#: probabilities are floored here before their logarithm (a member's exact zeros)
PROBA_FLOOR = 1e-7
#: the temperature range of :func:`fit_temperature`
TEMPERATURE_RANGE = (1 / 20, 20.0)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``logits [N, K]`` (max-subtracted, so large scores do not overflow)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_logit_scale(logits: np.ndarray, target: np.ndarray,
                    log_bounds: tuple[float, float] = (-7.0, 7.0)) -> float:
    """The ``s > 0`` for which ``softmax(s * logits)`` has the least mean log-loss on the class
    indices ``target [N]``, searched on ``log s`` within ``log_bounds``; 1.0 when there is
    nothing to fit (no rows, non-finite scores) or the search fails."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[0] == 0 or not np.isfinite(logits).all():
        return 1.0
    rows = np.arange(len(target))

    def loss(log_s: float) -> float:
        scaled = np.exp(log_s) * logits
        scaled -= scaled.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scaled).sum(axis=1))
        return float(np.mean(log_norm - scaled[rows, target]))

    best = minimize_scalar(loss, bounds=log_bounds, method="bounded")
    return float(np.exp(best.x)) if best.success else 1.0


def _log_proba(proba: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(proba, dtype=np.float64), PROBA_FLOOR))


def tempered(proba: np.ndarray, temperature: float) -> np.ndarray:
    """``proba [N, K]`` raised to ``1 / temperature`` and renormalised. ``T > 1`` flattens,
    ``T < 1`` sharpens; the arg-max is unchanged."""
    return softmax(_log_proba(proba) / temperature)


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> float:
    """The temperature in ``TEMPERATURE_RANGE`` with the least log-loss of
    ``tempered(proba, T)`` on the class indices ``y [N]``."""
    lo, hi = TEMPERATURE_RANGE
    # tempered(p, T) = softmax(log(p) / T): a logit scale of 1 / T
    return 1.0 / fit_logit_scale(_log_proba(proba), y, (-np.log(hi), -np.log(lo)))
