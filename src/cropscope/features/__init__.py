"""Features: pure functions of a :class:`~cropscope.data.TimeSeriesSet` (or plain arrays).

- compositing: regular-grid median composites (:func:`composite_median`).
- gap filling: linear interpolation in time (:func:`interpolate_gaps`).
- harmonics: least-squares harmonic coefficients (:func:`harmonic_coefficients`).
- indices: NDVI, EVI, ... from bands found by name (:func:`add_indices`).
- CropGlobe: 5-day DOY median features, 1D and 2D (:func:`median_features_2d`).
- tabular: flat feature tables for tree models (:func:`build_features`).
"""

from cropscope.features.compositing import (
    composite_median,
    composite_median_array,
    parse_step,
    regular_grid,
    window_index,
)
from cropscope.features.cropglobe import (
    median_feature_names,
    median_features_1d,
    median_features_2d,
    median_windows,
)
from cropscope.features.gapfill import interpolate_gaps, interpolate_gaps_array, time_axis_days
from cropscope.features.harmonics import (
    fit_harmonics_array,
    harmonic_coefficients,
    harmonic_design,
    harmonic_feature_names,
    harmonic_time,
    reconstruct_harmonics,
)
from cropscope.features.indices import (
    SENSORS,
    add_indices,
    available_indices,
    compute_index,
    index_bands,
    resolve_bands,
)
from cropscope.features.tabular import FEATURE_KINDS, build_features

__all__ = [
    "FEATURE_KINDS",
    "SENSORS",
    "add_indices",
    "available_indices",
    "build_features",
    "composite_median",
    "composite_median_array",
    "compute_index",
    "fit_harmonics_array",
    "harmonic_coefficients",
    "harmonic_design",
    "harmonic_feature_names",
    "harmonic_time",
    "index_bands",
    "interpolate_gaps",
    "interpolate_gaps_array",
    "median_feature_names",
    "median_features_1d",
    "median_features_2d",
    "median_windows",
    "parse_step",
    "reconstruct_harmonics",
    "regular_grid",
    "resolve_bands",
    "time_axis_days",
    "window_index",
]
