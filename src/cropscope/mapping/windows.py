"""Window plans (:mod:`cropscope.data.windows`, where sample extraction plans its reads with
them too; re-exported here so existing imports keep working) and the map job's window size.

:func:`auto_tile` chooses the window side from the input's block layout and a memory
budget: a multiple of the files' (square) block side, so each block is read and decoded by
one window only, as large as the budget allows with the job's windows in flight (a larger
window costs nothing more per pixel and spreads the per-window work: opening the outputs,
the journal, one read call per file).
"""

from __future__ import annotations

import math
from typing import Any

from cropscope.data.windows import MapWindow, plan_windows
from cropscope.errors import DataError

__all__ = ["MapWindow", "auto_tile", "plan_windows"]

#: memory for the windows of a job in flight when the tile is chosen (bytes)
TILE_BUDGET = 1 << 30
#: windows in flight in a job: being read, queued, being predicted, being written
_WINDOWS_IN_FLIGHT = 4


def block_side(source: Any) -> int | None:
    """The side of the square blocks of ``source``'s first raster file (``None``: striped,
    unknown or not a raster)."""
    files = getattr(source, "files", None) or []
    if not files:
        return None
    try:
        import rasterio

        with rasterio.open(files[0]) as src:
            rows, cols = src.block_shapes[0]
    except Exception:  # not a raster rasterio opens (NetCDF, Zarr, STAC hrefs): unknown
        return None
    return int(rows) if rows == cols and rows > 1 else None


def auto_tile(source: Any, values_per_pixel: int, budget: int = TILE_BUDGET) -> int:
    """A window side (pixels) for ``source``: a multiple of its block side (else of 256) whose
    windows fit ``budget`` bytes with a job's windows in flight, each pixel holding
    ``values_per_pixel`` float32 values (dates x bands) and its raw input; at least one
    block, at most 4096 pixels or the grid's larger side rounded up to whole blocks."""
    if values_per_pixel <= 0:
        raise DataError(f"values_per_pixel must be positive, got {values_per_pixel}")
    block = block_side(source) or 256
    per_pixel = values_per_pixel * (4 * _WINDOWS_IN_FLIGHT + 2)
    side = math.isqrt(max(1, budget // per_pixel))
    largest = max(int(source.height), int(source.width))
    cap = min(4096, math.ceil(largest / block) * block)
    return max(block, min(cap, side // block * block))
