"""Time windows of coarse inputs for supervised downscaling, and the reference interpolations.

The supervised setting (DeepPhysiNet, ``../shared/reference/deepphysinet.md`` §1.4) reads a
*coarse input*: every ``K``-th grid point of a fine file (rows and columns from the first,
latitude ascending) at every *input step* (times whose hour since 1970-01-01T00 is a multiple
of ``input_step`` hours, i.e. 00/06/12/18 UTC for 6 h), and predicts the *fine* field (every
grid point, every time of the file).

Shapes and units (numpy only; torch lives in :mod:`cropscope.weather.supervised`):

- a fine field is ``[T, V, ny, nx]`` in the file's units (K for t2m), latitude ascending;
- coarse steps are ``[S, V, ny_c, nx_c]`` at ``S`` input-step times;
- times are ``datetime64[s]`` arrays; offsets are float hours.

Knots. The model and the reference interpolations read the coarse steps on a regular *knot*
axis: the real steps with ``pad`` copies of the first step before them and of the last step
after them (edge replication), so every time of the file lies in ``pad`` complete windows
and nothing after the last available step is ever invented: after it the inputs are held
constant, exactly like the clamped linear interpolation the baselines use.

Reference interpolations (the contract of ``cropscope weather evaluate --run``):
``bilinear_linear`` / ``bicubic_linear`` = scipy ``RegularGridInterpolator`` (linear / cubic)
of each coarse step onto the fine grid, linear in time between steps (held constant beyond
the first/last step); ``hour_bias`` = ``bilinear_linear`` + the mean residual per pixel and
hour of day over the training period. They reproduce the numbers of the data set's
``SOURCE.md`` (0.658 / 0.723 / 0.549 K on the ERA5 UK t2m file).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cropscope.errors import DataError

__all__ = [
    "StepAxis",
    "baseline_fields",
    "check_time_axis",
    "heldout_mask",
    "hour_bias_table",
    "hour_of_day",
    "parse_time",
    "spatial_interp",
    "step_axis",
]

HOUR = 3600


def parse_time(text: str | np.datetime64, what: str) -> np.datetime64:
    """An ISO time (``2019-03-10T23``) → ``datetime64[s]``; :class:`DataError` otherwise."""
    try:
        value = np.datetime64(np.asarray(text).astype("datetime64[s]").item(), "s")
    except (ValueError, TypeError):
        raise DataError(f"{what} must be an ISO time such as 2019-03-10T23, got {text!r}"
                        ) from None
    if np.isnat(value):
        raise DataError(f"{what} must be an ISO time, got {text!r}")
    return value


def check_time_axis(times: np.ndarray) -> int:
    """The regular time step of ``times`` in seconds (≥ 2 ascending, equally spaced times)."""
    times = np.asarray(times).astype("datetime64[s]")
    if times.ndim != 1 or times.size < 2:
        raise DataError("the file needs a time axis with at least two times")
    d = np.diff(times.astype(np.int64))
    if not (np.all(d > 0) and np.all(d == d[0])):
        raise DataError("the file's times must be ascending and equally spaced")
    return int(d[0])


def hour_of_day(times: np.ndarray) -> np.ndarray:
    """UTC hour of day (0–23) of ``datetime64`` times."""
    secs = np.asarray(times).astype("datetime64[s]").astype(np.int64)
    return ((secs // HOUR) % 24).astype(int)


@dataclass(frozen=True)
class StepAxis:
    """Input steps of a file on a padded knot axis.

    ``step_index`` are the file indices of the real steps; knot ``i`` is at
    ``origin + i * step_h`` hours; real steps are knots ``pad … pad + n_steps - 1``.
    """

    origin: np.datetime64  #: time of knot 0 (datetime64[s])
    step_h: int  #: input step, hours
    pad: int  #: replicated knots on each side
    step_index: np.ndarray  #: [S] file indices of the input steps

    @property
    def n_steps(self) -> int:
        return int(self.step_index.size)

    @property
    def n_knots(self) -> int:
        return self.n_steps + 2 * self.pad

    def knot_source(self) -> np.ndarray:
        """[n_knots] index into the real steps (0 … S-1) of each knot (edges replicated)."""
        return np.clip(np.arange(self.n_knots) - self.pad, 0, self.n_steps - 1)

    def hours(self, times: np.ndarray) -> np.ndarray:
        """Float hours of ``times`` since the origin (knot 0)."""
        t = np.asarray(times).astype("datetime64[s]").astype(np.int64)
        return (t - self.origin.astype(np.int64)) / HOUR

    def step_times(self, times: np.ndarray) -> np.ndarray:
        return np.asarray(times)[self.step_index]


def step_axis(times: np.ndarray, input_step_h: float, pad: int,
              until: np.datetime64 | None = None) -> StepAxis:
    """Input steps of a file whose times are ``times``; ``until``: ignore later steps.

    Refuses (:class:`DataError`) an input step that is not a whole number of hours, a file
    time step that does not divide it, and fewer than two steps.
    """
    dt = check_time_axis(times)
    if not float(input_step_h) > 0:
        raise DataError(f"--input-step must be positive, got {input_step_h!r}")
    if abs(float(input_step_h) * HOUR / dt - round(float(input_step_h) * HOUR / dt)) > 1e-9:
        raise DataError(f"the file's time step ({dt / HOUR:g} h) does not divide "
                        f"--input-step {float(input_step_h):g} h")
    if float(input_step_h) != int(input_step_h):
        raise DataError(f"--input-step must be a whole number of hours, got {input_step_h!r}")
    step_s = int(input_step_h) * HOUR
    secs = np.asarray(times).astype("datetime64[s]").astype(np.int64)
    ok = secs % step_s == 0
    if until is not None:
        ok &= secs <= until.astype("datetime64[s]").astype(np.int64)
    idx = np.nonzero(ok)[0]
    if idx.size < 2:
        raise DataError(f"fewer than two input steps (every {int(input_step_h)} h) in the "
                        "file" + (" up to --until" if until is not None else ""))
    origin = np.datetime64(int(secs[idx[0]] - pad * step_s), "s")
    return StepAxis(origin, int(input_step_h), pad, idx)


def heldout_mask(ny: int, nx: int, k: int) -> np.ndarray:
    """[ny, nx] True at the fine points that are not coarse input points."""
    held = np.ones((ny, nx), bool)
    held[::k, ::k] = False
    return held


def spatial_interp(coarse: np.ndarray, clat: np.ndarray, clon: np.ndarray,
                   lat: np.ndarray, lon: np.ndarray, method: str) -> np.ndarray:
    """scipy ``RegularGridInterpolator`` (``linear`` or ``cubic``) of ``[S, V, ny_c, nx_c]``
    onto the grid ``lat × lon`` → ``[S, V, len(lat), len(lon)]`` (no extrapolation needed:
    the fine grid lies inside the coarse one)."""
    from scipy.interpolate import RegularGridInterpolator

    la, lo = np.meshgrid(lat, lon, indexing="ij")
    pts = np.stack([la.ravel(), lo.ravel()], -1)
    s, v = coarse.shape[:2]
    out = np.empty((s, v, lat.size, lon.size))
    for i in range(s):
        for j in range(v):
            f = RegularGridInterpolator((clat, clon), coarse[i, j], method=method,
                                        bounds_error=False, fill_value=None)
            out[i, j] = f(pts).reshape(la.shape)
    return out


def _linear_in_time(fields: np.ndarray, step_h: np.ndarray, query_h: np.ndarray
                    ) -> np.ndarray:
    """Linear interpolation of ``fields [S, ...]`` at times ``step_h`` onto ``query_h``;
    constant before the first and after the last step (``np.interp`` clamping)."""
    pos = np.interp(query_h, step_h, np.arange(step_h.size, dtype=float))
    i0 = np.clip(np.floor(pos).astype(int), 0, max(step_h.size - 2, 0))
    i1 = np.minimum(i0 + 1, step_h.size - 1)
    w = (pos - i0).reshape(-1, *([1] * (fields.ndim - 1)))
    return (1 - w) * fields[i0] + w * fields[i1]


def baseline_fields(coarse_steps: np.ndarray, step_h: np.ndarray, clat: np.ndarray,
                    clon: np.ndarray, lat: np.ndarray, lon: np.ndarray, query_h: np.ndarray,
                    methods: tuple[str, ...] = ("linear", "cubic")) -> dict[str, np.ndarray]:
    """Spatial interpolation (per ``methods``) × linear in time: ``{method: [Q, V, ny, nx]}``."""
    out = {}
    for m in methods:
        sp = spatial_interp(coarse_steps, clat, clon, lat, lon, m)
        out[m] = _linear_in_time(sp, np.asarray(step_h, float), np.asarray(query_h, float))
    return out


def hour_bias_table(fine: np.ndarray, bilinear_linear: np.ndarray, hours_of_day: np.ndarray
                    ) -> np.ndarray:
    """Mean residual ``fine − bilinear_linear`` per hour of day: ``[24, V, ny, nx]``
    (zero for an hour of day that never occurs)."""
    res = np.asarray(fine, float) - bilinear_linear
    table = np.zeros((24, *res.shape[1:]))
    for h in range(24):
        sel = hours_of_day == h
        if sel.any():
            table[h] = res[sel].mean(axis=0)
    return table


def reference_predictions(fine: np.ndarray, times: np.ndarray, coarsen: int, step_h: int,
                          lat: np.ndarray, lon: np.ndarray, scored: np.ndarray,
                          train: np.ndarray, hour_bias: np.ndarray | None = None,
                          ) -> tuple[dict[str, np.ndarray], str]:
    """The three references at the ``scored`` times (boolean mask over ``times``):
    ``bilinear_linear``, ``bicubic_linear`` and ``hour_bias`` (each ``[Q, V, ny, nx]``).

    ``fine [T, V, ny, nx]`` on ``lat``/``lon`` (ascending); the coarse input is every
    ``coarsen``-th point at every input step of the file. The hour-of-day table is learned
    on the ``train`` times of this file (residual of bilinear × linear computed with every
    input step of the file, as the data set's ``SOURCE.md`` does); when the file holds none
    of them, ``hour_bias`` (the table stored with a run) is used. Returns the predictions and
    where the table came from.
    """
    axis = step_axis(times, step_h, 0)
    steps = np.asarray(fine)[axis.step_index][:, :, ::coarsen, ::coarsen]
    clat, clon = lat[::coarsen], lon[::coarsen]
    step_hours = axis.hours(axis.step_times(times))
    ref = baseline_fields(steps, step_hours, clat, clon, lat, lon, axis.hours(times[scored]))
    if train.any():
        bl = baseline_fields(steps, step_hours, clat, clon, lat, lon, axis.hours(times[train]),
                             ("linear",))["linear"]
        table = hour_bias_table(fine[train], bl, hour_of_day(times[train]))
        source = "file (training period)"
    elif hour_bias is not None:
        table, source = np.asarray(hour_bias, float), "run (training period)"
    else:
        raise DataError("no training times in the file to learn the hour-of-day bias from")
    return {"bilinear_linear": ref["linear"], "bicubic_linear": ref["cubic"],
            "hour_bias": ref["linear"] + table[hour_of_day(times[scored])]}, source
