"""Simulate Sentinel-2 MSI bands from a hyperspectral scene.

Band centres and bandwidths are the nominal values of the ESA Sentinel-2 MSI user guide
("radiometric resolutions" table, S2A and S2B). Each band's spectral response is
approximated by a Gaussian whose FWHM is the bandwidth; the official SRFs
(COPE-GSEG-EOPG-TN-15-0007) are flatter-topped, so the Gaussian puts slightly more
weight in the tails. For smooth vegetation/soil spectra the difference is typically well
under 0.01 reflectance; it is largest at the steep red edge (B5–B7).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cropscope.errors import DataError
from cropscope.hyperspectral.spectral import resample

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["DEFAULT_BANDS", "SENTINEL2_BANDS", "simulate_sentinel2"]

#: ``platform -> band -> (centre nm, bandwidth nm)``
SENTINEL2_BANDS: dict[str, dict[str, tuple[float, float]]] = {
    "S2A": {
        "B1": (442.7, 21.0), "B2": (492.4, 66.0), "B3": (559.8, 36.0), "B4": (664.6, 31.0),
        "B5": (704.1, 15.0), "B6": (740.5, 15.0), "B7": (782.8, 20.0), "B8": (832.8, 106.0),
        "B8A": (864.7, 21.0), "B9": (945.1, 20.0), "B10": (1373.5, 31.0),
        "B11": (1613.7, 91.0), "B12": (2202.4, 175.0),
    },
    "S2B": {
        "B1": (442.2, 21.0), "B2": (492.1, 66.0), "B3": (559.0, 36.0), "B4": (664.9, 31.0),
        "B5": (703.8, 16.0), "B6": (739.1, 15.0), "B7": (779.7, 20.0), "B8": (832.9, 106.0),
        "B8A": (864.0, 22.0), "B9": (943.2, 21.0), "B10": (1376.9, 30.0),
        "B11": (1610.4, 94.0), "B12": (2185.7, 185.0),
    },
}
#: The ten 10 m/20 m land bands (the order used by H2Crop and most crop models).
DEFAULT_BANDS: tuple[str, ...] = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")


def simulate_sentinel2(
    scene: xr.DataArray,
    bands: Sequence[str] = DEFAULT_BANDS,
    *,
    platform: str = "S2A",
    min_coverage: float = 0.5,
) -> xr.DataArray:
    """Sentinel-2 bands (``band`` coords ``"B2"``, ...) simulated by band-response
    resampling (:func:`cropscope.hyperspectral.spectral.resample`). Bad bands of the
    scene are left out; a band the scene does not cover is NaN and flagged ``bad_band``.
    """
    table = SENTINEL2_BANDS.get(platform.upper())
    if table is None:
        raise DataError(f"unknown Sentinel-2 platform {platform!r}; "
                        f"choose from {', '.join(SENTINEL2_BANDS)}")
    names = [b.upper().replace("B0", "B") for b in bands]
    unknown = [b for b in names if b not in table]
    if unknown:
        raise DataError(f"unknown Sentinel-2 bands {unknown}; choose from {', '.join(table)}")
    centres = [table[b][0] for b in names]
    widths = [table[b][1] for b in names]
    out = resample(scene, centres, widths, band_names=names, min_coverage=min_coverage)
    out.attrs["sensor"] = f"Sentinel-2 ({platform.upper()}, simulated from "\
        f"{scene.attrs.get('sensor', 'unknown')})"
    out.attrs["srf"] = "gaussian (FWHM = nominal bandwidth)"
    return out
