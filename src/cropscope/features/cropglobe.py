"""CropGlobe temporal-median features (cropnet.md §2.1).

Per sample and band, the median of the valid observations in consecutive day-of-year windows
(window index ``(DOY - 1) // window_days``), restricted to the windows of ``start_doy`` ..
``end_doy`` and gap-filled by linear interpolation over the windows. The defaults follow the
paper: 5-day windows over DOY 121-334 (1 May - 30 November in a non-leap year), i.e. window
indices 24..66 = **43 time steps**; with 10 Sentinel-2 bands the "2D" tensor is
``[N, 1, 10, 43]`` (CropNet input) and the "1D" vector has 430 values (RF/MLP input).

Day of year comes from each observation's own date, so samples from different years share
the grid. ``start_doy > end_doy`` wraps over New Year (southern-hemisphere seasons). Pass one
season per sample: observations of several years in the same window are pooled.
"""

from __future__ import annotations

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.features.compositing import _composite_by_index
from cropscope.features.gapfill import interpolate_gaps_array

__all__ = ["median_feature_names", "median_features_1d", "median_features_2d", "median_windows"]


def median_windows(window_days: int = 5, start_doy: int = 121, end_doy: int = 334) -> np.ndarray:
    """Day-of-year window indices used (e.g. 24..66 for the defaults)."""
    if int(window_days) <= 0:
        raise DataError(f"window_days must be positive, got {window_days}")
    for name, doy in (("start_doy", start_doy), ("end_doy", end_doy)):
        if not 1 <= int(doy) <= 366:
            raise DataError(f"{name} must be a day of year in 1..366, got {doy}")
    per_year = 365 // int(window_days) + 1  # windows in a year, incl. the one holding DOY 366
    first = (int(start_doy) - 1) // int(window_days)
    last = (int(end_doy) - 1) // int(window_days)
    if int(start_doy) <= int(end_doy):
        count = last - first + 1
    else:  # the season wraps over New Year
        count = min(per_year - first + last + 1, per_year)
    return (first + np.arange(count)) % per_year


def _median_composite(
    ts: TimeSeriesSet, window_days: int, start_doy: int, end_doy: int, fill: bool
) -> np.ndarray:
    if ts.dates is None:
        raise DataError("CropGlobe median features need calendar dates; this set has dates=None")
    windows = median_windows(window_days, start_doy, end_doy)
    per_year = 365 // int(window_days) + 1
    doy = ts.day_of_year
    assert doy is not None and ts.ids is not None  # dates checked above; ids always set
    win = (doy - 1) // int(window_days)
    rel = (win - windows[0]) % per_year
    rel[rel >= len(windows)] = -1
    rel[np.isnat(ts.dates)] = -1
    out = _composite_by_index(ts.values, rel, len(windows), mask=ts.mask)  # [N, T', C]
    if fill:
        empty = ~np.isfinite(out).any(axis=(1, 2))
        if empty.any():
            ids = ", ".join(str(i) for i in ts.ids[empty][:10])
            raise DataError(
                f"{int(empty.sum())} samples have no valid observation between DOY "
                f"{start_doy} and {end_doy}, sample ids {ids}; drop them or widen the window"
            )
        out = interpolate_gaps_array(out)
    return out


def median_features_2d(
    ts: TimeSeriesSet,
    window_days: int = 5,
    start_doy: int = 121,
    end_doy: int = 334,
    fill: bool = True,
) -> np.ndarray:
    """Median composites as a one-channel band × time image ``float32 [N, 1, C, T']``.

    ``T' = 43`` for the defaults (5-day windows, DOY 121-334, as in the paper). Empty
    windows are filled linearly (``fill=False`` keeps them NaN).
    """
    out = _median_composite(ts, window_days, start_doy, end_doy, fill)
    return np.ascontiguousarray(out.transpose(0, 2, 1))[:, None]


def median_features_1d(
    ts: TimeSeriesSet,
    window_days: int = 5,
    start_doy: int = 121,
    end_doy: int = 334,
    fill: bool = True,
) -> np.ndarray:
    """The same medians flattened band-major: ``float32 [N, C*T']`` (430 for 10 bands)."""
    out = median_features_2d(ts, window_days, start_doy, end_doy, fill)
    return out.reshape(out.shape[0], -1)


def median_feature_names(
    bands: list[str], window_days: int = 5, start_doy: int = 121, end_doy: int = 334
) -> list[str]:
    """Names of :func:`median_features_1d` columns, e.g. ``B4_w024`` (DOY window index)."""
    windows = median_windows(window_days, start_doy, end_doy)
    return [f"{b}_w{int(w):03d}" for b in bands for w in windows]
