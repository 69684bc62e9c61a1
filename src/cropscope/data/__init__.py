"""Data model, dataset registry and readers.

Readers are imported lazily: ``import cropscope.data`` stays light.
"""

from __future__ import annotations

from typing import Any

from cropscope.data.registry import dataset_status, get_dataset, list_datasets, load_dataset
from cropscope.data.timeseries import TimeSeriesSet

__all__ = [
    "TimeSeriesSet",
    "dataset_status",
    "get_dataset",
    "list_datasets",
    "load_dataset",
    "read_cube",
    "read_table",
    "write_table",
]

_LAZY = {
    "read_table": "cropscope.data.readers.table",
    "write_table": "cropscope.data.readers.table",
    "read_cube": "cropscope.data.readers.cube",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cropscope.data' has no attribute {name!r}")
