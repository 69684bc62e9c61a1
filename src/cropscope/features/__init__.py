"""Features: pure functions of a :class:`~cropscope.data.TimeSeriesSet` (or plain arrays).

- compositing: regular-grid median composites (:func:`composite_median`).
- gap filling: linear interpolation in time (:func:`interpolate_gaps`).
- harmonics: least-squares harmonic coefficients (:func:`harmonic_coefficients`).
- indices: NDVI, EVI, ... from bands found by name (:func:`add_indices`).
- CropGlobe: 5-day DOY median features, 1D and 2D (:func:`median_features_2d`).
- smoothing: Whittaker and Savitzky–Golay smoothing with gaps (:func:`whittaker`).
- expressions: safe index expressions and the spyndex catalogue (:func:`add_expressions`).
- normalise: standard normal variate of each spectrum (:func:`snv`).
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
from cropscope.features.expressions import (
    add_expressions,
    evaluate_expression,
    parse_expression,
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
from cropscope.features.normalise import snv, snv_array
from cropscope.features.smoothing import (
    savitzky_golay,
    savitzky_golay_array,
    whittaker,
    whittaker_array,
)
from cropscope.features.tabular import FEATURE_KINDS, FEATURE_STEPS, build_features

__all__ = [
    "FEATURE_KINDS",
    "FEATURE_STEPS",
    "SENSORS",
    "add_expressions",
    "add_indices",
    "available_indices",
    "build_features",
    "composite_median",
    "composite_median_array",
    "compute_index",
    "evaluate_expression",
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
    "parse_expression",
    "parse_step",
    "reconstruct_harmonics",
    "regular_grid",
    "resolve_bands",
    "savitzky_golay",
    "savitzky_golay_array",
    "snv",
    "snv_array",
    "time_axis_days",
    "whittaker",
    "whittaker_array",
    "window_index",
]
