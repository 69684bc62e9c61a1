"""Crop weather covariates: growing degree days, day length, thermal-time alignment.

Any object with ``sample(variable, lat, lon, time) -> ndarray`` is a *temperature source*:
a fitted :class:`cropscope.weather.field.WeatherField` or a :class:`GriddedField` (bilinear in
space, linear in time, exact at grid points and grid times).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import xarray as xr

from cropscope.errors import DataError

__all__ = [
    "GriddedField",
    "ThermalTime",
    "add_covariates",
    "align_on_thermal_time",
    "daily_gdd",
    "day_length",
    "thermal_time",
    "thermal_time_from_series",
]

log = logging.getLogger(__name__)


class FieldSource(Protocol):
    def sample(self, variable: str, lat: Any, lon: Any, time: Any = None) -> np.ndarray: ...


def day_length(lat_deg: Any, day_of_year: Any) -> np.ndarray:
    """Astronomical day length in hours (sunrise to sunset of the sun's centre).

    Declination from the Spencer (1971) series; polar day/night give 24 / 0 h.
    """
    lat = np.deg2rad(np.asarray(lat_deg, float))
    g = 2 * np.pi * (np.asarray(day_of_year, float) - 1) / 365.0
    decl = (0.006918 - 0.399912 * np.cos(g) + 0.070257 * np.sin(g) - 0.006758 * np.cos(2 * g)
            + 0.000907 * np.sin(2 * g) - 0.002697 * np.cos(3 * g) + 0.00148 * np.sin(3 * g))
    cos_w = np.clip(-np.tan(lat) * np.tan(decl), -1.0, 1.0)
    return 24.0 * np.arccos(cos_w) / np.pi


def _to_celsius(t: np.ndarray, units: str) -> np.ndarray:
    t = np.asarray(t, float)
    if units == "auto":
        units = "K" if np.nanmedian(t) > 150 else "C"
    if units == "K":
        return t - 273.15
    if units == "C":
        return t
    raise DataError(f"temperature units must be 'K', 'C' or 'auto', got {units!r}")


def daily_gdd(tmean: Any, base: float = 10.0, cap: float | None = 30.0,
              units: str = "auto") -> np.ndarray:
    """Growing degree days of daily mean temperatures: max(0, min(T, cap) − base) (°C·d)."""
    t = _to_celsius(tmean, units)
    if cap is not None:
        t = np.minimum(t, cap)
    return np.maximum(t - base, 0.0)


class GriddedField:
    """Interpolate a gridded variable: bilinear in lat/lon, linear in time (exact at nodes).

    ``data`` is a standardised dataset (see :func:`cropscope.weather.open_weather`) or a
    DataArray with ``latitude``, ``longitude`` and optionally ``time`` (datetime64).
    """

    def __init__(self, data: xr.Dataset | xr.DataArray) -> None:
        from cropscope.weather.readers import standardize

        self.ds = standardize(data)

    def sample(self, variable: str, lat: Any, lon: Any, time: Any = None) -> np.ndarray:
        if variable not in self.ds:
            raise DataError(f"variable {variable!r} not in {sorted(map(str, self.ds.data_vars))}")
        da = self.ds[variable]
        lat, lon = np.broadcast_arrays(np.asarray(lat, float), np.asarray(lon, float))
        la = da["latitude"].values
        lo = da["longitude"].values
        vals = da.values
        extra = [d for d in da.dims if d not in ("time", "latitude", "longitude")]
        if extra:
            raise DataError(f"select {extra} first (e.g. ds.sel(level=850))")
        iy = np.interp(lat, la, np.arange(la.size))
        ix, wrap = lon_index(lo, lon)
        if "time" in da.dims:
            if time is None:
                raise DataError("this field has a time axis; give times")
            tt = da["time"].values.astype("datetime64[s]").astype(float)
            tq = np.broadcast_to(np.asarray(time).astype("datetime64[s]").astype(float),
                                 lat.shape)
            it = np.interp(tq, tt, np.arange(tt.size))
            t0 = np.clip(np.floor(it).astype(int), 0, max(tt.size - 2, 0))
            ft = np.clip(it - t0, 0, 1)
            t1 = np.minimum(t0 + 1, tt.size - 1)
            return ((1 - ft) * _bilinear(vals, t0, iy, ix, wrap)
                    + ft * _bilinear(vals, t1, iy, ix, wrap))
        return _bilinear(vals[None], np.zeros(lat.shape, int), iy, ix, wrap)


def lon_index(lo: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, bool]:
    """Fractional column index of longitudes (any convention) on an ascending grid."""
    d = lo[1] - lo[0]
    wrap = abs(lo.size * d - 360.0) < 1e-6 * 360
    ix = ((np.asarray(lon) - lo[0]) % 360.0) / d
    if not wrap:
        ix = np.clip(ix, 0, lo.size - 1)
    return ix, wrap


def _bilinear(vals: np.ndarray, t: np.ndarray, iy: np.ndarray, ix: np.ndarray,
              wrap: bool) -> np.ndarray:
    ny, nx = vals.shape[-2:]
    y0 = np.clip(np.floor(iy).astype(int), 0, ny - 2)
    fy = iy - y0
    x0 = np.floor(ix).astype(int)
    fx = ix - x0
    if wrap:
        x0, x1 = x0 % nx, (x0 + 1) % nx
    else:
        x0 = np.clip(x0, 0, nx - 2)
        fx = ix - x0
        x1 = x0 + 1
    v = vals
    return ((1 - fy) * (1 - fx) * v[t, y0, x0] + (1 - fy) * fx * v[t, y0, x1]
            + fy * (1 - fx) * v[t, y0 + 1, x0] + fy * fx * v[t, y0 + 1, x1])


@dataclass
class ThermalTime:
    """Thermal time at each observation: cumulative GDD since ``start`` and per-step GDD."""

    cumulative: np.ndarray  #: [N, T] °C·d since the season start
    increment: np.ndarray  #: [N, T] °C·d accumulated since the previous step
    start: np.ndarray  #: [N] season start dates


def _coords(ts: Any) -> tuple[np.ndarray, np.ndarray]:
    meta = ts.meta
    lat_col = next((c for c in ("latitude", "lat", "y") if c in meta.columns), None)
    lon_col = next((c for c in ("longitude", "lon", "x") if c in meta.columns), None)
    if lat_col is None or lon_col is None:
        raise DataError("thermal time needs per-sample longitude/latitude columns in meta")
    return meta[lat_col].to_numpy(float), meta[lon_col].to_numpy(float)


def thermal_time(ts: Any, field: FieldSource, variable: str = "t2m", base: float = 10.0,
                 cap: float | None = 30.0, start: Any = None, units: str = "auto",
                 ) -> ThermalTime:
    """GDD accumulated day by day from the season start to every observation date.

    ``ts`` is a :class:`cropscope.data.TimeSeriesSet` with dates and ``meta`` longitude /
    latitude. The daily mean temperature is sampled from ``field`` at 12:00 UTC each day.
    ``start`` (date, or one per sample) defaults to each sample's first date.
    """
    dates = ts.per_sample_dates
    if dates is None:
        raise DataError("thermal time needs calendar dates")
    lat, lon = _coords(ts)
    n, _t = dates.shape
    first = dates.min(axis=1)
    st = first if start is None else np.broadcast_to(
        np.asarray(start).astype("datetime64[D]"), (n,))
    if np.any(st > first):
        raise DataError("the season start must not be after the first observation")
    n_days = int((dates.max(axis=1) - st).astype(int).max()) + 1
    days = st[:, None] + np.arange(n_days).astype("timedelta64[D]")  # [N, D]
    times = days.astype("datetime64[s]") + np.timedelta64(12 * 3600, "s")
    temp = field.sample(variable, np.repeat(lat, n_days), np.repeat(lon, n_days),
                        times.reshape(-1)).reshape(n, n_days)
    gdd = daily_gdd(temp, base, cap, units)
    cum = np.concatenate([np.zeros((n, 1)), np.cumsum(gdd, axis=1)], axis=1)  # GDD before day d
    idx = (dates - st[:, None]).astype(int)  # day index of each observation
    cumulative = np.take_along_axis(cum, idx, axis=1)
    increment = np.diff(cumulative, axis=1, prepend=0.0)
    return ThermalTime(cumulative.astype(np.float32), increment.astype(np.float32), st)


def thermal_time_from_series(
    ts: Any,
    band: str = "AGERA5-TMEAN",
    scale: float = 1.0,
    offset: float = 0.0,
    units: str = "auto",
    base: float = 10.0,
    cap: float | None = 30.0,
    start: Any = None,
    gaps: str = "interpolate",
    at: str = "start",
    valid_range: tuple[float, float] = (-90.0, 60.0),
) -> ThermalTime:
    """Thermal time from a per-sample, per-step mean temperature band of ``ts``.

    ``ts`` is a :class:`cropscope.data.TimeSeriesSet` with calendar dates (shared ``[T]``
    or per sample ``[N, T]``, increasing) and a band ``band`` holding the mean air
    temperature of each step's period, e.g. AgERA5 ``AGERA5-TMEAN`` of the WorldCereal
    extractions. The band is read as ``value * scale + offset`` in ``units`` (``"K"``,
    ``"C"`` or ``"auto"``: kelvin when the median exceeds 150). For WorldCereal's
    ``AGERA5-TMEAN`` use ``scale=0.01, units="K"``: the uint16 values (24,900–30,100 in the
    French LPIS files, 65535 = nodata) divided by 100 are 249–301 K, i.e. −24…28 °C, with
    the minimum in January and the maximum in July (Corsica, September 2021: 294.5 K =
    21.4 °C); °C × 100 or °C × 1000 would give impossible or year-round hot values.

    Each date labels the *start* of the period its value averages (WorldCereal's
    convention: ``2021-09-01`` of a monthly table is September). A step's length is the
    number of days to the sample's next date; the last step takes the length of the one
    before. Daily values are not available, so a step's GDD is approximated as
    ``daily_gdd(step mean) × length`` (°C·d): exact while every day of the step lies
    between ``base`` and ``cap``, an underestimate when days cross ``base`` (GDD is convex
    in T), which matters more for monthly than for dekadal steps and for ``base=10`` than
    ``base=0``.

    Gaps are NaN values in the band (``ts.mask`` is *not* used: it flags the optical
    bands' clouds, during which the temperature is still known) and values outside
    ``valid_range`` (°C, physically implausible, e.g. a 0 that stands for a missing
    extraction). ``gaps="interpolate"`` fills them linearly in time from the sample's own
    valid steps (leading and trailing gaps take the nearest valid value);
    ``gaps="raise"`` refuses them.

    ``start`` (a date, or one per sample; default: each sample's first date) is the season
    start from which thermal time is counted; it must lie within the covered periods (no
    temperature is known before the first date). Within a step the GDD accumulates at a
    constant rate. ``at="start"`` gives the thermal time at each date (the sum over the
    complete periods before it), ``at="middle"`` at the middle of each step's period (for
    composites that stand for the whole period). Values before ``start`` are negative.

    Returns :class:`ThermalTime` with ``cumulative`` and ``increment`` float32 ``[N, T]``
    (°C·d; ``increment[:, 0] = cumulative[:, 0]``) and ``start`` datetime64[D] ``[N]``.
    Raises :class:`DataError` for a missing band, no dates, fewer than two steps,
    unsorted dates, a sample without any valid temperature, gaps with ``gaps="raise"``, a
    start outside the covered periods, or unknown options.
    """
    if gaps not in ("interpolate", "raise"):
        raise DataError(f"gaps must be 'interpolate' or 'raise', got {gaps!r}")
    if at not in ("start", "middle"):
        raise DataError(f"at must be 'start' or 'middle', got {at!r}")
    dates = ts.per_sample_dates
    if dates is None:
        raise DataError("thermal time needs calendar dates (this set has integer steps)")
    raw = ts.band(band).astype(np.float64)  # DataError naming the bands when missing
    n, t = raw.shape
    if t < 2:
        raise DataError("thermal time from step means needs at least two time steps (the "
                        "step lengths come from the dates)")
    day = dates.astype("datetime64[D]").astype(np.int64)  # [N, T] days since 1970
    if np.any(np.diff(day, axis=1) <= 0):
        raise DataError("dates must be strictly increasing within every sample")
    if not np.isfinite(raw).any():
        raise DataError(f"band {band!r} has no valid temperature (all NaN or nodata)")
    temp = _to_celsius(raw * scale + offset, units)
    lo, hi = valid_range
    with np.errstate(invalid="ignore"):
        bad = np.isfinite(temp) & ((temp < lo) | (temp > hi))
    if bad.any():
        log.info("%s: %d value(s) outside %s °C treated as gaps", band, int(bad.sum()),
                 valid_range)
        temp = np.where(bad, np.nan, temp)
    ok = np.isfinite(temp)
    ids = np.asarray(ts.ids) if ts.ids is not None else np.arange(n)
    if not ok.any():
        raise DataError(f"band {band!r} has no temperature within {valid_range} °C; "
                        "check scale, offset and units")
    empty = ~ok.any(axis=1)
    if empty.any():
        raise DataError(f"band {band!r}: {int(empty.sum())} sample(s) without any valid "
                        f"temperature, e.g. {', '.join(map(str, ids[empty][:3]))}; drop them "
                        "first")
    if not ok.all():
        if gaps == "raise":
            i = int(np.flatnonzero(~ok.all(axis=1))[0])
            raise DataError(f"band {band!r} has {int((~ok).sum())} gap(s), e.g. sample "
                            f"{ids[i]} at {dates[i][~ok[i]][0]}; use gaps='interpolate'")
        for j in np.flatnonzero(~ok.all(axis=1)):
            temp[j] = np.interp(day[j], day[j, ok[j]], temp[j, ok[j]])
    length = np.empty((n, t), np.float64)
    length[:, :-1] = np.diff(day, axis=1)
    length[:, -1] = length[:, -2]
    rate = daily_gdd(temp, base, cap, units="C")  # °C·d per day within each step
    step_gdd = rate * length
    at_date = np.concatenate([np.zeros((n, 1)), np.cumsum(step_gdd, axis=1)[:, :-1]], axis=1)
    query = at_date + (0.5 * step_gdd if at == "middle" else 0.0)
    if start is None:
        st = dates[:, 0].astype("datetime64[D]")
        origin = np.zeros(n)
    else:
        st = np.broadcast_to(np.asarray(start).astype("datetime64[D]"), (n,)).copy()
        sd = st.astype(np.int64)
        if np.any(sd < day[:, 0]) or np.any(sd > day[:, -1] + length[:, -1]):
            raise DataError(f"the season start must lie within the covered periods "
                            f"({dates[0, 0]} … for the first sample); no temperature is "
                            "known outside them")
        k = np.clip((day <= sd[:, None]).sum(axis=1) - 1, 0, t - 1)
        rows = np.arange(n)
        origin = at_date[rows, k] + rate[rows, k] * (sd - day[rows, k])
    cumulative = query - origin[:, None]
    increment = np.diff(cumulative, axis=1, prepend=0.0)
    return ThermalTime(cumulative.astype(np.float32), increment.astype(np.float32), st)


COVARIATE_BANDS = ("gdd_cum", "gdd_step", "day_length")


def add_covariates(ts: Any, tt: ThermalTime,
                   bands: Sequence[str] = ("gdd_cum", "day_length")) -> Any:
    """A copy of ``ts`` with extra covariate bands (the mask of ``ts`` is kept).

    ``bands`` picks from ``gdd_cum`` (``tt.cumulative``, °C·d), ``gdd_step``
    (``tt.increment``, °C·d) and ``day_length`` (hours, needs dates and meta latitude).
    """
    unknown = [b for b in bands if b not in COVARIATE_BANDS]
    if unknown or not bands:
        raise DataError(f"covariate bands must be some of {list(COVARIATE_BANDS)}, got "
                        f"{list(bands)}")
    if tt.cumulative.shape != ts.values.shape[:2]:
        raise DataError(f"thermal time is {tt.cumulative.shape}, the series are "
                        f"{ts.values.shape[:2]}")
    extra: list[np.ndarray] = []
    for name in bands:
        if name == "gdd_cum":
            extra.append(np.asarray(tt.cumulative, np.float32))
        elif name == "gdd_step":
            extra.append(np.asarray(tt.increment, np.float32))
        else:
            lat, _ = _coords(ts)
            if ts.day_of_year is None:
                raise DataError("day length needs calendar dates")
            doy = np.broadcast_to(ts.day_of_year, tt.cumulative.shape)
            extra.append(day_length(lat[:, None], doy).astype(np.float32))
    values = np.concatenate([ts.values, np.stack(extra, axis=2)], axis=2)
    return ts.replace(values=values, bands=[*ts.bands, *bands], mask=ts.mask)


def align_on_thermal_time(ts: Any, tt: ThermalTime, step: float = 50.0,
                          n_steps: int | None = None) -> Any:
    """Resample every series onto a common thermal-time axis (0, step, 2·step, … °C·d).

    Linear interpolation between valid observations; points beyond a series' range are NaN.
    Returns a set without calendar dates; ``meta['thermal_time_step']`` records ``step``.
    """
    if n_steps is None:
        n_steps = int(np.nanmax(tt.cumulative) // step) + 1
    axis = np.arange(n_steps) * step
    n, _, c = ts.values.shape
    out = np.full((n, n_steps, c), np.nan, np.float32)
    for i in range(n):
        ok = ts.mask[i]
        x = tt.cumulative[i, ok]
        if x.size < 2:
            continue
        x, first = np.unique(x, return_index=True)
        for b in range(c):
            y = ts.values[i, ok, b][first]
            out[i, :, b] = np.interp(axis, x, y, left=np.nan, right=np.nan)
    meta = ts.meta.copy()
    meta["thermal_time_step"] = step
    return ts.replace(values=out, dates=None, meta=meta)
