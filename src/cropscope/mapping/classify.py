"""Classify an image time-series cube pixel by pixel into a crop map.

The cube is an ``xarray.DataArray`` ``(time, band, y, x)`` (see
:func:`cropscope.data.readers.cube.read_cube`). Pixels are classified in blocks of rows so
memory stays bounded; pixels without any valid observation get the nodata label.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError

if TYPE_CHECKING:
    import xarray as xr

    from cropscope.models.base import Classifier

__all__ = ["CropMap", "classify_cube", "cube_pixels", "write_map", "write_preview"]

#: label value written where no prediction was made
NODATA_LABEL = 255


@dataclass
class CropMap:
    """A classified map: labels ``[y, x]`` (uint8, 255 = nodata) and max probability."""

    labels: np.ndarray
    confidence: np.ndarray
    classes: list[str]
    cube: xr.DataArray

    def class_areas(self) -> dict[str, dict[str, float]]:
        """Pixel count, share and area per class (hectares: each pixel's area on the
        ellipsoid of the cube's CRS, :mod:`cropscope.data.pixel_areas`; NaN without a
        transform)."""
        from affine import Affine

        from cropscope.data.pixel_areas import pixel_areas

        res = self.cube.attrs.get("transform")
        valid = self.labels != NODATA_LABEL
        total = int(valid.sum())
        k = len(self.classes)
        codes = self.labels[valid & (self.labels < k)].astype(np.int64)
        pixels = np.bincount(codes, minlength=k)
        if res:
            area = pixel_areas(self.cube.attrs.get("crs"), Affine(*tuple(res)[:6]),
                               self.labels.shape).hectares
            hectares = np.bincount(codes, weights=area[valid & (self.labels < k)],
                                   minlength=k)
        else:
            hectares = np.full(k, np.nan)
        return {name: {"pixels": int(pixels[i]),
                       "share": int(pixels[i]) / total if total else 0.0,
                       "area_ha": float(hectares[i])}
                for i, name in enumerate(self.classes)}


def cube_pixels(cube: xr.DataArray, rows: slice | None = None) -> TimeSeriesSet:
    """The pixels of a cube (or of a block of rows) as a time-series set ``[y*x, T, C]``."""
    if tuple(cube.dims) != ("time", "band", "y", "x"):
        raise DataError(f"cube must have dims (time, band, y, x), got {cube.dims}")
    block = cube if rows is None else cube.isel(y=rows)
    arr = np.asarray(block.values, dtype=np.float32)  # [T, C, y, x]
    t, c, ny, nx = arr.shape
    values = arr.reshape(t, c, ny * nx).transpose(2, 0, 1)
    return TimeSeriesSet(
        values=np.ascontiguousarray(values),
        bands=[str(b) for b in cube["band"].values],
        dates=cube["time"].values.astype("datetime64[D]"),
    )


def classify_cube(
    model: Classifier,
    cube: xr.DataArray,
    *,
    block_rows: int = 64,
    progress: bool = False,
) -> CropMap:
    """Predict every pixel of ``cube`` with a fitted ``model``."""
    from tqdm.auto import tqdm

    ny, nx = cube.sizes["y"], cube.sizes["x"]
    labels = np.full((ny, nx), NODATA_LABEL, dtype=np.uint8)
    confidence = np.full((ny, nx), np.nan, dtype=np.float32)
    if len(model.classes) >= NODATA_LABEL:
        raise DataError(f"too many classes for an 8-bit map: {len(model.classes)}")
    starts = range(0, ny, block_rows)
    for y0 in tqdm(starts, desc="classifying", unit="block", disable=not progress):
        rows = slice(y0, min(ny, y0 + block_rows))
        pixels = cube_pixels(cube, rows)
        assert pixels.mask is not None  # set by TimeSeriesSet.__post_init__
        has_data = np.asarray(pixels.mask.any(axis=1))
        if not has_data.any():
            continue
        proba = model.predict_proba(pixels.subset(has_data))
        block_labels = np.full(pixels.n_samples, NODATA_LABEL, dtype=np.uint8)
        block_conf = np.full(pixels.n_samples, np.nan, dtype=np.float32)
        block_labels[has_data] = proba.argmax(axis=1)
        block_conf[has_data] = proba.max(axis=1)
        height = rows.stop - rows.start
        labels[rows] = block_labels.reshape(height, nx)
        confidence[rows] = block_conf.reshape(height, nx)
    return CropMap(labels=labels, confidence=confidence, classes=list(model.classes), cube=cube)


def class_colormap(classes: list[str], colours: Mapping[str, str] | None = None
                   ) -> dict[int, tuple[int, int, int, int]]:
    """GeoTIFF colour table ``code -> (r, g, b, 255)``, colours keyed to the class names
    (:func:`cropscope.mapping.styles.class_colours`; ``colours`` overrides them)."""
    from cropscope.mapping.styles import colour_table

    return colour_table(classes, colours)


def write_map(crop_map: CropMap, path: str | Path) -> dict[str, Path]:
    """Write the label GeoTIFF (with colour table and class names) and a confidence GeoTIFF.

    Both keep the cube's CRS and transform.
    """
    from cropscope.data.readers.cube import write_geotiff

    path = Path(path)
    colormap = class_colormap(crop_map.classes)
    tags: dict[str, Any] = {f"class_{i}": name for i, name in enumerate(crop_map.classes)}
    write_geotiff(crop_map.labels, path, like=crop_map.cube, dtype="uint8",
                  nodata=NODATA_LABEL, colormap=colormap, tags=tags)
    conf_path = path.with_name(path.stem + "_confidence" + path.suffix)
    write_geotiff(crop_map.confidence, conf_path, like=crop_map.cube, dtype="float32",
                  nodata=float("nan"))
    return {"labels": path, "confidence": conf_path}


def write_preview(crop_map: CropMap, path: str | Path, title: str = "",
                  colours: Mapping[str, str] | None = None) -> Path:
    """A PNG of the map with a legend (class name, colour and share of the area); colours
    keyed to the class names (``colours`` overrides them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from cropscope.io import atomic_path
    from cropscope.mapping.styles import class_colours

    by_name = class_colours(crop_map.classes, colours)
    palette = [by_name[c] for c in crop_map.classes]
    shown = np.ma.masked_equal(crop_map.labels, NODATA_LABEL)
    areas = crop_map.class_areas()
    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    ax.imshow(shown, cmap=ListedColormap(palette), vmin=-0.5,
              vmax=len(palette) - 0.5, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "cropscope crop map")
    handles = [
        Patch(facecolor=c, edgecolor="black", label=f"{name} ({areas[name]['share']:.1%})")
        for name, c in zip(crop_map.classes, palette, strict=True)
    ]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
