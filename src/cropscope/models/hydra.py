"""Hydra: competing convolutional kernels, counted (Dempster, Schmidt & Webb, DMKD 2023).

Hydra sits between ROCKET and dictionary methods. Random kernels are arranged in ``g``
groups of ``k``; at every time step the kernels of a group *compete*: the one with the
largest response wins the step. Counting, per series, how often and how strongly each kernel
wins gives features that describe which local shapes dominate a series, a view that the
ROCKET family (which thresholds every kernel on its own) does not have. The paper's
combination "MultiRocket-Hydra" (both feature sets side by side, one ridge head) is among the
most accurate convolution methods on the UCR archive; here it is the ``minirocket`` model
with ``hydra=true`` (see :mod:`cropscope.models.rocket`).

The transform, written from the paper's description:

- ``k`` kernels x ``g`` groups of length 9, weights drawn from N(0, 1), made to sum to 0 and
  scaled so that their absolute values sum to 1; a new draw for every dilation.
- Dilations ``2 ** 0 .. 2 ** floor(log2((T - 1) / 8))``, zero padding that keeps the length
  (``4 * dilation`` each side).
- Half of the groups read the series, the other half its first differences (length
  ``T - 1``).
- Per group and time step: the kernel with the largest response adds that response to its
  *soft count*; the kernel with the smallest response adds one to its *hard count*.
- Several bands (as in the multivariate version): each group reads a random subset of the
  bands (``floor(2 ** U(0, log2(min(C, 9) + 1)))`` of them, like the ROCKET transform) and a
  kernel has its own 9 weights per band read, normalised together.

Features: ``dilations x g x 2k`` columns (3,072 for the UCR Crop series with the defaults
``k = 8``, ``g = 64``), float32. Counts are non-negative and often zero, so the classifier
scales them as the paper does: ``sqrt`` first, then the training mean and standard deviation,
and a zero count stays exactly zero (:func:`sparse_scale`).

The convolution of one chunk of series is one matrix product: the 9 shifted copies of every
band read by the representation ``[n, T, C * 9]`` times the kernels' weights ``[C * 9, g/2 *
k]``. The winners come from ``argmax`` / ``argmin`` over the ``k`` kernels and the counts from
one ``bincount`` over ``(series, group, kernel)``. Chunks run on worker threads like the ROCKET
transform (numpy releases the GIL; the matrix product is a BLAS call, so give BLAS one thread
when several workers run: :func:`cropscope.threads.set_threads` does).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cropscope.errors import DataError, ModelError
from cropscope.threads import map_chunks

__all__ = ["HydraTransform", "sparse_scale"]

_LENGTH = 9
#: elements of the largest [n, T, g/2 * k] convolution block of one chunk (about 16 MiB)
_CHUNK_ELEMENTS = 1 << 22


def hydra_dilations(n_times: int) -> np.ndarray:
    """``2 ** 0 .. 2 ** floor(log2((T - 1) / 8))`` (dilation 1 alone for short series)."""
    top = math.log2((n_times - 1) / (_LENGTH - 1)) if n_times > _LENGTH else 0.0
    return (2 ** np.arange(int(max(top, 0.0)) + 1)).astype(np.int64)


def sparse_scale(
    counts: np.ndarray, mean: np.ndarray | None = None, scale: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale Hydra counts in place: ``sqrt``, minus ``mean``, over ``scale``, zero counts kept
    at 0. Without ``mean``/``scale`` they are computed from ``counts`` (training). Returns the
    scaled array and the two statistics."""
    np.maximum(counts, 0.0, out=counts)
    np.sqrt(counts, out=counts)
    zero = counts == 0
    if mean is None or scale is None:
        mean = counts.mean(axis=0, dtype=np.float64).astype(np.float32)
        std = counts.std(axis=0, dtype=np.float64)
        scale = np.where(std > 1e-8, std, 1.0).astype(np.float32)
    counts -= mean
    counts /= scale
    counts[zero] = 0.0
    return counts, mean, scale


