"""Writing point tables (sample designs, proposals to label) for field and GIS work.

:func:`write_points` writes a table with ``x``/``y`` columns (in ``crs``) as a GeoPackage or
GeoJSON of points, or as a CSV, atomically (complete or absent). A GeoPackage's layer is
named after the file, as GIS tools name it when they save the file again, so a re-saved
file does not end up with two layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cropscope.errors import DataError

__all__ = ["POINT_SUFFIXES", "write_points"]

POINT_SUFFIXES = (".gpkg", ".geojson", ".csv")


def write_points(frame: Any, path: str | Path, crs: Any) -> Path:
    """``frame`` (pandas, with ``x`` and ``y``) as points at ``path`` (see the module doc)."""
    from cropscope.io import atomic_path

    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in POINT_SUFFIXES:
        raise DataError(f"--out {out}: write points as {', '.join(POINT_SUFFIXES)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        with atomic_path(out) as tmp:
            frame.to_csv(tmp, index=False)
        return out
    import geopandas as gpd

    gdf = gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(frame["x"], frame["y"]),
                           crs=crs)
    driver = "GPKG" if suffix == ".gpkg" else "GeoJSON"
    with atomic_path(out, suffix=suffix) as tmp:
        tmp.unlink()  # the driver creates the file
        gdf.to_file(tmp, driver=driver, layer=out.stem if driver == "GPKG" else None)
    return out
