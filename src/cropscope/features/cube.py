"""Temporal compositing of a cube source on the fly, window by window.

:class:`CompositedCube` wraps any :class:`~cropscope.data.readers.cube.CubeLike` source
(typically a :class:`~cropscope.data.readers.masks.MaskedCube`, so clouds are gone first)
and presents it on a regular time grid (every ``step`` days or calendar month): each
window's pixel series go through the median compositing of
:func:`~cropscope.features.compositing.composite_median`, so the map sees the same
composites a model was trained on. Steps without a valid observation are NaN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.data.readers.cube import CubeLike, CubeWrapper, make_cube
from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.features.compositing import composite_median, parse_step, regular_grid

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["CompositedCube"]


def _day(value: Any, what: str) -> np.datetime64:
    """``value`` as a day, or a :class:`DataError` naming the option."""
    try:
        return np.datetime64(value, "D")
    except (ValueError, TypeError):
        raise DataError(f"{what} must be a date (YYYY-MM-DD), got {value!r}") from None


class CompositedCube(CubeWrapper):
    """``source`` median-composited on a regular grid of ``step`` (days or ``"monthly"``)
    from ``start`` (default: its first date) to ``end`` (default: its last date)."""

    def __init__(
        self, source: CubeLike, step: int | str, *, start: Any = None, end: Any = None
    ) -> None:
        if not source.times:
            raise DataError("the source has no dates to composite")
        super().__init__(source)
        self.step = parse_step(step)
        days = np.array(source.times, dtype="datetime64[D]")
        self.start = _day(start, "start") if start is not None else days.min()
        self.end = _day(end, "end") if end is not None else days.max()
        self._grid = regular_grid(self.start, self.end, self.step)

    @property
    def times(self) -> list[np.datetime64]:
        """The start date of each compositing window."""
        return list(self._grid)

    def read(self, window: Any = None) -> xr.DataArray:
        """The composites of ``window`` as ``(time, band, y, x)`` (time = window starts)."""
        cube = self.source.read(window)
        t, c, h, w = cube.shape
        values = np.asarray(cube.values, dtype=np.float32).reshape(t, c, h * w).transpose(2, 0, 1)
        series = TimeSeriesSet(
            values=np.ascontiguousarray(values),
            bands=list(self.bands),
            dates=np.array(self.source.times, dtype="datetime64[D]"),
        )
        out = composite_median(series, self.step, start=self.start, end=self.end)
        if out.values.shape[1] != len(self._grid):  # pragma: no cover - guards the contract
            raise DataError("compositing gave an unexpected number of windows")
        data = out.values.transpose(1, 2, 0).reshape(len(self._grid), c, h, w)
        return make_cube(data, self.times, self.bands, cube.rio.transform(), self.crs,
                         cube.attrs.get("scale_factor"))  # fmt: skip
