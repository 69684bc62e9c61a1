"""Map production: classify image time-series cubes into crop maps, and parcel maps."""

from cropscope.mapping.classify import CropMap, classify_cube, cube_pixels, write_map, write_preview
from cropscope.mapping.contract import ClassifierMapModel, MapModel, as_map_model
from cropscope.mapping.deliver import MapProduct, class_areas, deliver_map, map_output_paths
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
    "ClassifierMapModel",
    "CropMap",
    "MapJobResult",
    "MapModel",
    "MapProduct",
    "MapWindow",
    "aggregate_parcels",
    "as_map_model",
    "class_areas",
    "classify_cube",
    "cube_pixels",
    "deliver_map",
    "map_output_paths",
    "parcel_series",
    "plan_windows",
    "predict_parcels",
    "read_parcels",
    "run_map_job",
    "write_map",
    "write_parcels",
    "write_preview",
]
