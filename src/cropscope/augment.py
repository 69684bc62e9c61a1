"""Temporal augmentation of training series (CropNet, Tong & Wang; cropnet.md §4).

Three transforms of a series on a regular time grid, all in numpy and driven by a
:class:`numpy.random.Generator`:

- **time shift**: the sampling window slides by a random whole number of steps, then is
  linearly resampled back to the window length (windows clipped at the series ends are
  therefore also stretched);
- **time scale**: start and end of the window move independently (stretch or squeeze);
- **magnitude warp**: every band at step ``t`` is multiplied by the same smooth random curve
  ``w(t)`` (cubic spline through knots drawn around 1).

:class:`TemporalAugmentation` combines them as the reference code effectively does: each
augmented copy is shifted (p = ``shift_p``), or, when the scale fires (p = ``scale_p``),
scaled *instead*; then warped (p = ``warp_p``). :func:`augment_training_set` returns the
un-augmented samples plus ``copies`` augmented copies of each.

Augment **only the training subset**, after the validation split: augmented copies of a
validation sample inside the training set would make model selection optimistic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy.interpolate import CubicSpline

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError

__all__ = [
    "TemporalAugmentation",
    "augment_training_set",
    "crop_resample",
    "magnitude_warp",
    "resample_linear",
    "time_scale",
    "time_shift",
]

#: Days assumed to be covered by a series without dates (one year).
YEAR_DAYS = 365.25


def crop_resample(full: np.ndarray, starts: np.ndarray, ends: np.ndarray, n_out: int) -> np.ndarray:
    """Cut window ``[starts[n], ends[n])`` out of each series ``full[n]`` ``[N, T, C]`` and
    resample it linearly to ``n_out`` steps (half-pixel alignment, ``align_corners=False``).

    Output step ``i`` of a window of length ``L`` reads the input at
    ``clip((i + 0.5) * L / n_out - 0.5, 0, L - 1)``; a window of ``n_out`` steps is copied
    exactly.
    """
    full = np.asarray(full)
    if full.ndim != 3:
        raise ValueError(f"full must be [N, T, C], got shape {full.shape}")
    n, t_full, _ = full.shape
    starts = np.broadcast_to(np.asarray(starts, dtype=np.int64), (n,))
    ends = np.broadcast_to(np.asarray(ends, dtype=np.int64), (n,))
    if (starts < 0).any() or (ends > t_full).any() or (ends <= starts).any():
        raise ValueError(f"windows must satisfy 0 <= start < end <= {t_full}")
    if n_out < 1:
        raise ValueError(f"n_out must be >= 1, got {n_out}")
    length = (ends - starts).astype(np.float64)[:, None]
    rel = (np.arange(n_out, dtype=np.float64)[None, :] + 0.5) * length / n_out - 0.5
    rel = np.clip(rel, 0.0, length - 1.0)
    i0 = np.floor(rel).astype(np.int64)
    frac = (rel - i0).astype(full.dtype)[:, :, None]
    i1 = np.minimum(i0 + 1, (ends - starts - 1)[:, None])
    x0 = np.take_along_axis(full, (starts[:, None] + i0)[:, :, None], axis=1)
    x1 = np.take_along_axis(full, (starts[:, None] + i1)[:, :, None], axis=1)
    # exact copies where no interpolation is needed (also keeps a NaN neighbour out)
    return np.where(frac == 0, x0, x0 * (1 - frac) + x1 * frac)


def resample_linear(x: np.ndarray, n_out: int) -> np.ndarray:
    """Resample ``x`` ``[..., T_in, C]`` (or ``[T_in, C]``) to ``n_out`` steps along time."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must be [..., T, C], got shape {x.shape}")
    t_in, c = x.shape[-2:]
    flat = x.reshape(-1, t_in, c)
    out = crop_resample(flat, np.zeros(len(flat)), np.full(len(flat), t_in), n_out)
    return out.reshape(*x.shape[:-2], n_out, c)


