"""Map production: classify image time-series cubes into crop maps, and parcel maps."""

from cropscope.mapping.active import Proposals, propose_samples, uncertainty_scores
from cropscope.mapping.classify import CropMap, classify_cube, cube_pixels, write_map, write_preview
from cropscope.mapping.contract import ClassifierMapModel, MapModel, as_map_model
from cropscope.mapping.deliver import MapProduct, class_areas, deliver_map, map_output_paths
from cropscope.mapping.job import MapJobResult, local_cluster, run_map_job
from cropscope.mapping.parcels import (
    aggregate_parcels,
    parcel_series,
    predict_parcels,
    read_parcels,
    write_parcels,
)
from cropscope.mapping.relabel import (
    mosaic_maps,
    read_map_classes,
    reclassify_map,
    rollup_map,
    sieve_map,
)
from cropscope.mapping.smoothing import (
    BayesianSmoother,
    SmoothResult,
    isolated_fraction,
    smooth_map,
    smooth_probabilities,
)
from cropscope.mapping.windows import MapWindow, plan_windows

__all__ = [
    "BayesianSmoother",
    "ClassifierMapModel",
    "CropMap",
    "MapJobResult",
    "MapModel",
    "MapProduct",
    "MapWindow",
    "Proposals",
    "SmoothResult",
    "aggregate_parcels",
    "as_map_model",
    "class_areas",
    "classify_cube",
    "cube_pixels",
    "deliver_map",
    "isolated_fraction",
    "local_cluster",
    "map_output_paths",
    "mosaic_maps",
    "parcel_series",
    "plan_windows",
    "predict_parcels",
    "propose_samples",
    "read_map_classes",
    "read_parcels",
    "reclassify_map",
    "rollup_map",
    "run_map_job",
    "sieve_map",
    "smooth_map",
    "smooth_probabilities",
    "uncertainty_scores",
    "write_map",
    "write_parcels",
    "write_preview",
]
