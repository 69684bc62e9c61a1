"""Continuous weather fields (DeepPhysiNet-style) and weather covariates for crop mapping.

Light at import: torch is imported by :mod:`model`, :mod:`training`, :mod:`field`,
:mod:`supervised` and :mod:`equations` only. Public entry points:

- :func:`readers.open_weather` – read NetCDF / GRIB / Zarr into a standard ``xarray.Dataset``
- :func:`training.fit_field` – fit a physics-informed field to gridded data
- :class:`field.WeatherField` – query (``sample``) and export (``to_netcdf``) a fitted field
- :func:`evaluate.evaluate_file` – coarsen → fit → score against bilinear / bicubic
  (:func:`evaluate.format_evaluation`: its text table)
- :func:`evaluate.fit_file` – fit a field to every grid point of a file and save it
- :mod:`supervised` – supervised downscaling in space and time (DeepPhysiNet as published):
  ``prepare_training`` → ``train_supervised`` → ``SupervisedField`` (query, export),
  ``evaluate_supervised`` (scores against the :mod:`windows` reference interpolations)
- :mod:`covariates` – growing degree days, day length, thermal-time alignment
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cropscope.weather.covariates import (
    GriddedField,
    daily_gdd,
    day_length,
    thermal_time,
)
from cropscope.weather.evaluate import evaluate_file, fit_file, format_evaluation
from cropscope.weather.readers import open_weather, standardize

if TYPE_CHECKING:
    from cropscope.weather.field import WeatherField

__all__ = [
    "GriddedField",
    "WeatherField",
    "daily_gdd",
    "day_length",
    "evaluate_file",
    "fit_file",
    "format_evaluation",
    "open_weather",
    "standardize",
    "thermal_time",
]


def __getattr__(name: str) -> Any:
    if name == "WeatherField":  # torch is imported with it
        from cropscope.weather import field

        return field.WeatherField
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
