"""Data model, dataset registry and readers.

Readers are imported lazily: ``import cropscope.data`` stays light.
"""

from __future__ import annotations

from typing import Any

from cropscope.data.registry import dataset_status, get_dataset, list_datasets, load_dataset
from cropscope.data.timeseries import TimeSeriesSet

__all__ = [
    "TimeSeriesSet",
    "attach_taxonomy",
    "dataset_status",
    "generate_h2crop",
    "get_dataset",
    "list_datasets",
    "load_dataset",
    "load_samples",
    "read_cube",
    "read_table",
    "sample_source",
    "write_table",
]

_LAZY = {
    "load_samples": "cropscope.data.samples",
    "sample_source": "cropscope.data.samples",
    "attach_taxonomy": "cropscope.data.samples",
    "generate_h2crop": "cropscope.data.readers.h2crop",
    "read_table": "cropscope.data.readers.table",
    "write_table": "cropscope.data.readers.table",
    "read_cube": "cropscope.data.readers.cube",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cropscope.data' has no attribute {name!r}")
