"""Map production: classify image time-series cubes into crop maps, and parcel maps."""

from cropscope.mapping.classify import CropMap, classify_cube, cube_pixels, write_map, write_preview
from cropscope.mapping.job import MapJobResult, run_map_job
from cropscope.mapping.parcels import (
    aggregate_parcels,
    parcel_series,
    predict_parcels,
    read_parcels,
    write_parcels,
)
from cropscope.mapping.windows import MapWindow, plan_windows

__all__ = [
    "CropMap",
    "MapJobResult",
    "MapWindow",
    "aggregate_parcels",
    "classify_cube",
    "cube_pixels",
    "parcel_series",
    "plan_windows",
    "predict_parcels",
    "read_parcels",
    "run_map_job",
    "write_map",
    "write_parcels",
    "write_preview",
]
