"""Shared pieces of the hyperspectral readers: one scene constructor and metadata parsing."""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.data.readers.cube import pixel_centres, write_grid
from cropscope.errors import DataError

if TYPE_CHECKING:
    import xarray as xr

# wavelength units as they appear in ENVI headers, GDAL metadata and product files
_UNIT_FACTORS = {
    "nm": 1.0, "nanometer": 1.0, "nanometers": 1.0, "nanometre": 1.0, "nanometres": 1.0,
    "um": 1000.0, "µm": 1000.0, "micrometer": 1000.0, "micrometers": 1000.0,
    "micrometre": 1000.0, "micrometres": 1000.0, "micron": 1000.0, "microns": 1000.0,
    "mu": 1000.0, "mm": 1e6, "millimeters": 1e6, "m": 1e9, "meters": 1e9,
}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER_WITH_UNIT = re.compile(rf"({_NUMBER})\s*(nanomet\w*|micromet\w*|microns?|nm|um|µm)?",
                               re.IGNORECASE)

# sensor from the standard product file names
_SENSOR_PATTERNS = (
    (re.compile(r"^ang\d{8}t\d{6}"), "AVIRIS-NG"),
    (re.compile(r"^f\d{6}t\d{2}"), "AVIRIS"),
    (re.compile(r"^emit"), "EMIT"),
    (re.compile(r"enmap"), "EnMAP"),
    (re.compile(r"^prs_"), "PRISMA"),
    (re.compile(r"desis"), "DESIS"),
)
_RADIANCE_TOKEN = re.compile(r"(?:^|[^a-z])(rdn|radiance)(?:[^a-z]|$)")
_REFLECTANCE_TOKEN = re.compile(r"(?:^|[^a-z])(rfl|refl|reflectance|l2a)(?:[^a-z]|$)")


def unit_factor(units: str | None) -> float | None:
    """Factor that converts a wavelength unit name to nm (``None`` if unknown/empty)."""
    if not units:
        return None
    key = units.strip().strip("{}").strip().lower()
    return _UNIT_FACTORS.get(key)


def to_nanometres(values: Any, units: str | None = None) -> np.ndarray:
    """Wavelengths (or widths) as float64 nm.

    ``units`` names the unit (``"Micrometers"``, ``"nm"``, ...). When it is missing or
    unknown, values that all lie below 30 are taken as µm (no sensor has bands below
    30 nm, none beyond 30 µm), anything else as nm.
    """
    arr = np.asarray(values, dtype=np.float64)
    factor = unit_factor(units)
    if factor is None:
        finite = arr[np.isfinite(arr)]
        factor = 1000.0 if finite.size and np.nanmax(finite) < 30.0 else 1.0
    return arr * factor


def widths_to_nanometres(
    fwhm: Any, wavelength_units: str | None, raw_wavelength: Any
) -> np.ndarray:
    """FWHM in the same unit as the raw wavelengths -> nm (uses the wavelengths' unit)."""
    arr = np.asarray(fwhm, dtype=np.float64)
    factor = unit_factor(wavelength_units)
    if factor is None:
        raw = np.asarray(raw_wavelength, dtype=np.float64)
        finite = raw[np.isfinite(raw)]
        factor = 1000.0 if finite.size and np.nanmax(finite) < 30.0 else 1.0
    return arr * factor


def wavelength_from_names(names: Sequence[str | None]) -> np.ndarray | None:
    """Band centres from band names such as ``"376.44 Nanometers"`` or ``"band 1 (418 nm)"``.

    Returns nm, or ``None`` unless every name carries exactly one readable number
    (a unit word is used when present; a parenthesised number wins over a leading one).
    """
    out = []
    for name in names:
        if not name:
            return None
        text = str(name)
        inner = re.search(r"\(([^)]*)\)", text)
        candidates = _NUMBER_WITH_UNIT.findall(inner.group(1) if inner else text)
        with_unit = [c for c in candidates if c[1]]
        pick = with_unit[-1] if with_unit else (candidates[-1] if len(candidates) == 1 else None)
        if pick is None:
            return None
        value = float(pick[0])
        factor = unit_factor(pick[1]) if pick[1] else None
        out.append(value * factor if factor else value)
    arr = np.asarray(out, dtype=np.float64)
    if arr.size and np.nanmax(arr) < 30.0:  # bare numbers in µm
        arr = arr * 1000.0
    return arr


def guess_sensor(name: str) -> str:
    """Sensor from a standard product file name, else ``"unknown"``."""
    low = Path(name).name.lower()
    for pattern, sensor in _SENSOR_PATTERNS:
        if pattern.search(low):
            return sensor
    return "unknown"


