"""Reading a map window straight into the layout pixel models predict from.

A window of ``h x w`` pixels becomes one float32 array ``values [C, T, h*w]``: band-major,
then time, pixels last, bands in the model's order. Row ``c * T + t`` is feature
``<band c>_t<t>`` of the ``values`` features for every pixel, so ``values.reshape(C*T, N).T``
*is* their feature table (``[N, D]``, column-major) without a copy, and every step of the
way (decoding, masks, gap filling in time, standardising) runs over contiguous rows of
pixels. With it come ``mask [T, h*w]`` (the valid steps: every band finite) and the dates.
(A pixel-major layout ``[h*w, C, T]`` needs a transposing write of every value, which numpy
does at a tenth of the speed of a contiguous one.)

Raster files (:class:`~cropscope.data.readers.cube.CubeSource`) are decoded once from the
raw window of each file into that layout: nodata becomes NaN and the scale (and offset) are
applied in float64 and rounded to float32, so every value equals
``CubeSource.read(window)`` bit for bit, without the float32 cube ``(time, band, y, x)``,
its float64 copies and the xarray wrapping in between (together five times the raw read).
Other sources are read with their own ``read`` and reordered (one contiguous copy).

Buffers are reused from window to window (a pool, thread-safe): a 512 x 512 window of
12 dates x 10 bands is 126 MB, and allocating it anew costs its page faults every time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cropscope.data.readers.cube import _decode_rows
from cropscope.errors import DataError

__all__ = ["PixelReader", "PixelWindow"]


@dataclass
class PixelWindow:
    """One window's pixel series: ``values [C, T, h*w]`` float32 (NaN = missing),
    ``mask [T, h*w]`` (valid steps), ``dates [T]`` and the window's ``shape``."""

    values: np.ndarray
    mask: np.ndarray
    dates: np.ndarray | None
    shape: tuple[int, int]
    _pool: _BufferPool | None = field(default=None, repr=False)
    _buffer: np.ndarray | None = field(default=None, repr=False)

    def release(self) -> None:
        """Hand the buffer back for the next window (the arrays must not be used after)."""
        if self._pool is not None and self._buffer is not None:
            self._pool.put(self._buffer)
        self._buffer = None


class _BufferPool:
    """Flat float32 buffers handed out and back; at most ``keep`` are kept."""

    def __init__(self, keep: int = 4) -> None:
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()
        self.keep = keep

    def get(self, size: int) -> np.ndarray:
        with self._lock:
            for i, buf in enumerate(self._free):
                if buf.size >= size:
                    return self._free.pop(i)
        return np.empty(size, dtype=np.float32)

    def put(self, buf: np.ndarray) -> None:
        with self._lock:
            if len(self._free) < self.keep:
                self._free.append(buf)


@dataclass
class _Group:
    """Bands ``c`` of one date that come from consecutive bands ``i`` of one file ``k``."""

    layer: int
    bands: slice  # model bands
    file_bands: slice  # 0-based bands of the file
    factor: np.ndarray  # [g, 1] float64
    offset: np.ndarray  # [g, 1] float64
    nodata: np.ndarray | None  # [g, 1] float64, None: no nodata


def _raster_plan(source: Any, bands: list[str]) -> tuple[Any, list[list[_Group]]] | None:
    """The raster source and its decode groups per date, for a plain :class:`CubeSource`
    (perhaps with renamed bands); ``None`` for any other source."""
    from cropscope.data.readers.cube import CubeSource, RenamedBandsCube

    names = list(bands)
    if type(source) is RenamedBandsCube and type(source.source) is CubeSource:
        rename = {new: old for old, new in zip(source.source.bands, source.bands, strict=True)}
        names = [rename.get(b, b) for b in names]
        source = source.source
    if type(source) is not CubeSource:
        return None
    try:
        columns = [source.bands.index(b) for b in names]
    except ValueError:
        return None
    plan: list[list[_Group]] = []
    for t, row in enumerate(source._plan):
        groups: list[_Group] = []
        start = 0
        while start < len(columns):  # runs of model bands read from consecutive file bands
            k, i = row[columns[start]]
            stop = start + 1
            while stop < len(columns) and row[columns[stop]] == (k, i + stop - start):
                stop += 1
            layer = source._layers[k]
            scale = [source._factors[t][c] for c in columns[start:stop]]
            nds = [source._nodata if source._nodata is not None else layer["nodata"][i + j]
                   for j in range(stop - start)]  # fmt: skip
            factor = np.array([[f] for f, _ in scale], dtype=np.float64)
            offset = np.array([[o] for _, o in scale], dtype=np.float64)
            groups.append(_Group(
                layer=k, bands=slice(start, stop), file_bands=slice(i, i + stop - start),
                factor=factor, offset=offset,
                nodata=None if any(v is None for v in nds)
                else np.array([[float(v)] for v in nds], dtype=np.float64),
            ))  # fmt: skip
            if any(v is None for v in nds) and not all(v is None for v in nds):
                return None  # mixed nodata within a run: left to the generic path
            start = stop
        plan.append(groups)
    return source, plan


