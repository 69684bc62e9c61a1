"""Map production: classify image time-series cubes into crop maps."""

from cropscope.mapping.classify import CropMap, classify_cube, cube_pixels, write_map, write_preview
from cropscope.mapping.job import MapJobResult, run_map_job
from cropscope.mapping.windows import MapWindow, plan_windows

__all__ = [
    "CropMap",
    "MapJobResult",
    "MapWindow",
    "classify_cube",
    "cube_pixels",
    "plan_windows",
    "run_map_job",
    "write_map",
    "write_preview",
]