def _check_window(full: np.ndarray, window: tuple[int, int]) -> tuple[int, int]:
    if full.ndim != 3:
        raise ValueError(f"full must be [N, T, C], got shape {full.shape}")
    start, end = int(window[0]), int(window[1])
    if not 0 <= start < end <= full.shape[1]:
        raise ValueError(f"window {window} outside the series of {full.shape[1]} steps")
    return start, end


def _clip_windows(
    starts: np.ndarray, ends: np.ndarray, t_full: int
) -> tuple[np.ndarray, np.ndarray]:
    starts = np.clip(starts, 0, t_full - 1)
    ends = np.clip(ends, 1, t_full)
    ends = np.where(ends <= starts, starts + 1, ends)
    return starts, ends


def time_shift(
    full: np.ndarray,
    window: tuple[int, int],
    max_shift_steps: int,
    rng: np.random.Generator,
    n_out: int | None = None,
) -> np.ndarray:
    """Slide the window ``[start, end)`` of every series by ``s ~ U{-max..max}`` steps.

    The shifted window is clipped to the series and resampled to ``n_out`` steps (default:
    the window length), so a window clipped at a series end is also stretched.
    """
    full = np.asarray(full)
    start, end = _check_window(full, window)
    n, t_full, _ = full.shape
    shift = rng.integers(-max_shift_steps, max_shift_steps + 1, size=int(n))
    starts, ends = _clip_windows(start + shift, end + shift, t_full)
    return crop_resample(full, starts, ends, n_out or end - start)


def time_scale(
    full: np.ndarray,
    window: tuple[int, int],
    max_offset_steps: int,
    rng: np.random.Generator,
    n_out: int | None = None,
) -> np.ndarray:
    """Move the start and the end of the window independently by ``U{-max..max}`` steps
    each (if the end falls on or before the start it becomes start + 1 step), then resample
    to ``n_out`` steps: the series is stretched or squeezed in time."""
    full = np.asarray(full)
    start, end = _check_window(full, window)
    n, t_full, _ = full.shape
    d_start = rng.integers(-max_offset_steps, max_offset_steps + 1, size=int(n))
    d_end = rng.integers(-max_offset_steps, max_offset_steps + 1, size=int(n))
    starts, ends = _clip_windows(start + d_start, end + d_end, t_full)
    return crop_resample(full, starts, ends, n_out or end - start)


def warp_curves(
    n: int, n_times: int, rng: np.random.Generator, n_knots: int = 5, sigma: float = 0.1
) -> np.ndarray:
    """``[n, n_times]`` smooth factors: a not-a-knot cubic spline through ``n_knots`` values
    ``~ N(1, sigma)`` placed at ``linspace(0, n_times - 1, n_knots)``."""
    if n_knots < 2:
        raise ValueError(f"n_knots must be >= 2, got {n_knots}")
    knots = rng.normal(1.0, sigma, size=(n_knots, n))
    if n_times < 2:
        return np.repeat(knots.mean(axis=0)[:, None], n_times, axis=1)
    spline = CubicSpline(np.linspace(0, n_times - 1, n_knots), knots, axis=0)
    return spline(np.arange(n_times)).T