class HydraTransform:
    """The Hydra transform of series ``[N, T, C]`` (see the module).

    ``fit`` only needs the series' shape: kernels and band subsets are drawn from
    ``numpy.random.default_rng(seed)``, so the same seed and shape give the same transform.
    """

    def __init__(self, k: int = 8, g: int = 64, seed: int = 0) -> None:
        for name, value, low in (("hydra_k", k, 2), ("hydra_g", g, 2)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ModelError(f"{name} must be an integer >= {low}, got {value!r}")
        if g % 2:
            raise ModelError(f"hydra_g must be even (half the groups read differences), got {g}")
        self.k, self.g, self.seed = int(k), int(g), seed
        self.n_times: int | None = None
        self.n_bands: int | None = None
        self.dilations = np.zeros(0, dtype=np.int64)
        #: [D, 2, C * 9, g/2 * k] float32: weights per dilation and representation; the rows
        #: of a band a group does not read are zero
        self.weights = np.zeros((0, 2, 0, 0), dtype=np.float32)

    # ------------------------------------------------------------------ fit / transform
    def fit(self, x: np.ndarray) -> HydraTransform:
        """Draw the kernels for series shaped like ``x`` (``[N, T, C]``)."""
        x = self._check(x, fitted=False)
        n_times, n_bands = x.shape[1], x.shape[2]
        rng = np.random.default_rng(self.seed)
        half = self.g // 2
        dilations = hydra_dilations(n_times)
        max_bands = min(n_bands, 9)
        weights = np.zeros((len(dilations), 2, n_bands, _LENGTH, half, self.k), dtype=np.float32)
        for i in range(len(dilations)):
            for rep in range(2):
                w = rng.standard_normal((half, self.k, n_bands, _LENGTH))
                reads = np.zeros((half, n_bands), dtype=bool)
                for group in range(half):
                    n_pick = int(2.0 ** rng.uniform(0.0, math.log2(max_bands + 1)))
                    n_pick = min(max(n_pick, 1), max_bands)
                    reads[group, rng.choice(n_bands, n_pick, replace=False)] = True
                w *= reads[:, None, :, None]
                picked = reads.sum(axis=1)[:, None]  # [half, 1] taps = picked * 9
                w -= w.sum(axis=(2, 3))[..., None, None] / (picked * _LENGTH)[..., None, None]
                w *= reads[:, None, :, None]  # the mean is taken over the taps read only
                w /= np.abs(w).sum(axis=(2, 3))[..., None, None]
                weights[i, rep] = w.transpose(2, 3, 0, 1)
        self.dilations = dilations
        self.weights = weights.reshape(len(dilations), 2, n_bands * _LENGTH, half * self.k)
        self.n_times, self.n_bands = n_times, n_bands
        return self

    @property
    def n_features(self) -> int:
        self._require_fitted()
        return len(self.dilations) * self.g * 2 * self.k

    def _require_fitted(self) -> None:
        if self.n_times is None:
            raise ModelError("the Hydra transform is not fitted yet")

    def _check(self, x: np.ndarray, fitted: bool = True) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3:
            raise DataError(f"series must be [N, T, C], got shape {x.shape}")
        if x.shape[1] < 2 or x.shape[2] < 1:
            raise DataError(f"Hydra needs at least 2 time steps and one band, got {x.shape}")
        if fitted and (x.shape[1] != self.n_times or x.shape[2] != self.n_bands):
            raise DataError(
                f"the Hydra transform was fitted on series of {self.n_times} steps x "
                f"{self.n_bands} bands, got {x.shape[1:]}"
            )
        if not np.isfinite(x).all():
            raise DataError("the Hydra transform needs gap-free series (fill NaN gaps first)")
        return x

    def _counts(self, series: np.ndarray, w: np.ndarray, d: int) -> np.ndarray:
        """Soft-max and hard-min counts ``[n, g/2, 2k]`` of one representation."""
        n, n_times, n_bands = series.shape
        half, k = self.g // 2, self.k
        pad = 4 * d
        padded = np.zeros((n, n_times + 2 * pad, n_bands), dtype=np.float32)
        padded[:, pad : pad + n_times] = series
        # the 9 shifted copies: [n, T, C, 9] (band-major rows, as the weights)
        taps = np.stack([padded[:, j * d : j * d + n_times] for j in range(_LENGTH)], axis=3)
        conv = (taps.reshape(n, n_times, n_bands * _LENGTH) @ w).reshape(n, n_times, half, k)
        best = conv.argmax(axis=3)
        worst = conv.argmin(axis=3)
        top = np.take_along_axis(conv, best[..., None], axis=3)[..., 0]
        base = (np.arange(n)[:, None, None] * half + np.arange(half)[None, None, :]) * k
        size = n * half * k
        soft = np.bincount((base + best).ravel(), weights=top.ravel(), minlength=size)
        hard = np.bincount((base + worst).ravel(), minlength=size)
        return np.concatenate(
            [soft.reshape(n, half, k), hard.reshape(n, half, k)], axis=2
        ).astype(np.float32)

    def _transform_chunk(self, x: np.ndarray) -> np.ndarray:
        blocks = []
        diff = np.diff(x, axis=1)
        for i, d in enumerate(self.dilations.tolist()):
            for rep, series in enumerate((x, diff)):
                blocks.append(self._counts(series, self.weights[i, rep], d).reshape(len(x), -1))
        return np.concatenate(blocks, axis=1)

    def transform(self, x: np.ndarray, n_jobs: int | None = None) -> np.ndarray:
        """Counts ``float32 [N, n_features]`` (unscaled) of gap-free series ``[N, T, C]``,
        ordered by dilation, representation, group, then the ``k`` soft and ``k`` hard
        counts. The result does not depend on ``n_jobs`` nor on the batching."""
        self._require_fitted()
        x = self._check(x)
        out = np.empty((x.shape[0], self.n_features), dtype=np.float32)

        def run(lo: int, hi: int) -> None:
            out[lo:hi] = self._transform_chunk(x[lo:hi])

        map_chunks(run, x.shape[0], _CHUNK_ELEMENTS // (x.shape[1] * self.g * self.k), n_jobs)
        return out

    # ------------------------------------------------------------------ arrays
    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The fitted kernels as plain arrays (for ``np.savez``)."""
        self._require_fitted()
        return {f"{prefix}shape": np.array([self.n_times, self.n_bands, self.k, self.g]),
                f"{prefix}dilations": self.dilations, f"{prefix}weights": self.weights}  # fmt: skip

    def load_arrays(self, data: Any, prefix: str = "") -> HydraTransform:
        """Restore what :meth:`to_arrays` wrote (checked: a damaged file is a ModelError)."""
        try:
            n_times, n_bands, k, g = (int(v) for v in np.asarray(data[f"{prefix}shape"]))
            dilations = np.asarray(data[f"{prefix}dilations"], dtype=np.int64)
            weights = np.asarray(data[f"{prefix}weights"], dtype=np.float32)
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"not a saved Hydra transform: {exc}") from None
        if (
            (k, g) != (self.k, self.g)
            or n_times < 2
            or n_bands < 1
            or not np.array_equal(dilations, hydra_dilations(n_times))
            or weights.shape != (len(dilations), 2, n_bands * _LENGTH, g // 2 * k)
            or not np.isfinite(weights).all()
        ):
            raise ModelError("not a saved Hydra transform: inconsistent arrays")
        self.n_times, self.n_bands = n_times, n_bands
        self.dilations, self.weights = dilations, weights
        return self