def guess_units(name: str, sensor: str) -> str:
    """Radiometric quantity from a product file name: radiance, reflectance or unknown."""
    low = Path(name).name.lower()
    if _RADIANCE_TOKEN.search(low):
        return "radiance (uW cm-2 sr-1 nm-1)" if sensor.startswith("AVIRIS") else "radiance"
    if _REFLECTANCE_TOKEN.search(low):
        return "reflectance"
    return "unknown"


# ------------------------------------------------------------------ user-supplied bands
def read_band_table(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Band centres and FWHM (nm) from a CSV: a header row naming a centre column
    (``center_nm``, ``wavelength``, ...) and optionally a ``fwhm`` column, or two bare
    columns (centre, fwhm). Units come from the column name suffix, else nm/µm by size."""
    with path.open(newline="") as fh:
        sample = fh.read(4096)
        fh.seek(0)
        has_header = any(ch.isalpha() for ch in sample.splitlines()[0]) if sample else False
        rows = list(csv.reader(fh))
    if not rows:
        raise DataError(f"wavelength file {path} is empty")
    if not has_header:
        try:
            values = np.asarray([[float(v) for v in r[:2]] for r in rows if r], dtype=np.float64)
        except ValueError as exc:
            raise DataError(f"cannot read numbers from wavelength file {path}: {exc}") from None
        centre = to_nanometres(values[:, 0])
        fwhm = (widths_to_nanometres(values[:, 1], None, values[:, 0])
                if values.shape[1] > 1 else None)
        return centre, fwhm
    header = [h.strip().lower() for h in rows[0]]

    def find(*keys: str) -> int | None:
        for i, h in enumerate(header):
            if any(k in h for k in keys):
                return i
        return None

    c_idx = find("center", "centre", "wavelength", "wl", "lambda")
    f_idx = find("fwhm", "width", "bandwidth")
    if c_idx is None:
        raise DataError(
            f"wavelength file {path} has no centre column (one named like center_nm or "
            f"wavelength); columns: {rows[0]}"
        )
    body = [r for r in rows[1:] if r and any(v.strip() for v in r)]
    try:
        centre_raw = np.asarray([float(r[c_idx]) for r in body], dtype=np.float64)
        fwhm_raw = (np.asarray([float(r[f_idx]) if r[f_idx].strip() else np.nan for r in body],
                               dtype=np.float64) if f_idx is not None else None)
    except (ValueError, IndexError) as exc:
        raise DataError(f"cannot read numbers from wavelength file {path}: {exc}") from None

    def col_units(i: int) -> str | None:
        h = header[i]
        for token in ("nm", "um", "µm", "micrometers", "nanometers"):
            if h.endswith(token) or f"({token})" in h or f"[{token}]" in h:
                return token
        return None

    units = col_units(c_idx)
    centre = to_nanometres(centre_raw, units)
    fwhm = None
    if fwhm_raw is not None:
        f_units = col_units(f_idx) if f_idx is not None else None
        fwhm = (to_nanometres(fwhm_raw, f_units) if f_units
                else widths_to_nanometres(fwhm_raw, units, centre_raw))
    return centre, fwhm


def band_metadata_from_user(
    wavelengths: Any, fwhm: Any, n_bands: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``wavelengths``/``fwhm`` as given by the user (arrays in nm or µm, or a CSV path)."""
    wl: np.ndarray | None = None
    fw: np.ndarray | None = None
    if wavelengths is not None:
        if isinstance(wavelengths, str | Path):
            path = Path(wavelengths).expanduser()
            if not path.is_file():
                raise DataError(f"wavelength file not found: {path}")
            wl, fw = read_band_table(path)
        else:
            wl = to_nanometres(np.ravel(np.asarray(wavelengths, dtype=np.float64)))
        if wl.size != n_bands:
            raise DataError(f"{wl.size} wavelengths given for {n_bands} bands")
    if fwhm is not None:
        raw = np.ravel(np.asarray(fwhm, dtype=np.float64))
        fw = raw * 1000.0 if raw.size and np.nanmax(raw) < 1.0 else raw  # µm widths
        if fw.size != n_bands:
            raise DataError(f"{fw.size} FWHM values given for {n_bands} bands")
    return wl, fw


# ------------------------------------------------------------------------- the scene
def is_georeferenced(crs: Any, transform: Any) -> bool:
    """A real grid: a CRS, or a transform that is not GDAL's identity placeholder."""
    if transform is None:
        return False
    return crs is not None or not transform.is_identity


def grid_coords(crs: Any, transform: Any, height: int, width: int) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """``(y, x)`` pixel-centre coordinates, or row/column numbers without a grid."""
    if is_georeferenced(crs, transform):
        return pixel_centres(transform, height, width)
    return np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64)


