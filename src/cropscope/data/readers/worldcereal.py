"""The WorldCereal test patch: monthly Sentinel-2 + Sentinel-1 cube with crop-type maps.

The folder (``worldcereal_s2s1_patch``, from the WorldCereal classification repository's
test resources) holds a 12-month, 100 x 100 pixel cube at 10 m in EPSG:32631 (Belgium,
2020-11 … 2021-10) and WorldCereal's own cropland / crop-type classifications of it.

**The targets are model outputs, not ground truth.** They are regression references of the
WorldCereal system; training on them teaches a network to imitate that system on one patch,
which is good for pipeline tests and overfitting checks, not for accuracy claims.

Scaling:

- Sentinel-2 L2A: uint16 reflectance x 1e4, ``65535`` nodata → ``NaN``; returned as
  reflectance (``/ 1e4``). Months 2020-12 and 2021-01 are entirely nodata.
- Sentinel-1 sigma0 (VH, VV): WorldCereal stores backscatter as uint16
  ``DN = 10 ** ((dB + 83) / 20)``; :func:`load_worldcereal_patch` returns decibels,
  ``20 * log10(DN) - 83`` (``s1_scaling="db"``; ``"raw"`` keeps DN). The formula is the
  WorldCereal/openEO-GFMAP convention as we understand it (not verified against their code
  here); the medians it gives on this patch (VH ≈ -16.6 dB, VV ≈ -9.9 dB) are typical of
  cropland. ``0`` and ``65535`` are nodata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cropscope.data.readers.h5patches import tile_sample
from cropscope.errors import DataError
from cropscope.settings import check_array_memory

__all__ = [
    "CROPTYPE_CLASSES",
    "S1_BANDS",
    "S2_BANDS",
    "load_worldcereal_patch",
    "worldcereal_patches",
]

INPUTS_FILE = "worldcereal_preprocessed_inputs.nc"
CROPTYPE_FILE = "worldcereal_croptype_classification.nc"
CROPLAND_FILE = "worldcereal_cropland_classification.nc"
TIF_FILE = "cropland-croptype_2020-11-01_2021-10-31.tif"

S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
S1_BANDS = ("VH", "VV")
#: class codes of ``worldcereal_croptype_classification.nc`` (its probability bands, in order)
CROPTYPE_CLASSES = ("barley", "maize", "millet_sorghum", "other_crop", "rapeseed_rape",
                    "soy_soybeans", "sunflower", "wheat")
NO_CROPLAND = "no_cropland"
_NODATA = 65535
TARGETS = ("croptype", "cropland", "croptype_cropland")


def _check_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    if not (folder / INPUTS_FILE).is_file():
        raise DataError(f"{folder} is not the WorldCereal patch folder (no {INPUTS_FILE})")
    return folder


def _classification(path: Path) -> tuple[list[str], np.ndarray]:
    import xarray as xr

    if not path.is_file():
        raise DataError(f"classification file not found: {path}")
    with xr.open_dataset(path) as ds:
        var = next(iter(ds.data_vars))
        check_array_memory(ds[var], f"classification file {path.name}")
        bands = [str(b) for b in ds["bands"].values]
        values = np.asarray(ds[var].values)
    return bands, values


def _prob_classes(bands: list[str]) -> list[str]:
    return [b[len("probability_"):] for b in bands if b.startswith("probability_")]


def _tif_croptype(folder: Path, transform: tuple[float, ...], shape: tuple[int, int],
                  model: str) -> tuple[np.ndarray, list[str]]:
    """The GeoTIFF's ``croptype_classification:<model>`` band on the cube grid.

    Its codes index the ``croptype_probability:<model>:<class>`` bands; 254 means
    "not cropland" (mapped to an extra ``no_cropland`` class), 255 is nodata (-1). The TIFF
    comes from a later WorldCereal run on a slightly different grid (101 rows, 20 m north of
    the cube): it is placed by its transform, and cube pixels it does not cover get -1.
    """
    import rasterio

    path = folder / TIF_FILE
    if not path.is_file():
        raise DataError(f"crop-type GeoTIFF not found: {path}")
    with rasterio.open(path) as src:
        desc = list(src.descriptions)
        key = f"croptype_classification:{model}"
        if key not in desc:
            raise DataError(f"{path.name} has no band {key!r}")
        codes = src.read(desc.index(key) + 1).astype(np.int64)
        tf = src.transform
    prefix = f"croptype_probability:{model}:"
    classes = [d[len(prefix):] for d in desc if d and d.startswith(prefix)]
    a, _, c, _, e, f = transform[:6]
    if (tf.a, tf.e) != (a, e):
        raise DataError(f"{path.name} has pixel size {(tf.a, tf.e)}, the cube {(a, e)}")
    col0 = round((c - tf.c) / a)
    row0 = round((f - tf.f) / e)
    out = np.full(shape, -1, dtype=np.int64)
    h, w = shape
    rs, cs = max(row0, 0), max(col0, 0)
    re, ce = min(row0 + h, codes.shape[0]), min(col0 + w, codes.shape[1])
    if re > rs and ce > cs:
        out[rs - row0:re - row0, cs - col0:ce - col0] = codes[rs:re, cs:ce]
    labels = np.where(out == 254, len(classes), out)
    labels = np.where((out == 255) | (out < 0), -1, labels)
    return labels, [*classes, NO_CROPLAND]


def load_worldcereal_patch(
    folder: str | Path,
    target: str = "croptype_cropland",
    label_file: str = "nc",
    s1_scaling: str = "db",
    compact: bool = False,
    tif_model: str = "tc-s2",
) -> dict[str, Any]:
    """Read the WorldCereal patch into sources and a per-pixel target.

    Returns a dict with ``sources`` (``{"S2": float32 [12, 9, 100, 100], "S1": float32
    [12, 2, 100, 100]}``, NaN = nodata), ``bands``, ``dates``, ``label`` (int64 [100, 100],
    -1 = no label), ``classes``, ``crs`` (``"EPSG:32631"``), ``transform`` (GDAL order of
    the pixel-corner affine ``(a, b, c, d, e, f)``), ``label_source`` and ``note``.

    ``target``: ``"croptype"`` (crop-type codes over :data:`CROPTYPE_CLASSES`),
    ``"cropland"`` (``cropland`` / ``other``) or ``"croptype_cropland"`` (crop type where
    the cropland map says cropland, else an extra ``no_cropland`` class). ``label_file``:
    ``"nc"`` (the NetCDF classifications, on the cube grid) or ``"tif"`` (the GeoTIFF's
    ``croptype_classification:<tif_model>`` band; ``target`` is then ignored).
    ``compact`` renumbers the classes present to ``0..K-1``. The labels are WorldCereal
    model outputs, not ground truth.
    """
    import xarray as xr

    folder = _check_folder(folder)
    if target not in TARGETS:
        raise DataError(f"target must be one of {TARGETS}, got {target!r}")
    if s1_scaling not in ("db", "raw"):
        raise DataError(f"s1_scaling must be 'db' or 'raw', got {s1_scaling!r}")
    with xr.open_dataset(folder / INPUTS_FILE) as ds:
        check_array_memory([ds[v] for v in ds.data_vars], f"patch inputs {INPUTS_FILE}")
        s2 = np.stack([ds[f"S2-L2A-{b}"].values for b in S2_BANDS], axis=1)
        s1 = np.stack([ds[f"S1-SIGMA0-{b}"].values for b in S1_BANDS], axis=1)
        dates = np.asarray(ds["t"].values).astype("datetime64[D]")
        x = np.asarray(ds["x"].values, dtype=np.float64)
        y = np.asarray(ds["y"].values, dtype=np.float64)
    s2f = np.where(s2 == _NODATA, np.nan, s2.astype(np.float32) / np.float32(1e4))
    s1f = s1.astype(np.float32)
    s1f[(s1 == 0) | (s1 == _NODATA)] = np.nan
    if s1_scaling == "db":
        s1f = (20.0 * np.log10(s1f) - 83.0).astype(np.float32)
    dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
    # coordinates are pixel centres: shift by half a pixel to the upper-left corner
    transform = (dx, 0.0, float(x[0] - dx / 2), 0.0, dy, float(y[0] - dy / 2))
    shape = (len(y), len(x))

    if label_file == "tif":
        label, classes = _tif_croptype(folder, transform, shape, tif_model)
        source = f"{TIF_FILE}: croptype_classification:{tif_model}"
    elif label_file == "nc":
        ct_bands, ct = _classification(folder / CROPTYPE_FILE)
        cl_bands, cl = _classification(folder / CROPLAND_FILE)
        croptype = ct[ct_bands.index("classification")].astype(np.int64)
        cropland = cl[cl_bands.index("classification")].astype(np.int64)
        # a classification code indexes the file's probability_<class> bands, in order
        # (checked: it is their argmax); for the cropland file that is [cropland, other]
        cl_classes = _prob_classes(cl_bands)
        if "cropland" not in cl_classes:
            raise DataError(f"{CROPLAND_FILE} has no probability_cropland band")
        is_crop = cropland == cl_classes.index("cropland")
        if croptype.shape != shape or cropland.shape != shape:
            raise DataError("classification grids differ from the input cube")
        if target == "croptype":
            label, classes = croptype, list(CROPTYPE_CLASSES)
            source = f"{CROPTYPE_FILE}: classification"
        elif target == "cropland":
            label, classes = cropland, cl_classes
            source = f"{CROPLAND_FILE}: classification"
        else:
            label = np.where(is_crop, croptype, len(CROPTYPE_CLASSES))
            classes = [*CROPTYPE_CLASSES, NO_CROPLAND]
            source = f"{CROPTYPE_FILE} masked by {CROPLAND_FILE}"
    else:
        raise DataError(f"label_file must be 'nc' or 'tif', got {label_file!r}")
    bad = (label < -1) | (label >= len(classes))
    label = np.where(bad, -1, label).astype(np.int64)
    if compact:
        present = np.unique(label[label >= 0])
        lut = np.full(len(classes), -1, dtype=np.int64)
        lut[present] = np.arange(len(present))
        label = np.where(label >= 0, lut[np.maximum(label, 0)], -1)
        classes = [classes[i] for i in present]
    return {
        "sources": {"S2": s2f.astype(np.float32), "S1": s1f},
        "bands": {"S2": list(S2_BANDS), "S1": list(S1_BANDS)},
        "dates": dates,
        "label": label,
        "classes": classes,
        "crs": "EPSG:32631",
        "transform": transform,
        "label_source": source,
        "note": "labels are WorldCereal model outputs, not ground truth",
    }


def worldcereal_patches(
    data: dict[str, Any],
    size: int = 32,
    stride: int | None = None,
    sources: tuple[str, ...] | None = None,
) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Cut the loaded patch (:func:`load_worldcereal_patch`) into ``size x size`` tiles
    every ``stride`` pixels (default ``size``; the last tiles are aligned to the edge)."""
    src = data["sources"]
    keys = tuple(src) if sources is None else sources
    missing = [k for k in keys if k not in src]
    if missing:
        raise DataError(f"unknown source(s) {missing}; the patch has {sorted(src)}")
    return tile_sample({k: src[k] for k in keys}, data["label"], size, stride)
