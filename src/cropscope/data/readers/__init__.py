"""Readers: registered real datasets (sits, TempCNN, UCR), your own long tables, image cubes.

Names are resolved lazily so that importing :mod:`cropscope.data.readers` does not import
rasterio, rdata or pyarrow.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "read_cube",
    "read_sits_rda",
    "read_table",
    "read_tempcnn_csv",
    "read_tempcnn_dir",
    "read_ucr_tsv",
    "write_geotiff",
    "write_table",
]

_WHERE = {
    "read_cube": "cube",
    "write_geotiff": "cube",
    "read_sits_rda": "sits",
    "read_table": "table",
    "write_table": "table",
    "read_tempcnn_csv": "tempcnn",
    "read_tempcnn_dir": "tempcnn",
    "read_ucr_tsv": "ucr",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
