"""Continuous weather fields (DeepPhysiNet-style) and weather covariates for crop mapping.

Light at import: torch is imported by :mod:`model`, :mod:`training`, :mod:`field` and
:mod:`equations` only. Public entry points:

- :func:`readers.open_weather` – read NetCDF / GRIB / Zarr into a standard ``xarray.Dataset``
- :func:`training.fit_field` – fit a physics-informed field to gridded data
- :class:`field.WeatherField` – query (``sample``) and export (``to_netcdf``) a fitted field
- :func:`evaluate.evaluate_file` – coarsen → fit → score against bilinear / bicubic
- :mod:`covariates` – growing degree days, day length, thermal-time alignment
"""

from __future__ import annotations

from cropscope.weather.covariates import (
    GriddedField,
    daily_gdd,
    day_length,
    thermal_time,
)
from cropscope.weather.readers import open_weather, standardize

__all__ = [
    "GriddedField",
    "daily_gdd",
    "day_length",
    "open_weather",
    "standardize",
    "thermal_time",
]
