"""Hyperspectral scenes: ``xarray.DataArray`` ``(band, y, x)`` float32, reflectance 0–1.

Every reader returns the same convention: ``band`` holds the file's 1-based band numbers,
with coords ``wavelength`` (band centre, nm, float64, NaN when unknown), ``fwhm`` (nm, NaN
when unknown) and ``bad_band`` (bool: the file's bad-band list plus nodata-filled bands;
water-vapour windows are applied by :func:`drop_bad_bands`); nodata is NaN; the scale factor is
applied; CRS and transform are attached (rioxarray and ``attrs["crs"]``/``attrs["transform"]``)
when the file is georeferenced; ``attrs`` also hold ``sensor``, ``units`` and ``source``.

Heavy libraries (rasterio, h5py, scipy.io) are imported inside the readers.
"""

from cropscope.hyperspectral.info import band_ranges, format_scene_info, scene_info
from cropscope.hyperspectral.normalisation import BandStatistics, band_statistics
from cropscope.hyperspectral.readers import detect_format, open_hyperspectral, open_labels
from cropscope.hyperspectral.sentinel2 import simulate_sentinel2
from cropscope.hyperspectral.spectral import (
    bad_band_mask,
    continuum_removal,
    drop_bad_bands,
    gaussian_response,
    resample,
    resample_like,
    resampling_matrix,
    spectral_derivative,
)
from cropscope.hyperspectral.to_h2crop import build_h2crop_from_enmap

__all__ = [
    "BandStatistics",
    "bad_band_mask",
    "band_ranges",
    "band_statistics",
    "build_h2crop_from_enmap",
    "continuum_removal",
    "detect_format",
    "drop_bad_bands",
    "format_scene_info",
    "gaussian_response",
    "open_hyperspectral",
    "open_labels",
    "resample",
    "resample_like",
    "resampling_matrix",
    "scene_info",
    "simulate_sentinel2",
    "spectral_derivative",
]
