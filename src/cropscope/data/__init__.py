"""Data model, dataset registry and readers."""

from cropscope.data.timeseries import TimeSeriesSet

__all__ = ["TimeSeriesSet"]
