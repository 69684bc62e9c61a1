"""cropscope: crop-type mapping from satellite image time series.

The top-level import is light (numpy/pandas only); torch, rasterio and friends are
imported by the modules that need them.
"""

from cropscope._version import __version__
from cropscope.errors import CropscopeError

__all__ = ["CropscopeError", "__version__"]