def attach_grid(da: xr.DataArray, crs: Any, transform: Any) -> xr.DataArray:
    """Write CRS/transform with rioxarray and into ``attrs`` (as ``read_cube`` does)."""
    if not is_georeferenced(crs, transform):
        return da
    return write_grid(da, crs, transform)


def build_scene(
    data: np.ndarray,
    *,
    wavelength: np.ndarray | None,
    fwhm: np.ndarray | None = None,
    bad_band: np.ndarray | None = None,
    crs: Any = None,
    transform: Any = None,
    sensor: str = "unknown",
    units: str = "unknown",
    source: str | Path = "",
    fmt: str = "",
    scale_factor: float | Sequence[float] = 1.0,
    attrs: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """The one place that assembles the ``(band, y, x)`` scene DataArray.

    ``data`` is float32 with NaN for nodata. Bands that are NaN everywhere are flagged
    in ``bad_band`` (nodata-filled bands). ``band`` holds 1-based band numbers of the file.
    """
    import xarray as xr

    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 3:
        raise DataError(f"a hyperspectral scene is (band, y, x); got shape {data.shape}")
    n_bands, height, width = data.shape
    wl = (np.full(n_bands, np.nan) if wavelength is None
          else np.asarray(wavelength, dtype=np.float64))
    fw = np.full(n_bands, np.nan) if fwhm is None else np.asarray(fwhm, dtype=np.float64)
    for what, arr in (("wavelengths", wl), ("FWHM values", fw)):
        if arr.shape != (n_bands,):
            raise DataError(f"{arr.size} {what} for {n_bands} bands in {source}")
    bad = np.zeros(n_bands, bool) if bad_band is None else np.asarray(bad_band, dtype=bool)
    if bad.shape != (n_bands,):
        raise DataError(f"{bad.size} bad-band flags for {n_bands} bands in {source}")
    if height and width:
        bad = bad | np.isnan(data).reshape(n_bands, -1).all(axis=1)

    ys, xs = grid_coords(crs, transform, height, width)
    scene = xr.DataArray(
        data,
        dims=("band", "y", "x"),
        coords={
            "band": np.arange(1, n_bands + 1),
            "wavelength": ("band", wl),
            "fwhm": ("band", fw),
            "bad_band": ("band", bad),
            "y": ys,
            "x": xs,
        },
        name="hsi",
    )
    scene = attach_grid(scene, crs, transform)
    if isinstance(scale_factor, Sequence) and not isinstance(scale_factor, str):
        factors = [float(f) for f in scale_factor]
        scale_attr: float | list[float] = (factors[0] if factors and len(set(factors)) == 1
                                           else factors)
    else:
        scale_attr = float(scale_factor)
    scene.attrs.update(
        sensor=sensor,
        units=units,
        source=str(source),
        format=fmt,
        scale_factor=scale_attr,
        wavelength_units="nm",
    )
    if attrs:
        scene.attrs.update(attrs)
    return scene


def finish(
    scene: xr.DataArray,
    *,
    wavelengths: Any = None,
    fwhm: Any = None,
    sensor: str | None = None,
    units: str | None = None,
) -> xr.DataArray:
    """Apply the user's overrides of band metadata, sensor and units to a scene."""
    wl, fw = band_metadata_from_user(wavelengths, fwhm, scene.sizes["band"])
    if wl is not None:
        scene = scene.assign_coords(wavelength=("band", wl))
        scene.attrs["wavelength_source"] = "user"
    if fw is not None:
        scene = scene.assign_coords(fwhm=("band", fw))
    if sensor is not None:
        scene.attrs["sensor"] = sensor
    if units is not None:
        scene.attrs["units"] = units
    return scene


def to_float(raw: np.ndarray, nodata: Sequence[float | None] | float | None) -> np.ndarray:
    """``(band, y, x)`` raw values -> float32 with NaN where a band's nodata value occurs."""
    data = raw.astype(np.float32)
    n = raw.shape[0]
    values = list(nodata) if isinstance(nodata, Sequence) else [nodata] * n
    for i, nd in enumerate(values):
        if nd is None:
            continue
        mask = np.isnan(raw[i]) if np.isnan(nd) else raw[i] == nd
        data[i][mask] = np.nan
    return data


def apply_scale(
    data: np.ndarray, gain: np.ndarray | float, offset: np.ndarray | float = 0.0
) -> np.ndarray:
    """``data * gain + offset`` per band in float64, back to float32 (NaN stays NaN)."""
    g = np.broadcast_to(np.asarray(gain, dtype=np.float64), (data.shape[0],))
    o = np.broadcast_to(np.asarray(offset, dtype=np.float64), (data.shape[0],))
    if np.all(g == 1.0) and np.all(o == 0.0):
        return data
    return (data * g[:, None, None] + o[:, None, None]).astype(np.float32)
