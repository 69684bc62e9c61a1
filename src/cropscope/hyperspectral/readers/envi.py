"""ENVI ``.hdr`` + binary (BSQ/BIL/BIP): AVIRIS, AVIRIS-NG, EMIT exports, any ENVI file.

The header is parsed here (it is plain text); GDAL's ENVI driver (through rasterio) reads
the binary — every interleave, byte order, header offset and data type — and turns
``map info`` / ``coordinate system string`` into the CRS and transform.

Band metadata come from ``wavelength`` (+ ``wavelength units``; µm become nm), else from
numbers in ``band names`` (``"376.44 Nanometers"``); ``fwhm``; ``bbl`` (0 = bad band).
``data ignore value`` becomes NaN. Scaling: ``reflectance scale factor`` (data are divided
by it), else ``data gain values``/``data offset values`` (``value * gain + offset``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.errors import DataError
from cropscope.hyperspectral.readers._scene import (
    apply_scale,
    build_scene,
    guess_sensor,
    guess_units,
    to_float,
    to_nanometres,
    wavelength_from_names,
    widths_to_nanometres,
)

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["envi_paths", "read_envi", "read_envi_header"]

_TEXT_KEYS = {"description", "coordinate system string"}
_DATA_SUFFIXES = ("", ".img", ".dat", ".bsq", ".bil", ".bip", ".raw", ".bin", ".envi")


def read_envi_header(path: str | Path) -> dict[str, Any]:
    """Parse an ENVI header: ``{key (lower case): str | list[str]}``.

    Brace values become lists split on commas, except free text (``description``,
    ``coordinate system string``), which stays one string.
    """
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise DataError(f"cannot read ENVI header {path}: {exc}") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip().upper().startswith("ENVI"):
        raise DataError(f"{path} is not an ENVI header (first line must be 'ENVI')")
    header: dict[str, Any] = {}
    i = 1
    while i < len(lines):
        line = lines[i]
        i += 1
        if "=" not in line or line.lstrip().startswith(";"):
            continue
        key, value = line.split("=", 1)
        key = " ".join(key.strip().lower().split())
        value = value.strip()
        if value.startswith("{"):
            while "}" not in value and i < len(lines):
                value += "\n" + lines[i]
                i += 1
            inner = value[1 : value.rfind("}")] if "}" in value else value[1:]
            if key in _TEXT_KEYS:
                header[key] = " ".join(inner.split())
            else:
                header[key] = [item.strip() for item in inner.replace("\n", " ").split(",")]
                if header[key] == [""]:
                    header[key] = []
        else:
            header[key] = value
    return header


def envi_paths(path: str | Path) -> tuple[Path, Path]:
    """``(header, data file)`` for a path to either of them."""
    path = Path(path).expanduser()
    if path.suffix.lower() == ".hdr":
        header = path
        stem = path.with_suffix("")
        candidates = [stem.with_name(stem.name + s) for s in _DATA_SUFFIXES]
        candidates += [stem.with_name(stem.name + s.upper()) for s in _DATA_SUFFIXES if s]
        data = next((c for c in candidates if c.is_file()), None)
        if data is None:
            raise DataError(f"no data file next to the ENVI header {path}")
        return header, data
    for header in (path.with_name(path.name + ".hdr"), path.with_suffix(".hdr"),
                   path.with_name(path.name + ".HDR"), path.with_suffix(".HDR")):
        if header.is_file():
            return header, path
    raise DataError(f"no ENVI header (.hdr) found for {path}")


def _floats(values: Any, what: str, n: int, path: Path) -> np.ndarray:
    try:
        arr = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"ENVI header {path}: cannot read the {what} values") from None
    if arr.size != n:
        raise DataError(f"ENVI header {path}: {arr.size} {what} values for {n} bands")
    return arr


def _check_envi_size(src: Any, header: dict[str, Any], data_path: Path) -> None:
    """Refuse a data file shorter than its header declares (GDAL would read the missing
    part as zeros: a truncated file looks like zero reflectance) and a declared size above
    the memory limit (:func:`cropscope.settings.check_memory`), before reading."""
    from cropscope.settings import check_memory

    itemsize = np.dtype(src.dtypes[0]).itemsize
    need = int(src.width) * int(src.height) * int(src.count) * itemsize
    check_memory(need * (1 + 4 / itemsize), f"ENVI image {data_path.name} "
                 f"({src.count} bands x {src.height} x {src.width})")  # raw + float32 copy
    try:
        offset = int(float(header.get("header offset") or 0))
    except (TypeError, ValueError):
        raise DataError(f"ENVI header of {data_path}: 'header offset' is not a number") \
            from None
    size = data_path.stat().st_size
    if size < offset + need:
        raise DataError(f"ENVI data file {data_path} is truncated: {size} bytes, the header "
                        f"declares {offset + need} ({src.count} bands x {src.height} lines x "
                        f"{src.width} samples x {itemsize} bytes + {offset} header bytes)")


def read_envi(path: str | Path, *, scale: float | None = None,
              nodata: float | None = None) -> xr.DataArray:
    """Read an ENVI image (give the ``.hdr`` or the data file)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    header_path, data_path = envi_paths(path)
    header = read_envi_header(header_path)
    # GDAL reads an unknown interleave or byte order as the default: scrambled or
    # byte-swapped values, never an error
    interleave = str(header.get("interleave", "bsq")).strip().lower()
    if interleave not in ("bsq", "bil", "bip"):
        raise DataError(f"ENVI header {header_path}: interleave {interleave!r} is not bsq, "
                        "bil or bip")
    order = str(header.get("byte order", "0")).strip()
    if order not in ("0", "1"):
        raise DataError(f"ENVI header {header_path}: byte order {order!r} is not 0 (little "
                        "endian) or 1 (big endian)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(data_path, driver="ENVI") as src:
                _check_envi_size(src, header, data_path)
                raw = src.read()
                crs, transform = src.crs, src.transform
    except RasterioIOError as exc:
        raise DataError(f"cannot read ENVI file {data_path}: {exc}") from None
    n_bands = raw.shape[0]

    ignore = header.get("data ignore value")
    nd = nodata if nodata is not None else (float(ignore) if ignore not in (None, "") else None)
    data = to_float(raw, nd)

    units_name = header.get("wavelength units")
    wavelength = None
    raw_wl = None
    if header.get("wavelength"):
        raw_wl = _floats(header["wavelength"], "wavelength", n_bands, header_path)
        wavelength = to_nanometres(raw_wl, units_name)
    elif header.get("band names"):
        names = header["band names"]
        if len(names) == n_bands:
            wavelength = wavelength_from_names(names)
    fwhm = None
    if header.get("fwhm"):
        raw_fwhm = _floats(header["fwhm"], "fwhm", n_bands, header_path)
        fwhm = (widths_to_nanometres(raw_fwhm, units_name, raw_wl) if raw_wl is not None
                else to_nanometres(raw_fwhm, units_name or "nm"))
    bad = None
    if header.get("bbl"):
        bad = _floats(header["bbl"], "bbl", n_bands, header_path) == 0

    gain: Any = 1.0
    offset: Any = 0.0
    if scale is not None:
        gain = float(scale)
    elif header.get("reflectance scale factor"):
        gain = 1.0 / float(header["reflectance scale factor"])
    elif header.get("data gain values") or header.get("data offset values"):
        gain = (_floats(header["data gain values"], "data gain", n_bands, header_path)
                if header.get("data gain values") else 1.0)
        offset = (_floats(header["data offset values"], "data offset", n_bands, header_path)
                  if header.get("data offset values") else 0.0)
    data = apply_scale(data, gain, offset)

    sensor = header.get("sensor type") or "unknown"
    if not sensor or sensor.lower() == "unknown":
        sensor = guess_sensor(data_path.name)
    units = guess_units(data_path.name, sensor)
    if units == "unknown" and header.get("reflectance scale factor"):
        units = "reflectance"
    return build_scene(
        data, wavelength=wavelength, fwhm=fwhm, bad_band=bad, crs=crs, transform=transform,
        sensor=sensor, units=units, source=data_path, fmt="envi",
        scale_factor=np.broadcast_to(np.asarray(gain, dtype=float), (n_bands,)).tolist(),
        attrs={"interleave": interleave, "nodata_value": nd,
               "description": header.get("description", "")},
    )

