"""Window plans: cover a ``(height, width)`` grid with tiles, optionally with a halo.

Each :class:`MapWindow` has a *core* (the pixels it writes; cores tile the grid without
overlap) and a *read* window: the core grown by ``halo`` pixels on every side, clipped at
the grid's edges, for models that need spatial context. Windows are numbered row-major.

Used by the map job (:mod:`cropscope.mapping.job`), by parcel statistics and by sample
extraction (:mod:`cropscope.data.extract`), which reads only the windows its labels touch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cropscope.errors import DataError

if TYPE_CHECKING:
    from rasterio.windows import Window

__all__ = ["MapWindow", "plan_windows"]


@dataclass(frozen=True)
class MapWindow:
    """One tile of a plan: its core (written) and its read window (core + halo)."""

    index: int
    row: int
    col: int
    height: int
    width: int
    read_row: int
    read_col: int
    read_height: int
    read_width: int

    @property
    def rows(self) -> slice:
        """Rows of the core in the full grid."""
        return slice(self.row, self.row + self.height)

    @property
    def cols(self) -> slice:
        """Columns of the core in the full grid."""
        return slice(self.col, self.col + self.width)

    @property
    def core_in_read(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices that cut the core out of an array of the read window."""
        r0, c0 = self.row - self.read_row, self.col - self.read_col
        return slice(r0, r0 + self.height), slice(c0, c0 + self.width)

    @property
    def write_window(self) -> Window:
        """The core as a rasterio ``Window``."""
        from rasterio.windows import Window

        return Window(self.col, self.row, self.width, self.height)

    @property
    def read_window(self) -> Window:
        """The core plus halo (clipped to the grid) as a rasterio ``Window``."""
        from rasterio.windows import Window

        return Window(self.read_col, self.read_row, self.read_width, self.read_height)


def plan_windows(height: int, width: int, tile: int = 512, halo: int = 0) -> list[MapWindow]:
    """Tiles of ``tile`` x ``tile`` pixels (smaller at the right and bottom edges) over a
    ``height`` x ``width`` grid, each read with ``halo`` extra pixels clipped at the edges."""
    if height <= 0 or width <= 0:
        raise DataError(f"cannot plan windows over an empty {height}x{width} grid")
    if tile <= 0:
        raise DataError(f"tile must be a positive number of pixels, got {tile}")
    if halo < 0:
        raise DataError(f"halo must be >= 0 pixels, got {halo}")
    windows: list[MapWindow] = []
    for row in range(0, height, tile):
        h = min(tile, height - row)
        r0, r1 = max(0, row - halo), min(height, row + h + halo)
        for col in range(0, width, tile):
            w = min(tile, width - col)
            c0, c1 = max(0, col - halo), min(width, col + w + halo)
            windows.append(MapWindow(len(windows), row, col, h, w, r0, c0, r1 - r0, c1 - c0))
    return windows