class PixelReader:
    """Reads windows of ``source`` as :class:`PixelWindow` with the model's ``bands``.

    Each reading thread reads the files' raw windows into buffers of its own, kept from
    window to window; a window's values buffer (from a shared, locked pool) may be used by
    another thread until it is released. Whether the source's open files may be shared by
    threads is the source's matter (a map job keeps one source open per thread). Picklable
    (sent to Dask workers; the buffers stay behind).
    """

    def __init__(self, source: Any, bands: list[str]) -> None:
        self.source = source
        self.bands = list(bands)
        found = _raster_plan(source, self.bands)
        #: the plain raster source and its decode groups per date (None: another source)
        self.raster: Any = None if found is None else found[0]
        self.plan: list[list[_Group]] | None = None if found is None else found[1]
        self._pool = _BufferPool()
        self._local = threading.local()  # each reading thread's raw-window buffers

    @property
    def decodes_raw(self) -> bool:
        """Whether windows are decoded from the raw rasters (no xarray cube in between)."""
        return self.plan is not None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = None
        state["_local"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pool = _BufferPool()
        self._local = threading.local()

    def raw_buffers(self) -> dict[int, np.ndarray]:
        """This thread's buffers for each file's raw window, reused from window to window
        (a Dask worker may run several reading threads on one reader)."""
        buffers: dict[int, np.ndarray] | None = getattr(self._local, "raw", None)
        if buffers is None:
            buffers = self._local.raw = {}
        return buffers

    def read(self, window: Any) -> PixelWindow:
        """The pixels of ``window`` (a rasterio ``Window`` inside the grid)."""
        height, width = int(window.height), int(window.width)
        n = height * width
        buffer = self._pool.get(n * len(self.bands) * len(self.source.times))
        try:
            dates: np.ndarray | None
            if self.plan is not None:
                values, mask = self._decode_raster(window, buffer, n)
                dates = np.asarray(self.source.times, dtype="datetime64[ns]").astype(
                    "datetime64[D]")
            else:
                values, mask, dates = self._reorder_cube(window, buffer, n)
        except BaseException:
            self._pool.put(buffer)
            raise
        return PixelWindow(values, mask, dates, (height, width), self._pool, buffer)

    def _decode_raster(self, window: Any, buffer: np.ndarray, n: int
                       ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        assert self.plan is not None and self.raster is not None
        # {k: (raw [count, h, w], outside [h, w])}, in this reader's reused raw buffers
        layers = self.raster._read_layers(window, self.raw_buffers())
        n_times, n_bands = len(self.plan), len(self.bands)
        values = buffer[: n_bands * n_times * n].reshape(n_bands, n_times, n)
        for t, groups in enumerate(self.plan):
            for g in groups:
                raw, outside = layers[g.layer]
                dst = values[g.bands, t]  # [g, n], contiguous rows
                _decode_rows(raw.reshape(raw.shape[0], n)[g.file_bands], g.nodata, g.factor,
                             g.offset, dst)  # fmt: skip
                if outside is not None:
                    np.copyto(dst, np.float32(np.nan), where=outside.reshape(1, n))
        return values, _valid_steps(values)

    def _reorder_cube(self, window: Any, buffer: np.ndarray, n: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:  # fmt: skip
        import gc

        cube = self.source.read(window)
        if list(cube["band"].values) != self.bands:
            cube = cube.sel(band=self.bands)
        if tuple(cube.dims) != ("time", "band", "y", "x"):
            raise DataError(f"cube must have dims (time, band, y, x), got {cube.dims}")
        data = np.asarray(cube.values, dtype=np.float32)  # [T, C, h, w]
        dates = cube["time"].values.astype("datetime64[D]")
        del cube
        gc.collect()  # the cube's xarray/rioxarray reference cycles, at once (bounded memory)
        n_times, n_bands = data.shape[:2]
        values = buffer[: n_bands * n_times * n].reshape(n_bands, n_times, n)
        values[...] = data.reshape(n_times, n_bands, n).transpose(1, 0, 2)
        return values, _valid_steps(values), dates


def _valid_steps(values: np.ndarray) -> np.ndarray:
    """``mask [T, N]``: the steps where every band of ``values [C, T, N]`` is finite."""
    mask = np.isfinite(values[0])
    for c in range(1, values.shape[0]):
        mask &= np.isfinite(values[c])
    return mask
