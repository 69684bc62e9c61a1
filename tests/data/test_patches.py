"""PatchSet and patch extraction."""

from __future__ import annotations

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.data.patches import PatchSet, extract_patches
from cropscope.errors import DataError


def _image(k: int = 3, h: int = 6, w: int = 5) -> np.ndarray:
    return np.arange(k * h * w, dtype=np.float32).reshape(k, h, w)


def test_extract_patches_values_and_padding() -> None:
    img = _image()
    out = extract_patches(img, np.array([2, 0]), np.array([2, 4]), 3)
    assert out.shape == (2, 3, 3, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], img[:, 1:4, 1:4])
    # corner patch: the part beyond the image is NaN, the rest is the image
    assert np.isnan(out[1, :, 0, :]).all() and np.isnan(out[1, :, :, 2]).all()
    np.testing.assert_array_equal(out[1, :, 1:, :2], img[:, 0:2, 3:5])


def test_extract_patches_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="odd"):
        extract_patches(_image(), np.array([1]), np.array([1]), 4)
    with pytest.raises(DataError, match="outside"):
        extract_patches(_image(), np.array([6]), np.array([1]), 3)


def test_patchset_centre_set_and_views() -> None:
    img = _image(k=4)
    rows, cols = np.array([1, 2, 3]), np.array([1, 2, 3])
    ps = PatchSet(extract_patches(img, rows, cols, 3), ["a", "b", "c", "d"],
                  wavelengths=np.array([400.0, 500, 600, 700]), labels=np.array([0, 1, 1]),
                  classes=["x", "y"])
    assert (ps.n_samples, ps.n_bands, ps.patch_size) == (3, 4, 3)
    np.testing.assert_array_equal(ps.centre, img[:, rows, cols].T)
    ts = ps.centre_set()
    assert isinstance(ts, TimeSeriesSet) and ts.values.shape == (3, 1, 4)
    assert ts.bands == ["a", "b", "c", "d"] and list(ts.label_names) == ["x", "y", "y"]
    sub = ps.select_bands(["d", "a"]).subset([2])
    assert sub.bands == ["d", "a"] and sub.wavelengths.tolist() == [700.0, 400.0]
    np.testing.assert_array_equal(sub.centre[0], img[[3, 0], 3, 3])
    small = ps.crop(1)
    assert small.patch_size == 1
    np.testing.assert_array_equal(small.values[:, :, 0, 0], ps.centre)
    assert ps.class_counts() == {"x": 1, "y": 2}
    with pytest.raises(DataError, match="not found"):
        ps.select_bands(["zz"])


def test_patchset_validation() -> None:
    with pytest.raises(DataError, match="odd"):
        PatchSet(np.zeros((2, 3, 4, 4)), ["a", "b", "c"])
    with pytest.raises(DataError, match="band names"):
        PatchSet(np.zeros((2, 3, 3, 3)), ["a", "b"])
    with pytest.raises(DataError, match="no class name"):
        PatchSet(np.zeros((2, 1, 1, 1)), ["a"], labels=np.array([0, 3]), classes=["x"])


def test_from_timeseries_flattens_time_and_bands() -> None:
    values = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    ts = TimeSeriesSet(values, ["B4", "B8"], labels=np.array([0, 1]), classes=["p", "q"])
    ps = PatchSet.from_timeseries(ts)
    assert ps.values.shape == (2, 6, 1, 1) and ps.bands[:3] == ["B4@t0", "B8@t0", "B4@t1"]
    np.testing.assert_array_equal(ps.centre, values.reshape(2, 6))
    one = PatchSet.from_timeseries(ts.replace(values=values[:, :1], dates=None))
    assert one.bands == ["B4", "B8"]


def test_mean_set_is_the_mean_of_the_finite_neighbours() -> None:
    img = _image(k=2, h=5, w=5)
    img[0, 1, 1] = np.nan  # a missing pixel inside the first patch
    ps = PatchSet(extract_patches(img, np.array([1, 0, 3]), np.array([1, 0, 3]), 3), ["a", "b"],
                  labels=np.array([0, 1, 0]), classes=["x", "y"])
    ts = ps.mean_set()
    assert isinstance(ts, TimeSeriesSet) and ts.values.shape == (3, 1, 2)
    assert ts.values.dtype == np.float32 and ts.bands == ["a", "b"]
    assert list(ts.label_names) == ["x", "y", "x"]
    for i, (r, c) in enumerate([(1, 1), (0, 0), (3, 3)]):
        window = img[:, max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]  # the image part
        np.testing.assert_allclose(ts.values[i, 0], np.nanmean(window, axis=(1, 2)),
                                   rtol=1e-6)
    # a neighbourhood without any finite value of a band is NaN for that band only
    empty = ps.values.copy()
    empty[1, 0] = np.nan
    means = PatchSet(empty, ["a", "b"]).mean_set().values[:, 0]
    assert np.isnan(means[1, 0]) and np.isfinite(means[1, 1]) and np.isfinite(means[0]).all()
    # 1 x 1 patches: the mean is the centre
    np.testing.assert_array_equal(ps.crop(1).mean_set().values, ps.centre_set().values)
