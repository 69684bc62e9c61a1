"""cropscope: crop-type mapping from satellite image time series.

The top-level import is light (numpy/pandas only); torch, rasterio and friends are
imported by the modules that need them.
"""

import os

# GDAL's block cache defaults to 5 % of the RAM per process. cropscope reads and writes
# rasters window by window, touching each block about once, so a large cache buys nothing
# and costs memory and fresh pages: a 2,000 x 2,000 map job at 2 threads spent up to 9 s of
# kernel time faulting in 1 GB of cache, against 0.4 s with 256 MB. GDAL reads the setting
# once, when the first raster is opened; the user's value wins.
os.environ.setdefault("GDAL_CACHEMAX", "256")

# first: sets OMP_WAIT_POLICY=PASSIVE before torch/LightGBM/scikit-learn load OpenMP
from cropscope import threads
from cropscope._version import __version__
from cropscope.errors import CropscopeError

__all__ = ["CropscopeError", "__version__", "threads"]
