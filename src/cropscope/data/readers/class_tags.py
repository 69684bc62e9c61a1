"""Class names stored in a class raster, as the map job writes them.

A labels raster carries ``class_<i>`` tags (code ``i`` → class name); a probability raster
carries the same tags and one band per class (band ``i + 1`` → class ``i``, its description
the class name). These two readers are the one place that decodes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["band_class_names", "tagged_class_names"]


def tagged_class_names(tags: Mapping[str, str]) -> dict[int, str]:
    """``{code: name}`` of the ``class_<i>`` tags (empty when there are none)."""
    return {int(k[6:]): str(v) for k, v in tags.items()
            if k.startswith("class_") and k[6:].isdigit()}


def band_class_names(src: Any) -> list[str]:
    """The class of each band of an open rasterio dataset: its ``class_<i>`` tag, else its
    band description, else ``class_<i>``."""
    names = tagged_class_names(src.tags())
    return [str(names.get(i) or src.descriptions[i] or f"class_{i}") for i in range(src.count)]
