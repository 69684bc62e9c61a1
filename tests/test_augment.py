from __future__ import annotations

import numpy as np
import pytest

from cropscope.augment import (
    TemporalAugmentation,
    augment_training_set,
    crop_resample,
    infer_step_days,
    magnitude_warp,
    resample_linear,
    time_scale,
    time_shift,
    warp_curves,
)
from cropscope.errors import DataError
from tests.conftest import make_toy_set


def _peaks(n: int, t_full: int, c: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Series that are zero except for one peak per sample (same position in every band)."""
    pos = rng.integers(13, 17, size=n)  # inside every window shifted by <= 3
    full = np.zeros((n, t_full, c), dtype=np.float32)
    full[np.arange(n), pos] = np.arange(1, c + 1)
    return full, pos


def _ramp(n: int, t_full: int) -> np.ndarray:
    return np.broadcast_to(np.arange(t_full, dtype=np.float32)[None, :, None], (n, t_full, 2))


# ---------------------------------------------------------------------- resampling
def test_resample_linear_half_pixel_values() -> None:
    x = np.arange(4, dtype=np.float32)[:, None]
    np.testing.assert_allclose(resample_linear(x, 2)[:, 0], [0.5, 2.5])
    np.testing.assert_allclose(
        resample_linear(x, 8)[:, 0], [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3]
    )
    np.testing.assert_array_equal(resample_linear(x, 4), x)


def test_resample_linear_matches_torch_align_corners_false() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 11, 2)).astype(np.float32)
    for n_out in (4, 11, 23):
        ours = resample_linear(x, n_out)
        assert ours.shape == (3, 5, n_out, 2)
        ref = (
            torch.nn.functional.interpolate(
                torch.from_numpy(x.reshape(15, 11, 2)).transpose(1, 2),
                size=n_out,
                mode="linear",
                align_corners=False,
            )
            .transpose(1, 2)
            .numpy()
            .reshape(3, 5, n_out, 2)
        )
        np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_crop_resample_rejects_bad_windows() -> None:
    full = np.zeros((2, 5, 1))
    with pytest.raises(ValueError, match="windows"):
        crop_resample(full, np.array([0, 3]), np.array([5, 3]), 4)


# ---------------------------------------------------------------------- time shift
def test_time_shift_moves_the_peak_by_whole_steps() -> None:
    rng = np.random.default_rng(1)
    full, pos = _peaks(300, 30, 3, rng)
    out = time_shift(full, (10, 20), 3, np.random.default_rng(2))
    assert out.shape == (300, 10, 3)
    shift = pos - 10 - out[:, :, 0].argmax(axis=1)  # window moved by +s => peak moves by -s
    assert set(shift.tolist()) == set(range(-3, 4))
    for n in range(300):  # an unclipped shift is an exact slice of the full series
        np.testing.assert_array_equal(out[n], full[n, 10 + shift[n] : 20 + shift[n]])


def test_time_shift_clipped_at_series_ends_stretches() -> None:
    full = _ramp(200, 20)
    out = time_shift(full, (0, 20), 4, np.random.default_rng(0))
    assert out.shape == (200, 20, 2)
    assert (np.diff(out[:, :, 0], axis=1) >= 0).all()
    # either the window kept the start (negative shift, clipped) or the end (positive shift)
    assert ((out[:, 0, 0] == 0) | (out[:, -1, 0] == 19)).all()
    stretched = ~np.isclose(out[:, :, 0], full[:, :, 0]).all(axis=1)
    assert stretched.any() and not stretched.all()  # s = 0 keeps the series
    assert out[:, :, 0].max() <= 19 and out[:, :, 0].min() >= 0


def test_time_shift_is_reproducible() -> None:
    full = np.random.default_rng(0).normal(size=(20, 30, 2))
    a = time_shift(full, (5, 25), 4, np.random.default_rng(7))
    b = time_shift(full, (5, 25), 4, np.random.default_rng(7))
    c = time_shift(full, (5, 25), 4, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ---------------------------------------------------------------------- time scale
def test_time_scale_stretches_and_squeezes() -> None:
    full = _ramp(400, 40)
    out = time_scale(full, (10, 30), 5, np.random.default_rng(3))
    assert out.shape == (400, 20, 2)
    slope = (out[:, -2, 0] - out[:, 1, 0]) / 17  # inner steps: slope = window length / 20
    assert slope.min() < 0.8 and slope.max() > 1.2  # squeezed and stretched windows
    lengths = np.round(slope * 20)
    assert lengths.min() >= 10 and lengths.max() <= 30
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 1])


def test_time_scale_collapsed_window_becomes_one_step() -> None:
    full = _ramp(300, 12)
    out = time_scale(full, (5, 6), 3, np.random.default_rng(0), n_out=4)
    assert out.shape == (300, 4, 2)
    constant = (out[:, :, 0] == out[:, :1, 0]).all(axis=1)
    assert constant.any()  # end <= start -> a one-step window repeated


# ---------------------------------------------------------------------- magnitude warp
def test_magnitude_warp_scales_all_bands_by_one_smooth_curve() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 1.0, size=(50, 23, 4)).astype(np.float32)
    out = magnitude_warp(x, np.random.default_rng(1), n_knots=5, sigma=0.1)
    assert out.shape == x.shape and out.dtype == x.dtype
    factor = out / x
    np.testing.assert_allclose(factor, factor[:, :, :1].repeat(4, axis=2), rtol=1e-5)
    w = factor[:, :, 0]
    assert not np.allclose(w, 1.0)
    # a cubic through 5 knots varies slowly: second differences are far below the knot spread
    assert np.abs(np.diff(w, n=2, axis=1)).max() < 0.12  # white noise: ~0.8
    assert np.abs(w - 1).max() < 0.6


def test_warp_curves_pass_through_knots_and_average_one() -> None:
    w = warp_curves(4000, 41, np.random.default_rng(5), n_knots=5, sigma=0.1)
    assert w.shape == (4000, 41)
    assert abs(w.mean() - 1.0) < 0.005
    assert 0.07 < w[:, 0].std() < 0.13  # at a knot the curve has the knot's spread
    w2 = warp_curves(3, 41, np.random.default_rng(5), n_knots=5, sigma=0.1)
    knots = np.random.default_rng(5).normal(1.0, 0.1, size=(5, 3))
    np.testing.assert_allclose(w2[:, [0, 10, 20, 30, 40]], knots.T)


# ---------------------------------------------------------------------- combined
def test_temporal_augmentation_apply_shapes_and_probabilities() -> None:
    rng = np.random.default_rng(0)
    full = rng.uniform(0.1, 1, size=(30, 40, 3)).astype(np.float32)
    none = TemporalAugmentation(shift_p=0, scale_p=0, warp_p=0, step_days=5)
    out = none.apply(full, (10, 30), np.random.default_rng(0))
    assert out.shape == (60, 20, 3)
    np.testing.assert_array_equal(out, np.concatenate([full[:, 10:30]] * 2))

    aug = TemporalAugmentation(step_days=5)  # +-50 days = +-10 steps
    a = aug.apply(full, (10, 30), np.random.default_rng(1))
    b = aug.apply(full, (10, 30), np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (60, 20, 3) and not np.array_equal(a, out)


def test_temporal_augmentation_converts_days_to_steps() -> None:
    assert TemporalAugmentation(shift_days=50, step_days=16).steps(50) == 3
    assert TemporalAugmentation(step_days=5).steps(50) == 10
    with pytest.raises(DataError, match="step_days"):
        TemporalAugmentation().steps(50)
    # shift only, by at most 1 step (16-day grid): peaks move by -1, 0 or +1 steps
    full, pos = _peaks(200, 30, 1, np.random.default_rng(0))
    aug = TemporalAugmentation(shift_days=16, scale_p=0, warp_p=0, step_days=16, copies=1)
    out = aug.apply(full, (10, 20), np.random.default_rng(0))
    assert set((pos - 10 - out[:, :, 0].argmax(1)).tolist()) == {-1, 0, 1}


def test_augment_training_set_keeps_base_and_adds_copies() -> None:
    ts = make_toy_set(n_per_class=5, n_times=12)
    out = augment_training_set(ts, (2, 10), TemporalAugmentation(), seed=0)
    n = ts.n_samples
    assert out.n_samples == 3 * n and out.n_times == 8 and out.bands == ts.bands
    np.testing.assert_array_equal(out.values[:n], ts.values[:, 2:10])
    np.testing.assert_array_equal(out.labels, np.tile(ts.labels, 3))
    np.testing.assert_array_equal(out.ids, np.tile(ts.ids, 3))
    np.testing.assert_array_equal(out.dates, ts.dates[2:10])
    assert out.classes == ts.classes and len(out.meta) == 3 * n
    assert not np.allclose(out.values[n:], np.concatenate([out.values[:n]] * 2))
    again = augment_training_set(ts, (2, 10), TemporalAugmentation(), seed=0)
    np.testing.assert_array_equal(out.values, again.values)
    other = augment_training_set(ts, (2, 10), TemporalAugmentation(), seed=1)
    assert not np.array_equal(out.values, other.values)


def test_augment_training_set_whole_series_and_step_inference() -> None:
    ts = make_toy_set(n_per_class=4, n_times=12)
    assert infer_step_days(ts) == 30.0
    assert infer_step_days(ts.replace(dates=None)) == pytest.approx(365.25 / 12)
    out = augment_training_set(ts, None, TemporalAugmentation(copies=1), seed=3)
    assert out.n_samples == 2 * ts.n_samples and out.n_times == ts.n_times
    np.testing.assert_array_equal(out.values[: ts.n_samples], ts.values)
    # the augmented peak stays a peak of the same class: clipping stretches, never wraps
    peak_base = ts.values[:, :, 0].argmax(1)
    peak_aug = out.values[ts.n_samples :, :, 0].argmax(1)
    assert np.abs(peak_aug - peak_base).max() <= 4
