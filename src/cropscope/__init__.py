"""cropscope: crop-type mapping from satellite image time series.

The top-level import is light (numpy/pandas only); torch, rasterio and friends are
imported by the modules that need them.
"""

# first: sets OMP_WAIT_POLICY=PASSIVE before torch/LightGBM/scikit-learn load OpenMP
from cropscope import threads
from cropscope._version import __version__
from cropscope.errors import CropscopeError

__all__ = ["CropscopeError", "__version__", "threads"]
