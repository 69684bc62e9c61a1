"""Map production: classify image time-series cubes into crop maps."""

from cropscope.mapping.classify import CropMap, classify_cube, cube_pixels, write_map, write_preview

__all__ = ["CropMap", "classify_cube", "cube_pixels", "write_map", "write_preview"]
