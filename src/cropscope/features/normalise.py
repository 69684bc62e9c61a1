"""Spectral normalisation: the standard normal variate (SNV) of each spectrum.

SNV (Barnes, Dhanoa & Lister 1989) centres and scales each spectrum by its own mean and
standard deviation across bands, ``(x - mean(x)) / std(x)``, per sample and time step. It
removes brightness differences that multiply or shift the whole spectrum (illumination and
slope, soil background, sensor gain) and keeps its shape, which is what tells crops apart
in hyperspectral data: on the Indian Pines window an SVM on the SNV of 3 x 3 mean spectra
is the most accurate model (``docs/hyperspectral.md``).

Layout: ``values [..., C]``, bands on the last axis (a :class:`TimeSeriesSet`'s
``[N, T, C]``: each step's spectrum is normalised on its own). Missing bands (NaN) are
left out of the mean and the deviation and stay NaN. A spectrum without spread (flat, or
with one finite band) has no shape to keep: it becomes zeros, so that a valid observation
stays valid (an all-NaN spectrum stays all NaN). Statistics in float64, result float32.
In a feature spec it is the step ``snv`` (:func:`cropscope.features.tabular.build_features`),
e.g. ``["snv", "values"]``.
"""

from __future__ import annotations

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet

__all__ = ["snv", "snv_array"]


def snv_array(values: np.ndarray) -> np.ndarray:
    """SNV of every spectrum of ``values [..., C]`` (bands last): float32, same shape."""
    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x)
    count = finite.sum(axis=-1, keepdims=True)
    filled = np.where(finite, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=-1, keepdims=True) / count
        centred = np.where(finite, x - mean, 0.0)
        std = np.sqrt((centred * centred).sum(axis=-1, keepdims=True) / (count - 1))
        scale = np.where((count >= 2) & (std > 0), std, 1.0)
        out = np.where(finite, centred / scale, np.nan)
    return out.astype(np.float32)


def snv(ts: TimeSeriesSet) -> TimeSeriesSet:
    """``ts`` with each step's spectrum replaced by its SNV (see the module docstring)."""
    return ts.replace(values=snv_array(ts.values))
