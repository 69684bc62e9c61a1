"""MiniRocket / MultiRocket: random-kernel time-series features with a linear head.

The ROCKET family turns every series into many pooled responses of fixed convolution
kernels and classifies them with a linear model; on the UCR archive it is among the most
accurate classifiers for the cost. Two variants are implemented here, written from the
papers' descriptions:

- **MiniRocket** (Dempster, Schmidt & Webb, KDD 2021). 84 kernels of length 9 whose weights
  are -1 except three weights of 2 (every choice of 3 positions out of 9: the weights sum to
  zero). Dilations are spaced exponentially from 1 to ``(T - 1) / 8`` (at most
  ``max_dilations`` distinct draws, rounded down and merged; the number of biases of a
  dilation is proportional to how many draws it merged). Each (dilation, kernel) pair takes
  its biases from quantiles of its own convolution output on one random training series, at
  the low-discrepancy quantiles ``(i * golden ratio) mod 1``. Half of the pairs, alternating
  with kernel and dilation, are zero-padded ("same" length output), the others pool only the
  output positions where the kernel lies inside the series. Pooling: the proportion of
  positive values (PPV) of ``conv - bias``.
- **MultiRocket** (Tan, Dempster, Bergmeir & Webb, DMKD 2022). The same kernels applied to
  the series and, with their own dilations and biases, to its first differences, with four
  pooling operators per bias: PPV, the mean of the positive values (MPV), the mean index of
  the positive values (MIPV, as a fraction of the output length; -1 without any positive
  value) and the longest stretch of positive values (LSPV, a fraction of the output length).

Multivariate series (several bands) follow multivariate MiniRocket: each (dilation, kernel)
pair sums its convolution over a random subset of the bands (``floor(2 ** U(0, log2(min(C,
9) + 1)))`` bands, chosen without replacement); since the convolution is linear, this is the
convolution of the sum of those bands. With one band every pair uses it.

Why not aeon or sktime: both implement these transforms with numba, which (with llvmlite
and their other dependencies) would have to go through the torch-pinned constraints file and
could never be a core import ("keep the core import light"). The transform below is plain
numpy, vectorised over kernels, biases and samples: the convolution with a {-1, 2} kernel is
``3 * (sum of the 3 selected shifted series) - (sum of all 9 shifted series)``, so one
dilation costs nine shifted views of the (band-combined) series, and pooling is a few passes
over a ``[kernels, biases, samples, time]`` block. Samples are processed in chunks, on
:func:`cropscope.threads.current_threads` worker threads (numpy releases the GIL in these
loops; the transform itself makes no BLAS calls, so the thread count is not multiplied).

The classifier (:class:`MiniRocket`, registered as ``minirocket``) fills gaps and
standardises the bands like the deep models (linear interpolation in time, per-band
training mean and standard deviation kept in the model card, a band without any valid value
at the band mean), fits the transform on the training series (deterministic given ``seed``),
standardises the features with their training mean and standard deviation and fits the head:

- ``head="ridge"`` (default, as in both papers): scikit-learn ``RidgeClassifierCV`` with
  ``alphas`` chosen by efficient leave-one-out cross-validation. ``predict_proba`` is the
  softmax of the ridge decision function times one temperature, fitted (least log-loss) on
  the leave-one-out decision values that the penalty search computes anyway: its argmax is
  the ridge prediction, and its values are usable as probabilities (in a soft vote, say;
  the plain softmax was nearly flat with many classes).
- ``head="logistic"``: multinomial logistic regression (L2, ``C``), calibrated probabilities
  but a slower fit on many features.

Everything learnt is saved in one ``.npz`` file of plain arrays, never pickled.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError, ModelError
from cropscope.features.gapfill import interpolate_gaps_array, time_axis_days
from cropscope.models.base import Classifier
from cropscope.models.calibration import fit_logit_scale, softmax
from cropscope.models.hydra import HydraTransform, sparse_scale
from cropscope.threads import current_threads, map_chunks

__all__ = ["KERNEL_INDICES", "MiniRocket", "RocketTransform"]

_WEIGHTS = "minirocket.npz"
#: positions of the three weights of 2 in each of the 84 kernels of length 9
KERNEL_INDICES = np.array(list(combinations(range(9), 3)), dtype=np.intp)
_N_KERNELS = len(KERNEL_INDICES)
_GOLDEN = (1.0 + math.sqrt(5.0)) / 2.0
#: pooling operators per variant, in the order of the feature columns
POOLS = {"minirocket": ("ppv",), "multirocket": ("ppv", "mpv", "mipv", "lspv")}
#: default number of features per variant (both papers' defaults)
DEFAULT_FEATURES = {"minirocket": 10_000, "multirocket": 50_000}
#: elements of the largest [kernels, biases, samples] block of one chunk (about 1 MiB)
_CHUNK_ELEMENTS = 1 << 18
#: samples per prediction batch (bounds the feature matrix held at once)
_PREDICT_BATCH = 4096


def _dilations(n_times: int, per_kernel: int, max_dilations: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct dilations (exponentially spaced up to ``(T - 1) / 8``) and the number of
    biases per kernel at each; the counts sum to ``per_kernel``."""
    n_draws = max(1, min(per_kernel, max_dilations))
    max_exponent = math.log2((n_times - 1) / 8) if n_times > 9 else 0.0
    draws = np.floor(2.0 ** np.linspace(0.0, max_exponent, n_draws)).astype(np.int64)
    dilations, counts = np.unique(draws, return_counts=True)
    per = (counts * per_kernel // n_draws).astype(np.int64)
    i = 0
    while per.sum() < per_kernel:  # the remainder goes to the smallest dilations first
        per[i] += 1
        i = (i + 1) % len(per)
    return dilations, per


def _quantiles(n: int) -> np.ndarray:
    """The low-discrepancy quantiles ``(i * golden ratio) mod 1`` for ``i = 1..n``."""
    return (np.arange(1, n + 1, dtype=np.float64) * _GOLDEN) % 1.0


def _shifted(y: np.ndarray, dilation: int) -> np.ndarray:
    """The nine dilated shifts of ``y`` (``[..., T]``, zero-padded): ``[9, ..., T]``."""
    n_times = y.shape[-1]
    pad = 4 * dilation
    buf = np.zeros((*y.shape[:-1], n_times + 2 * pad), dtype=np.float32)
    buf[..., pad : pad + n_times] = y
    return np.stack([buf[..., p * dilation : p * dilation + n_times] for p in range(9)])


def _kernel_outputs(shifted: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Convolution outputs ``[84, ..., T]`` of the 84 kernels; kernel ``k`` reads the
    combined series ``rows[k]`` of ``shifted`` (``[9, U, ..., T]``).

    With weights -1 and three 2s: ``conv = 3 * (three selected shifts) - (all nine)``."""
    total = shifted.sum(axis=0)[rows]
    sel = (shifted[KERNEL_INDICES[:, 0], rows] + shifted[KERNEL_INDICES[:, 1], rows]
           + shifted[KERNEL_INDICES[:, 2], rows])  # fmt: skip
    sel *= 3.0
    sel -= total
    return sel


def _combine(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Band sums ``[U, N, T]`` of ``x`` (``[N, T, C]``) with 0/1 ``weights`` ``[U, C]``
    (elementwise, no BLAS)."""
    out = np.zeros((weights.shape[0], x.shape[0], x.shape[1]), dtype=np.float32)
    for c in range(x.shape[2]):
        used = np.flatnonzero(weights[:, c])
        if used.size:
            out[used] += x[None, :, :, c]
    return out


def _pool(conv: np.ndarray, biases: np.ndarray, pools: tuple[str, ...]) -> list[np.ndarray]:
    """Pooled values ``[k, f, n]`` of ``z = conv - bias`` per operator, for time-major
    convolution outputs ``conv`` (``[L, k, n]``) and ``biases`` ``[k, f]``.

    One pass over time on ``[k, f, n]`` blocks (small enough to stay in cache), without
    materialising ``z`` for all steps at once: the sum of the positive values is the sum of
    ``max(z, 0)``; the sum of the positive steps' indices is ``L * count - sum_t count_t``
    (``count_t``: positives up to step t); the current run of positives is
    ``(run + 1) * positive``."""
    length, k, n = conv.shape
    bias = biases[:, :, None]
    shape = (k, biases.shape[1], n)
    need = set(pools)
    count = np.zeros(shape, dtype=np.float32)
    positive = np.empty(shape, dtype=bool)
    z = np.empty(shape, dtype=np.float32) if need - {"ppv"} else None
    total = np.zeros(shape, dtype=np.float32) if "mpv" in need else None
    counts = np.zeros(shape, dtype=np.float32) if "mipv" in need else None
    run = np.zeros(shape, dtype=np.float32) if "lspv" in need else None
    longest = np.zeros(shape, dtype=np.float32) if "lspv" in need else None
    for t in range(length):
        step = conv[t][:, None, :]
        if z is None:
            np.greater(step, bias, out=positive)
        else:
            np.subtract(step, bias, out=z)
            np.greater(z, 0, out=positive)
        count += positive
        if total is not None and z is not None:
            np.maximum(z, 0, out=z)
            total += z
        if counts is not None:
            counts += count
        if run is not None and longest is not None:
            run += 1
            run *= positive
            np.maximum(longest, run, out=longest)
    out = []
    some = count > 0
    denominator = np.maximum(count, 1)
    for name in pools:
        if name == "ppv":
            out.append(count / np.float32(length))
        elif name == "mpv" and total is not None:
            out.append(np.where(some, total / denominator, np.float32(0)))
        elif name == "mipv" and counts is not None:
            mean_index = (np.float32(length) * count - counts) / denominator
            out.append(np.where(some, mean_index / np.float32(length), np.float32(-1)))
        elif name == "lspv" and longest is not None:
            out.append(longest / np.float32(length))
        else:  # pragma: no cover - checked by RocketTransform
            raise ModelError(f"unknown pooling operator {name!r}")
    return out


@dataclass
class _Representation:
    """The fitted kernels of one input representation (the series, or its differences)."""

    n_times: int
    dilations: np.ndarray  # [D] int64
    per_dilation: np.ndarray  # [D] int64: biases per kernel at each dilation
    channels: np.ndarray  # [D, 84, C] bool: the bands each (dilation, kernel) sums
    biases: np.ndarray  # [sum_d 84 * per_dilation[d]] float32, (dilation, kernel, bias) order

    def __post_init__(self) -> None:
        # distinct band subsets per dilation and which one each kernel reads
        self._unique = [np.unique(ch, axis=0, return_inverse=True) for ch in self.channels]
        self._offsets = np.concatenate([[0], np.cumsum(_N_KERNELS * self.per_dilation)])

    @property
    def n_biases(self) -> int:
        return int(self._offsets[-1])

    def padded(self, index: int) -> np.ndarray:
        """Which kernels are zero-padded at dilation number ``index`` (alternating)."""
        d = int(self.dilations[index])
        if self.n_times - 8 * d < 1:  # too short for any position inside the series
            return np.ones(_N_KERNELS, dtype=bool)
        return (np.arange(_N_KERNELS) + index) % 2 == 0

    def dilation_biases(self, index: int) -> np.ndarray:
        """Biases ``[84, f]`` of dilation number ``index``."""
        lo, hi = self._offsets[index], self._offsets[index + 1]
        return self.biases[lo:hi].reshape(_N_KERNELS, int(self.per_dilation[index]))

    def transform(self, x: np.ndarray, pools: tuple[str, ...]) -> np.ndarray:
        """Features ``[N, n_biases * len(pools)]`` of ``x`` (``[N, T, C]``), ordered by
        dilation, kernel, bias, pooling operator."""
        n = x.shape[0]
        n_pools = len(pools)
        out = np.empty((n, self.n_biases * n_pools), dtype=np.float32)
        for i, d in enumerate(self.dilations.tolist()):
            unique, rows = self._unique[i]
            conv = _kernel_outputs(_shifted(_combine(x, unique), d), rows.ravel())
            biases = self.dilation_biases(i)
            f = biases.shape[1]
            block = np.empty((n, _N_KERNELS, f, n_pools), dtype=np.float32)
            padded = self.padded(i)
            for keep, window in (
                (padded, slice(None)),
                (~padded, slice(4 * d, self.n_times - 4 * d)),
            ):
                ks = np.flatnonzero(keep)
                if ks.size == 0:
                    continue
                steps = np.ascontiguousarray(conv[ks][:, :, window].transpose(2, 0, 1))
                for p, values in enumerate(_pool(steps, biases[ks], pools)):
                    # two advanced indices apart: the target's axes are [k, n, f]
                    block[:, ks, :, p] = values.transpose(0, 2, 1)
            lo = int(self._offsets[i]) * n_pools
            out[:, lo : lo + block[0].size] = block.reshape(n, -1)
        return out


class RocketTransform:
    """The MiniRocket or MultiRocket transform of series ``[N, T, C]`` (see the module).

    ``n_features`` is rounded down to a multiple of 84 kernels x the pooling operators x the
    representations (84 for MiniRocket, 672 for MultiRocket). ``fit`` draws everything from
    ``numpy.random.default_rng(seed)``: the same seed and data give the same transform.
    """

    def __init__(
        self,
        variant: str = "minirocket",
        n_features: int | None = None,
        max_dilations: int = 32,
        seed: int = 0,
    ) -> None:
        if variant not in POOLS:
            raise ModelError(f"variant must be one of {sorted(POOLS)}, got {variant!r}")
        self.variant = variant
        self.pools = POOLS[variant]
        self.n_reps = 2 if variant == "multirocket" else 1
        n = DEFAULT_FEATURES[variant] if n_features is None else n_features
        minimum = _N_KERNELS * len(self.pools) * self.n_reps
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < minimum:
            raise ModelError(
                f"n_features for {variant} must be an integer >= {minimum} "
                f"(84 kernels x pooling operators x representations), got {n!r}"
            )
        if (
            isinstance(max_dilations, bool)
            or not isinstance(max_dilations, int)
            or max_dilations < 1
        ):
            raise ModelError(f"max_dilations must be a positive integer, got {max_dilations!r}")
        self.n_features_requested = int(n)
        self.max_dilations = max_dilations
        self.seed = seed
        self.reps: list[_Representation] = []
        self.n_bands: int | None = None

    # ------------------------------------------------------------------ fit / transform
    def _representations(self, x: np.ndarray) -> list[np.ndarray]:
        reps = [x]
        if self.n_reps == 2:
            reps.append(np.diff(x, axis=1))
        return reps

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3:
            raise DataError(f"series must be [N, T, C], got shape {x.shape}")
        if x.shape[1] < 1 + (self.n_reps - 1) or x.shape[2] < 1:
            raise DataError(
                f"{self.variant} needs at least {self.n_reps} time step(s) and one "
                f"band, got shape {x.shape}"
            )
        if not np.isfinite(x).all():
            raise DataError("the ROCKET transform needs gap-free series (fill NaN gaps first)")
        return x

    def fit(self, x: np.ndarray) -> RocketTransform:
        """Draw dilations, band subsets and biases from the training series ``[N, T, C]``."""
        x = self._check(x)
        if x.shape[0] == 0:
            raise DataError("cannot fit the ROCKET transform on zero series")
        rng = np.random.default_rng(self.seed)
        n_bands = x.shape[2]
        per_rep = self.n_features_requested // (len(self.pools) * self.n_reps)
        per_kernel = per_rep // _N_KERNELS
        max_bands = min(n_bands, 9)
        self.reps = []
        for series in self._representations(x):
            n_times = series.shape[1]
            dilations, per_dilation = _dilations(n_times, per_kernel, self.max_dilations)
            quantiles = _quantiles(_N_KERNELS * per_kernel)
            channels = np.zeros((len(dilations), _N_KERNELS, n_bands), dtype=bool)
            biases = []
            start = 0
            for i, d in enumerate(dilations.tolist()):
                for k in range(_N_KERNELS):
                    n_pick = int(2.0 ** rng.uniform(0.0, math.log2(max_bands + 1)))
                    n_pick = min(max(n_pick, 1), max_bands)
                    channels[i, k, rng.choice(n_bands, n_pick, replace=False)] = True
                examples = rng.integers(0, series.shape[0], size=_N_KERNELS)
                # kernel k on the band sum of its own random example: [84, 1, T]
                combined = (series[examples] * channels[i][:, None, :]).sum(axis=2)[:, None]
                conv = _kernel_outputs(_shifted(combined, d), np.arange(_N_KERNELS))[:, 0]
                f = int(per_dilation[i])
                for k in range(_N_KERNELS):
                    q = quantiles[start : start + f]
                    biases.append(np.quantile(conv[k], q).astype(np.float32))
                    start += f
            self.reps.append(
                _Representation(
                    n_times=n_times,
                    dilations=dilations,
                    per_dilation=per_dilation,
                    channels=channels,
                    biases=np.concatenate(biases).astype(np.float32),
                )
            )
        self.n_bands = n_bands
        return self

    @property
    def n_features(self) -> int:
        """Columns of :meth:`transform` (after rounding ``n_features`` down)."""
        self._require_fitted()
        return sum(r.n_biases for r in self.reps) * len(self.pools)

    def _require_fitted(self) -> None:
        if not self.reps:
            raise ModelError("the ROCKET transform is not fitted yet")

    def _chunk_size(self) -> int:
        largest = max(int(r.per_dilation.max()) for r in self.reps)
        return max(1, _CHUNK_ELEMENTS // (_N_KERNELS * largest))

    def _transform_chunk(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [
                rep.transform(s, self.pools)
                for rep, s in zip(self.reps, self._representations(x), strict=True)
            ],
            axis=1,
        )

    def transform(self, x: np.ndarray, n_jobs: int | None = None) -> np.ndarray:
        """Features ``float32 [N, n_features]`` of gap-free series ``[N, T, C]``.

        ``n_jobs``: worker threads over chunks of samples (default: cropscope's thread
        count). The result does not depend on it nor on how the samples are batched."""
        self._require_fitted()
        x = self._check(x)
        if x.shape[1] != self.reps[0].n_times or x.shape[2] != self.n_bands:
            raise DataError(
                f"the transform was fitted on series of {self.reps[0].n_times} "
                f"steps x {self.n_bands} bands, got {x.shape[1:]}"
            )
        out = np.empty((x.shape[0], self.n_features), dtype=np.float32)

        def run(lo: int, hi: int) -> None:
            out[lo:hi] = self._transform_chunk(x[lo:hi])

        map_chunks(run, x.shape[0], self._chunk_size(), n_jobs)
        return out

    # ------------------------------------------------------------------ arrays
    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The fitted parameters as plain arrays (for ``np.savez``)."""
        self._require_fitted()
        out: dict[str, np.ndarray] = {f"{prefix}n_reps": np.array(len(self.reps))}
        for j, r in enumerate(self.reps):
            p = f"{prefix}rep{j}_"
            out.update({f"{p}n_times": np.array(r.n_times), f"{p}dilations": r.dilations,
                        f"{p}per_dilation": r.per_dilation, f"{p}channels": r.channels,
                        f"{p}biases": r.biases})  # fmt: skip
        return out

    def load_arrays(self, data: Any, prefix: str = "") -> RocketTransform:
        """Restore what :meth:`to_arrays` wrote (checked: a damaged file is a ModelError)."""
        try:
            n_reps = int(data[f"{prefix}n_reps"])
            if n_reps != self.n_reps:
                raise ModelError(
                    f"{n_reps} representations saved, {self.variant} has {self.n_reps}"
                )
            reps = []
            for j in range(n_reps):
                p = f"{prefix}rep{j}_"
                dil = np.asarray(data[f"{p}dilations"], dtype=np.int64)
                per = np.asarray(data[f"{p}per_dilation"], dtype=np.int64)
                channels = np.asarray(data[f"{p}channels"], dtype=bool)
                biases = np.asarray(data[f"{p}biases"], dtype=np.float32)
                n_times = int(data[f"{p}n_times"])
                if (
                    dil.ndim != 1
                    or per.shape != dil.shape
                    or (dil < 1).any()
                    or (per < 1).any()
                    or channels.ndim != 3
                    or channels.shape[:2] != (len(dil), _N_KERNELS)
                    or biases.shape != (int(_N_KERNELS * per.sum()),)
                    or n_times < 1
                ):
                    raise ModelError("inconsistent array shapes")
                reps.append(_Representation(n_times, dil, per, channels, biases))
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"not a saved ROCKET transform: {exc}") from None
        bands = {r.channels.shape[2] for r in reps}
        if len(bands) != 1:
            raise ModelError("not a saved ROCKET transform: representations disagree on bands")
        self.reps = reps
        self.n_bands = bands.pop()
        return self


def _batches(n: int, size: int) -> Iterator[slice]:
    for lo in range(0, n, size):
        yield slice(lo, min(n, lo + size))


class MiniRocket(Classifier):
    """MiniRocket / MultiRocket random-kernel features + ridge (or logistic) head."""

    requires = ("scikit-learn",)

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {
            "variant": "minirocket",  # or "multirocket"
            # None: 10 000 (minirocket) / 50 000 (multirocket), rounded down (see module)
            "n_features": None,
            "max_dilations": 32,
            # add Hydra's competing-kernel counts (k kernels x g groups; see models/hydra.py)
            # beside the ROCKET features, one head over both ("MultiRocket-Hydra")
            "hydra": False,
            "hydra_k": 8,
            "hydra_g": 64,
            "head": "ridge",  # or "logistic"
            # ridge: the penalties tried by leave-one-out cross-validation
            "alphas": [float(a) for a in np.logspace(-3, 3, 10)],
            # logistic: inverse penalty and iterations
            "C": 1.0,
            "max_iter": 1000,
            "class_weight": "balanced",
            "seed": 0,
            # None: cropscope's thread count (--threads, $CROPSCOPE_THREADS, load-aware)
            "n_jobs": None,
        }

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        c = self.config
        if c["head"] not in ("ridge", "logistic"):
            raise ModelError(f"head must be 'ridge' or 'logistic', got {c['head']!r}")
        alphas = c["alphas"]
        if (
            not isinstance(alphas, list | tuple)
            or not alphas
            or not all(
                isinstance(a, int | float) and not isinstance(a, bool) and a > 0 for a in alphas
            )
        ):
            raise ModelError(f"alphas must be a non-empty list of positive numbers, got {alphas!r}")
        if c["class_weight"] not in (None, "balanced"):
            raise ModelError(f"class_weight must be null or 'balanced', got {c['class_weight']!r}")
        n_jobs = c["n_jobs"]
        if n_jobs is not None and (
            isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1
        ):
            raise ModelError(f"n_jobs must be a positive integer or null, got {n_jobs!r}")
        if not isinstance(c["hydra"], bool):
            raise ModelError(f"hydra must be true or false, got {c['hydra']!r}")
        self.transform_ = self._new_transform()  # checks variant, n_features, max_dilations
        self.hydra_: HydraTransform | None = self._new_hydra()  # checks hydra_k, hydra_g

    def _new_hydra(self) -> HydraTransform | None:
        c = self.config
        return HydraTransform(c["hydra_k"], c["hydra_g"], c["seed"]) if c["hydra"] else None

    def _new_transform(self) -> RocketTransform:
        c = self.config
        return RocketTransform(c["variant"], c["n_features"], c["max_dilations"], c["seed"])

    def n_jobs(self) -> int:
        """Threads for the transform: the ``n_jobs`` option, else cropscope's thread count."""
        n = self.config["n_jobs"]
        return current_threads() if n is None else int(n)

    # ------------------------------------------------------------------ inputs
    def _prepare(self, ts: TimeSeriesSet) -> np.ndarray:
        """Gap-filled series standardised with the card's band statistics (NaN -> 0)."""
        card = self._require_card()
        x = ts.values
        if ts.mask is not None and not ts.mask.all():
            x = np.where(ts.mask[:, :, None], x, np.float32(np.nan))
        if not np.isfinite(x).all():
            x = interpolate_gaps_array(x, time_axis_days(ts))
        mean = np.asarray(card.norm_mean, dtype=np.float32)
        std = np.asarray(card.norm_std, dtype=np.float32)
        return np.nan_to_num((x - mean) / std, nan=0.0, posinf=0.0, neginf=0.0).astype(
            np.float32, copy=False
        )

    def _standardise(self, feats: np.ndarray) -> np.ndarray:
        feats -= self.mean_
        feats /= self.scale_
        return feats

    def _features(self, x: np.ndarray, n_jobs: int) -> np.ndarray:
        """Scaled features of prepared series: the ROCKET features standardised, then the
        Hydra counts (when ``hydra``) scaled by :func:`~cropscope.models.hydra.sparse_scale`."""
        z = self._standardise(self.transform_.transform(x, n_jobs))
        if self.hydra_ is None:
            return z
        counts = sparse_scale(self.hydra_.transform(x, n_jobs), self.hydra_mean_,
                              self.hydra_scale_)[0]  # fmt: skip
        return np.concatenate([z, counts], axis=1)

    # ------------------------------------------------------------------ Classifier API
    def _fit(self, train: TimeSeriesSet, val: TimeSeriesSet | None, progress: bool) -> None:
        card = self._require_card()
        if train.labels is None:  # Classifier.fit checked; kept for the type
            raise DataError("training data have no labels")
        values = train.values
        if train.mask is not None and not train.mask.all():
            values = np.where(train.mask[:, :, None], values, np.float32(np.nan))
        flat = values.reshape(-1, train.n_bands).astype(np.float64)
        with warnings.catch_warnings():  # a band without any valid value: mean 0, std 1
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nan_to_num(np.nanmean(flat, axis=0))
            std = np.nanstd(flat, axis=0)
        std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
        card.norm_mean = [float(v) for v in mean]
        card.norm_std = [float(v) for v in std]
        card.input_layout = "pixel-series [N, T, C]"

        x = self._prepare(train)
        self.transform_ = self._new_transform().fit(x)
        feats = self.transform_.transform(x, self.n_jobs())
        self.mean_ = feats.mean(axis=0, dtype=np.float64).astype(np.float32)
        scale = feats.std(axis=0, dtype=np.float64)
        self.scale_ = np.where(scale > 1e-8, scale, 1.0).astype(np.float32)
        z = self._standardise(feats)
        self.hydra_ = self._new_hydra()
        if self.hydra_ is not None:
            counts = self.hydra_.fit(x).transform(x, self.n_jobs())
            counts, self.hydra_mean_, self.hydra_scale_ = sparse_scale(counts)
            z = np.concatenate([z, counts], axis=1)
            del counts
        del x
        self._fit_head(z, train.labels)
        card.extra.update(
            variant=self.config["variant"],
            n_features=self.transform_.n_features
            + (0 if self.hydra_ is None else self.hydra_.n_features),
            head=self.config["head"],
            alpha=self.alpha_,
            temperature=self.temperature_,
        )

    def _fit_head(self, z: np.ndarray, y: np.ndarray) -> None:
        c = self.config
        if c["head"] == "ridge":
            from sklearn.linear_model import RidgeClassifierCV

            alphas = np.asarray(c["alphas"], dtype=np.float64)
            est: Any = RidgeClassifierCV(
                alphas=alphas, class_weight=c["class_weight"], store_cv_results=True
            )
            est.fit(z, y)
            self.alpha_: float | None = float(est.alpha_)
            half = 1.0  # softmax([-d, d]) for the one column of two classes
            # leave-one-out decision values at the chosen penalty: [N, K] (or [N, 1])
            loo = est.cv_results_[:, :, int(np.argmin(np.abs(alphas - est.alpha_)))]
            if loo.shape[1] == 1:
                loo = np.hstack([-loo, loo])
            self.temperature_ = fit_logit_scale(loo, np.searchsorted(est.classes_, y))
            del loo
            est.cv_results_ = None
        else:
            from sklearn.linear_model import LogisticRegression

            est = LogisticRegression(
                C=c["C"],
                max_iter=c["max_iter"],
                class_weight=c["class_weight"],
                random_state=c["seed"],
            )
            est.fit(z, y)
            self.alpha_ = None
            self.temperature_ = 1.0  # already calibrated
            half = 0.5  # sigmoid(d) = softmax([-d/2, d/2])
        coef = np.atleast_2d(est.coef_)
        intercept = np.atleast_1d(est.intercept_)
        if coef.shape[0] == 1:  # scikit-learn keeps one row for two classes
            coef = np.vstack([-coef, coef]) * half
            intercept = np.hstack([-intercept, intercept]) * half
        self.coef_ = coef.astype(np.float32)
        self.intercept_ = intercept.astype(np.float32)
        self.classes_ = np.asarray(est.classes_).astype(np.int64)

    def _predict_proba(self, ts: TimeSeriesSet) -> np.ndarray:
        x = self._prepare(ts)
        out = np.zeros((ts.n_samples, len(self.classes)), dtype=np.float32)
        n_jobs = self.n_jobs()
        for sl in _batches(ts.n_samples, _PREDICT_BATCH):
            z = self._features(x[sl], n_jobs)
            logits = z @ self.coef_.T + self.intercept_
            out[sl, self.classes_] = softmax(self.temperature_ * logits.astype(np.float64))
        return out

    def _save_weights(self, directory: Path) -> None:
        from cropscope.io import atomic_path

        arrays = {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_,
                  "intercept": self.intercept_, "classes": self.classes_,
                  "temperature": np.array(self.temperature_),
                  **self.transform_.to_arrays("transform_")}  # fmt: skip
        if self.hydra_ is not None:
            arrays.update(self.hydra_.to_arrays("hydra_"), hydra_mean=self.hydra_mean_,
                          hydra_scale=self.hydra_scale_)  # fmt: skip
        with atomic_path(directory / _WEIGHTS) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)

    def _load_weights(self, directory: Path) -> None:
        path = directory / _WEIGHTS
        if not path.is_file():
            raise ModelError(f"{directory} has no {_WEIGHTS}")
        try:
            with np.load(path, allow_pickle=False) as data:
                transform = self._new_transform().load_arrays(data, "transform_")
                hydra = self._new_hydra()
                if hydra is not None:
                    hydra.load_arrays(data, "hydra_")
                    hydra_mean = np.asarray(data["hydra_mean"], dtype=np.float32)
                    hydra_scale = np.asarray(data["hydra_scale"], dtype=np.float32)
                mean, scale = data["mean"], data["scale"]
                coef, intercept, classes = data["coef"], data["intercept"], data["classes"]
                # runs saved before the ridge head was calibrated: the plain softmax
                temperature = float(data["temperature"]) if "temperature" in data else 1.0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"cannot read {path}: {exc}") from None
        card = self._require_card()
        n_feat = transform.n_features
        n_hydra = 0 if hydra is None else hydra.n_features
        if hydra is not None and (
            hydra_mean.shape != (n_hydra,)
            or hydra_scale.shape != (n_hydra,)
            or not (hydra_scale > 0).all()
            or not np.isfinite(hydra_mean).all()
            or hydra.n_times != card.n_times
            or hydra.n_bands != len(card.bands)
        ):
            raise ModelError(f"{path} does not match its model card")
        if (
            mean.shape != (n_feat,)
            or scale.shape != (n_feat,)
            or coef.ndim != 2
            or coef.shape[1] != n_feat + n_hydra
            or intercept.shape != (coef.shape[0],)
            or classes.shape != (coef.shape[0],)
            or transform.n_bands != len(card.bands)
            or transform.reps[0].n_times != card.n_times
            or (classes < 0).any()
            or (classes >= len(card.classes)).any()
            or not (np.isfinite(temperature) and temperature > 0)
        ):
            raise ModelError(f"{path} does not match its model card")
        self.transform_ = transform
        self.hydra_ = hydra
        if hydra is not None:
            self.hydra_mean_, self.hydra_scale_ = hydra_mean, hydra_scale
        self.mean_, self.scale_ = mean.astype(np.float32), scale.astype(np.float32)
        self.coef_, self.intercept_ = coef.astype(np.float32), intercept.astype(np.float32)
        self.classes_ = classes.astype(np.int64)
        self.alpha_ = card.extra.get("alpha")
        self.temperature_ = temperature
