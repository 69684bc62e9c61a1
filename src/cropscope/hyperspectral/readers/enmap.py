"""Official DLR EnMAP L1C/L2A product: ``*-SPECTRAL_IMAGE.TIF`` + ``*-METADATA.XML``.

The product folder holds the image (GeoTIFF, or ENVI ``.BSQ/.BIL/.BIP`` + ``.HDR``) and the
metadata XML. Per band, the XML has
``specific/bandCharacterisation/bandID[@number]`` with ``wavelengthCenterOfBand`` (nm; the
name used in DLR products, ``wavelengthCenterOfGravity`` is accepted too), ``FWHMOfBand``,
``GainOfBand`` and ``OffsetOfBand``; physical value = DN × gain + offset (L2A reflectance:
gain 1e-4). Nodata is the image's nodata value, else −32768 for integer data. The
processing level is ``base/level`` (or ``metadata/schema/processingLevel``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.errors import DataError
from cropscope.hyperspectral.readers._scene import apply_scale, build_scene, to_float

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["enmap_product_files", "read_enmap_metadata", "read_enmap_product"]

_IMAGE_SUFFIXES = (".tif", ".tiff", ".bsq", ".bil", ".bip")
_CENTRE_TAGS = ("wavelengthCenterOfBand", "wavelengthCenterOfGravity")


def _find(folder: Path, marker: str, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and marker in p.name.upper() and p.suffix.lower() in suffixes)


def enmap_product_files(path: str | Path) -> tuple[Path, Path]:
    """``(metadata XML, spectral image)`` for a product folder, its XML or its image."""
    path = Path(path).expanduser()
    folder = path if path.is_dir() else path.parent
    xmls = ([path] if path.is_file() and path.suffix.lower() == ".xml"
            else _find(folder, "METADATA", (".xml",)))
    images = ([path] if path.is_file() and path.suffix.lower() in _IMAGE_SUFFIXES
              else _find(folder, "SPECTRAL_IMAGE", _IMAGE_SUFFIXES))
    if len(xmls) != 1:
        raise DataError(f"expected one *-METADATA.XML in {folder}, found {len(xmls)}")
    if not images:
        raise DataError(f"no *-SPECTRAL_IMAGE file in {folder}")
    # prefer GeoTIFF; ENVI products also carry a .HDR next to the binary
    images.sort(key=lambda p: (p.suffix.lower() not in (".tif", ".tiff"), p.name))
    return xmls[0], images[0]


def read_enmap_metadata(path: str | Path) -> dict[str, Any]:
    """Band table and a few scene facts from an EnMAP ``METADATA.XML``."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"cannot parse EnMAP metadata {path}: {exc}") from None
    bands = root.findall(".//specific/bandCharacterisation/bandID")
    if not bands:
        raise DataError(f"{path} has no specific/bandCharacterisation/bandID elements")
    rows: list[tuple[int, float, float, float, float]] = []
    for band in bands:
        centre = next((band.findtext(t) for t in _CENTRE_TAGS if band.find(t) is not None), None)
        try:
            rows.append((
                int(band.get("number", len(rows) + 1)),
                float(centre) if centre is not None else np.nan,
                float(band.findtext("FWHMOfBand") or "nan"),
                float(band.findtext("GainOfBand") or "1"),
                float(band.findtext("OffsetOfBand") or "0"),
            ))
        except ValueError as exc:
            raise DataError(f"{path}: unreadable band characterisation: {exc}") from None
    rows.sort()
    table = np.asarray(rows, dtype=np.float64)
    level = (root.findtext(".//base/level") or root.findtext(".//metadata/schema/processingLevel")
             or "").strip()
    return {
        "number": table[:, 0].astype(int),
        "wavelength": table[:, 1],
        "fwhm": table[:, 2],
        "gain": table[:, 3],
        "offset": table[:, 4],
        "level": level,
        "start_time": (root.findtext(".//base/temporalCoverage/startTime") or "").strip(),
        "name": (root.findtext(".//metadata/name") or "").strip(),
    }


def read_enmap_product(path: str | Path, *, scale: float | None = None,
                       nodata: float | None = None) -> xr.DataArray:
    """Read an EnMAP product (folder, metadata XML or spectral image)."""
    from cropscope.hyperspectral.readers.envi import envi_paths
    from cropscope.hyperspectral.readers.geotiff import read_raster

    xml_path, image_path = enmap_product_files(path)
    meta = read_enmap_metadata(xml_path)
    if image_path.suffix.lower() in (".tif", ".tiff"):
        info = read_raster(image_path)
    else:
        _, data_path = envi_paths(image_path)
        info = read_raster(data_path)
    raw = info["raw"]
    n_bands = raw.shape[0]
    if meta["wavelength"].size != n_bands:
        raise DataError(f"{xml_path.name} describes {meta['wavelength'].size} bands but "
                        f"{image_path.name} has {n_bands}")
    if nodata is not None:
        nd: Any = nodata
    elif any(v is not None for v in info["nodata"]):
        nd = info["nodata"]
    elif np.issubdtype(np.dtype(info["dtype"]), np.integer):
        nd = -32768.0
    else:
        nd = None
    data = to_float(raw, nd)
    gain = np.full(n_bands, float(scale)) if scale is not None else meta["gain"]
    offset = np.zeros(n_bands) if scale is not None else meta["offset"]
    data = apply_scale(data, gain, offset)
    level = meta["level"].upper()
    units = ("reflectance" if "L2A" in level else "radiance" if level.startswith("L1")
             else "unknown")
    return build_scene(
        data, wavelength=meta["wavelength"], fwhm=meta["fwhm"], bad_band=None,
        crs=info["crs"], transform=info["transform"], sensor="EnMAP", units=units,
        source=image_path, fmt="enmap-product",
        scale_factor=gain.tolist(),
        attrs={"processing_level": meta["level"], "time": meta["start_time"],
               "metadata_file": str(xml_path),
               "nodata_value": nd if not isinstance(nd, list) else nd[0]},
    )