def magnitude_warp(
    x: np.ndarray, rng: np.random.Generator, n_knots: int = 5, sigma: float = 0.1
) -> np.ndarray:
    """Multiply all bands of ``x`` ``[N, T, C]`` at step ``t`` by one smooth factor ``w(t)``
    per series (see :func:`warp_curves`)."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must be [N, T, C], got shape {x.shape}")
    w = warp_curves(x.shape[0], x.shape[1], rng, n_knots, sigma)
    return (x * w[:, :, None]).astype(x.dtype, copy=False)


@dataclass(frozen=True)
class TemporalAugmentation:
    """CropNet augmentation settings (defaults from the reference code).

    Offsets are in days and converted to whole grid steps with ``step_days`` (``None``:
    :func:`augment_training_set` takes it from the series dates).
    """

    shift_days: float = 50.0
    shift_p: float = 1.0
    scale_days: float = 50.0
    scale_p: float = 0.5
    warp_p: float = 0.25
    warp_sigma: float = 0.1
    warp_knots: int = 5
    copies: int = 2
    step_days: float | None = None

    def steps(self, days: float) -> int:
        """Whole grid steps for an offset in days."""
        if self.step_days is None or self.step_days <= 0:
            raise DataError("TemporalAugmentation needs step_days (days per time step) > 0")
        return round(days / self.step_days)

    def apply(
        self, full_values: np.ndarray, window: tuple[int, int], rng: np.random.Generator
    ) -> np.ndarray:
        """``copies`` augmented versions of each window of ``full_values`` ``[N, T_full, C]``,
        as ``[N * copies, window length, C]`` (copy-major: copy ``k`` of sample ``n`` is row
        ``k * N + n``)."""
        full = np.asarray(full_values, dtype=np.float32)
        start, end = _check_window(full, window)
        n_out = end - start
        base = full[:, start:end]
        shift_steps, scale_steps = self.steps(self.shift_days), self.steps(self.scale_days)
        out = []
        for _ in range(self.copies):
            x = base.copy()
            fire = rng.random(len(full)) < self.shift_p
            if fire.any():
                x[fire] = time_shift(full[fire], window, shift_steps, rng, n_out)
            fire = rng.random(len(full)) < self.scale_p
            if fire.any():
                x[fire] = time_scale(full[fire], window, scale_steps, rng, n_out)
            fire = rng.random(len(full)) < self.warp_p
            if fire.any():
                x[fire] = magnitude_warp(x[fire], rng, self.warp_knots, self.warp_sigma)
            out.append(x)
        if not out:
            return np.empty((0, n_out, full.shape[2]), dtype=np.float32)
        return np.concatenate(out, axis=0)


def infer_step_days(ts: TimeSeriesSet) -> float:
    """Median spacing of the dates in days; a series without dates is taken to span one
    year (``365.25 / T`` days per step)."""
    if ts.dates is None or ts.n_times < 2:
        return YEAR_DAYS / ts.n_times
    diffs = np.diff(ts.dates.astype(np.int64), axis=-1)
    step = float(np.median(diffs))
    if step <= 0:
        raise DataError("dates must increase along time to infer the time step")
    return step


def augment_training_set(
    train: TimeSeriesSet,
    window: tuple[int, int] | None,
    aug: TemporalAugmentation,
    seed: int,
) -> TimeSeriesSet:
    """The window of every training sample plus ``aug.copies`` augmented copies of it.

    Returns ``N * (1 + copies)`` samples: first the ``N`` un-augmented windows, then the
    copies (copy-major), with labels, ids and metadata repeated. ``window=None`` uses the
    whole series (shifts are then clipped at the series ends and stretched). The dates of
    the result are those of the window. Call this on the training subset only.
    """
    full = train.values
    window = (0, train.n_times) if window is None else (int(window[0]), int(window[1]))
    start, end = _check_window(full, window)
    if aug.step_days is None:
        aug = replace(aug, step_days=infer_step_days(train))
    rng = np.random.default_rng(seed)
    augmented = aug.apply(full, window, rng)
    reps = 1 + aug.copies
    values = np.concatenate([full[:, start:end], augmented], axis=0)
    dates = train.dates
    if dates is not None:
        dates = dates[start:end] if dates.ndim == 1 else np.tile(dates[:, start:end], (reps, 1))
    labels = None if train.labels is None else np.tile(train.labels, reps)
    meta = pd.concat([train.meta] * reps, ignore_index=True)
    ids = train.ids
    assert ids is not None  # set by TimeSeriesSet.__post_init__
    return TimeSeriesSet(
        values=values,
        bands=list(train.bands),
        dates=dates,
        labels=labels,
        classes=list(train.classes),
        ids=np.tile(ids, reps),
        meta=meta,
        taxonomy=train.taxonomy,
        level_labels=None if train.level_labels is None else np.tile(train.level_labels, (reps, 1)),
    )
