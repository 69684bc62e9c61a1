"""Per-date validity masks: Sentinel-2 scene classification (SCL), QA bit flags.

A mask band is read like any other band of a source (one layer per date) and turned into
"invalid" pixels, which become NaN in every other band of that date; the mask band itself
is dropped. :class:`MaskedCube` does this for any
:class:`~cropscope.data.readers.cube.CubeLike` source (``open_cube_source(...,
mask_band="SCL")`` wraps it for you). A pixel masked on every date has no valid
observation and is nodata in the map; partly masked series reach the model with NaN gaps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.data.readers.cube import CubeWrapper
from cropscope.errors import DataError

if TYPE_CHECKING:
    import xarray as xr

    from cropscope.data.readers.cube import CubeLike

__all__ = [
    "SCL_INVALID",
    "SCL_INVALID_WITH_SNOW",
    "MaskedCube",
    "apply_mask",
    "invalid_pixels",
    "mask_from_bits",
    "mask_from_scl",
]

#: Sentinel-2 L2A SCL classes treated as invalid: 0 no data, 1 saturated/defective,
#: 3 cloud shadow, 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus
SCL_INVALID: tuple[int, ...] = (0, 1, 3, 8, 9, 10)
#: :data:`SCL_INVALID` plus 11 snow/ice
SCL_INVALID_WITH_SNOW: tuple[int, ...] = (*SCL_INVALID, 11)

#: the classes of a mask band to reject, or a function of its values -> True where invalid
Invalid = Iterable[int] | Callable[[np.ndarray], np.ndarray]


def mask_from_scl(scl: Any, invalid: Iterable[int] = SCL_INVALID) -> np.ndarray:
    """True where an SCL value is one of the ``invalid`` classes or missing (NaN)."""
    values = np.asarray(scl)
    codes = np.array(sorted({int(v) for v in invalid}))
    if np.issubdtype(values.dtype, np.floating):
        missing = np.isnan(values)
        bad = np.isin(np.where(missing, -1, values), codes)
        return bad | missing
    return np.isin(values, codes)


def mask_from_bits(qa: Any, bits: Iterable[int]) -> np.ndarray:
    """True where any of ``bits`` (0 = least significant) is set in a QA band (Landsat
    ``QA_PIXEL``, Fmask-style flags), or where the value is missing (NaN)."""
    values = np.asarray(qa)
    missing = np.isnan(values) if np.issubdtype(values.dtype, np.floating) else None
    ints = np.where(missing, 0, values).astype(np.int64) if missing is not None else values
    flag = 0
    for bit in bits:
        flag |= 1 << int(bit)
    bad = (ints.astype(np.int64) & flag) != 0
    return bad | missing if missing is not None else bad


def invalid_pixels(values: np.ndarray, invalid: Invalid = SCL_INVALID) -> np.ndarray:
    """Boolean mask of the invalid pixels of a mask band's ``values``."""
    if callable(invalid):
        bad = np.asarray(invalid(values), dtype=bool)
        if bad.shape != values.shape:
            raise DataError(f"the mask function gave shape {bad.shape} for {values.shape}")
        return bad
    return mask_from_scl(values, invalid)


def apply_mask(cube: xr.DataArray, mask_band: str, invalid: Invalid = SCL_INVALID) -> xr.DataArray:
    """``cube`` (``time, band, y, x``) without ``mask_band``, NaN where it is invalid."""
    names = [str(b) for b in cube["band"].values]
    if mask_band not in names:
        raise DataError(f"mask band {mask_band!r} not among the bands {names}")
    m = names.index(mask_band)
    bad = invalid_pixels(cube.values[:, m], invalid)  # (time, y, x)
    keep = [i for i in range(len(names)) if i != m]
    out = cube.isel(band=keep).copy()
    values = out.values
    values[np.broadcast_to(bad[:, None], values.shape)] = np.nan
    factors = cube.attrs.get("scale_factor")
    if factors is not None and len(factors) == len(names):
        out.attrs["scale_factor"] = [factors[i] for i in keep]
    return out


class MaskedCube(CubeWrapper):
    """A source whose ``mask_band`` (e.g. ``"SCL"``) masks the other bands, date by date.

    ``invalid`` is a list of class codes (default :data:`SCL_INVALID`) or a function of the
    mask band's values returning True where invalid (e.g.
    ``lambda qa: mask_from_bits(qa, [1, 3, 4])``; use a named function to keep the
    source picklable). The mask band is not among :attr:`bands`.
    """

    def __init__(
        self, source: CubeLike, mask_band: str = "SCL", invalid: Invalid = SCL_INVALID
    ) -> None:
        if mask_band not in source.bands:
            raise DataError(f"mask band {mask_band!r} not among the bands {list(source.bands)}")
        if len(source.bands) < 2:
            raise DataError(f"the source has only the mask band {mask_band!r}")
        super().__init__(source)
        self.mask_band = mask_band
        self.invalid: Invalid = invalid if callable(invalid) else tuple(int(v) for v in invalid)







    @property
    def bands(self) -> list[str]:
        return [b for b in self.source.bands if b != self.mask_band]



    def read(self, window: Any = None) -> xr.DataArray:
        """The source's window with masked observations set to NaN."""
        return apply_mask(self.source.read(window), self.mask_band, self.invalid)
