"""Spectral indices (NDVI, EVI, ...) computed from bands found by name.

Bands are matched case-insensitively through an alias table:

======  ==================  =====================  =====================  =====================
role    Sentinel-2/HLS S30  Landsat 8-9 / HLS L30  Landsat 4-7 (TM/ETM+)  MODIS
======  ==================  =====================  =====================  =====================
blue    B2, B02             B2, B02, SR_B2         B1, B01, SR_B1         blue, sur_refl_b03
green   B3, B03             B3, B03, SR_B3         B2, B02, SR_B2         green, sur_refl_b04
red     B4, B04             B4, B04, SR_B4         B3, B03, SR_B3         red, sur_refl_b01
nir     B8, B08 (else B8A)  B5, B05, SR_B5         B4, B04, SR_B4         nir, sur_refl_b02
swir1   B11                 B6, B06, SR_B6         B5, B05, SR_B5         sur_refl_b06
swir2   B12                 B7, B07, SR_B7         B7, B07, SR_B7         mir, sur_refl_b07
======  ==================  =====================  =====================  =====================

Plain names (``blue``, ``green``, ``red``, ``nir``, ``swir1``, ``swir2``, also ``nir08``,
``swir16``, ``swir22``, ``rededge1..3``, ``coastal``, ``nir2``) always work. A band named
with a prefix or suffix (``S2-L2A-B04``, ``OPTICAL_B04_10m``, ``S1-SIGMA0-VV``) is found by
its separator-delimited part (``B04``, ``VV``) when no band has the exact name and exactly
one band has that part. Numbered names like ``B5`` mean
different bands on different sensors, so they follow ``sensor`` (default ``"sentinel2"``;
use ``"landsat8"`` for Landsat 8/9 and HLS L30, ``"landsat7"`` for Landsat 4-7). MODIS
MOD13 ``mir`` is band 7 (2.1 µm), i.e. ``swir2``. ``band_map`` overrides any role, e.g.
``{"nir": "my_nir"}``.

Indices assume surface reflectance scaled to 0-1 (EVI and SAVI have additive constants).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError

__all__ = [
    "SENSORS",
    "add_indices",
    "available_indices",
    "band_lookup",
    "compute_index",
    "index_bands",
    "resolve_bands",
]

_PLAIN: dict[str, tuple[str, ...]] = {
    "blue": ("blue",),
    "green": ("green",),
    "red": ("red",),
    "rededge1": ("rededge1", "re1", "rededge"),
    "rededge2": ("rededge2", "re2"),
    "rededge3": ("rededge3", "re3"),
    "nir": ("nir", "nir08", "nir1"),
    "swir1": ("swir1", "swir16"),
    "swir2": ("swir2", "swir22", "mir"),
    "coastal": ("coastal", "coastal_aerosol"),
    "nir2": ("nir2", "nir08a", "narrow_nir"),
}

_MODIS = {
    "red": ("sur_refl_b01",),
    "nir": ("sur_refl_b02",),
    "blue": ("sur_refl_b03",),
    "green": ("sur_refl_b04",),
    "swir1": ("sur_refl_b06",),
    "swir2": ("sur_refl_b07",),
}


def _numbered(numbers: Mapping[str, Sequence[str]], prefix: str = "") -> dict[str, tuple]:
    out = {}
    for role, nums in numbers.items():
        names = []
        for num in nums:
            names.append(f"{prefix}B{num}")
            if num.isdigit() and len(num) == 1:
                names.append(f"{prefix}B0{num}")
        out[role] = tuple(names)
    return out


SENSORS: dict[str, dict[str, tuple[str, ...]]] = {
    "sentinel2": _numbered(
        {
            "blue": ["2"],
            "green": ["3"],
            "red": ["4"],
            "rededge1": ["5"],
            "rededge2": ["6"],
            "rededge3": ["7"],
            "nir": ["8", "8A"],
            "swir1": ["11"],
            "swir2": ["12"],
            "coastal": ["1"],
            "nir2": ["8A"],
        }
    ),
    "landsat8": _numbered(
        {
            "blue": ["2"],
            "green": ["3"],
            "red": ["4"],
            "nir": ["5"],
            "swir1": ["6"],
            "swir2": ["7"],
            "coastal": ["1"],
        }
    ),
    "landsat7": _numbered(
        {
            "blue": ["1"],
            "green": ["2"],
            "red": ["3"],
            "nir": ["4"],
            "swir1": ["5"],
            "swir2": ["7"],
        }
    ),
}
for _name, _table in list(SENSORS.items()):
    if _name.startswith("landsat"):
        for _role, _names in _table.items():  # Collection 2 names: SR_B4, ...
            _table[_role] = _names + tuple(f"SR_{n}" for n in _names if not n.startswith("B0"))
_SENSOR_ALIASES = {
    "s2": "sentinel2",
    "sentinel-2": "sentinel2",
    "hls_s30": "sentinel2",
    "landsat9": "landsat8",
    "landsat89": "landsat8",
    "hls_l30": "landsat8",
    "landsat5": "landsat7",
    "landsat4": "landsat7",
    "tm": "landsat7",
    "etm": "landsat7",
}


@dataclass(frozen=True)
class _Index:
    needs: tuple[str, ...]
    formula: Callable[..., np.ndarray]
    description: str


def _nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a - b) / (a + b)


_INDICES: dict[str, _Index] = {
    "NDVI": _Index(("nir", "red"), lambda nir, red: _nd(nir, red), "(nir-red)/(nir+red)"),
    "EVI": _Index(
        ("nir", "red", "blue"),
        lambda nir, red, blue: 2.5 * (nir - red) / (nir + 6.0 * red - 7.5 * blue + 1.0),
        "2.5(nir-red)/(nir+6red-7.5blue+1)",
    ),
    "EVI2": _Index(
        ("nir", "red"),
        lambda nir, red: 2.5 * (nir - red) / (nir + 2.4 * red + 1.0),
        "2.5(nir-red)/(nir+2.4red+1)",
    ),
    "NDWI": _Index(
        ("green", "nir"), lambda green, nir: _nd(green, nir), "(green-nir)/(green+nir), McFeeters"
    ),
    "NDMI": _Index(("nir", "swir1"), lambda nir, sw1: _nd(nir, sw1), "(nir-swir1)/(nir+swir1)"),
    "SAVI": _Index(
        ("nir", "red"),
        lambda nir, red: 1.5 * (nir - red) / (nir + red + 0.5),
        "1.5(nir-red)/(nir+red+0.5), L=0.5",
    ),
    "GNDVI": _Index(("nir", "green"), lambda nir, g: _nd(nir, g), "(nir-green)/(nir+green)"),
    "NBR": _Index(("nir", "swir2"), lambda nir, sw2: _nd(nir, sw2), "(nir-swir2)/(nir+swir2)"),
    "NDRE": _Index(
        ("nir", "rededge1"), lambda nir, re: _nd(nir, re), "(nir-rededge1)/(nir+rededge1)"
    ),
}


def available_indices() -> list[str]:
    """Names of the supported indices."""
    return list(_INDICES)


def index_bands(name: str) -> tuple[str, ...]:
    """Band roles an index needs, e.g. ``("nir", "red")`` for NDVI."""
    return _lookup(name).needs


def _lookup(name: str) -> _Index:
    key = str(name).upper()
    if key not in _INDICES:
        raise DataError(f"unknown index {name!r}; available: {', '.join(_INDICES)}")
    return _INDICES[key]


def _sensor_table(sensor: str) -> dict[str, tuple[str, ...]]:
    key = str(sensor).lower().replace(" ", "")
    key = _SENSOR_ALIASES.get(key, key)
    if key not in SENSORS:
        options = sorted({*SENSORS, *_SENSOR_ALIASES})
        raise DataError(f"unknown sensor {sensor!r}; use one of {options}")
    return SENSORS[key]


def resolve_bands(
    bands: Sequence[str],
    roles: Sequence[str],
    sensor: str = "sentinel2",
    band_map: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Position of the band playing each role; roles that cannot be found are left out."""
    lookup = band_lookup(bands)
    table = _sensor_table(sensor)
    overrides = {k.lower(): v for k, v in (band_map or {}).items()}
    found: dict[str, int] = {}
    for role in roles:
        if role in overrides:
            candidates: tuple[str, ...] = (overrides[role],)
        else:
            candidates = _PLAIN.get(role, ()) + _MODIS.get(role, ()) + table.get(role, ())
        for cand in candidates:
            if cand.lower() in lookup:
                found[role] = lookup[cand.lower()]
                break
    return found


def band_lookup(bands: Sequence[str]) -> dict[str, int]:
    """Lower-case name → band position: every exact name, plus each separator-delimited
    part of a name (``S2-L2A-B04`` → ``b04``) that no exact name takes and that occurs in
    exactly one band."""
    import re

    lookup = {b.lower(): i for i, b in enumerate(bands)}
    parts: dict[str, list[int]] = {}
    for i, b in enumerate(bands):
        for part in set(re.split(r"[-_ .:/]+", b.lower())):
            if part and part not in lookup:
                parts.setdefault(part, []).append(i)
    lookup.update({part: hits[0] for part, hits in parts.items() if len(hits) == 1})
    return lookup


def _missing_message(name: str, needs: Sequence[str], found: Mapping[str, int], bands) -> str:
    missing = [r for r in needs if r not in found]
    return (
        f"cannot compute {name.upper()}: it needs bands {list(needs)} but "
        f"{missing} {'is' if len(missing) == 1 else 'are'} not among the set's bands "
        f"{list(bands)}; name them e.g. B4/B8 (Sentinel-2), red/nir, or pass "
        f"sensor=... / band_map={{'{missing[0]}': '<band name>'}}"
    )


def compute_index(
    name: str,
    ts: TimeSeriesSet,
    sensor: str = "sentinel2",
    band_map: Mapping[str, str] | None = None,
) -> np.ndarray:
    """One index as ``float32 [N, T]`` (NaN where an input is NaN or the ratio undefined)."""
    spec = _lookup(name)
    found = resolve_bands(ts.bands, spec.needs, sensor, band_map)
    if len(found) < len(spec.needs):
        raise DataError(_missing_message(name, spec.needs, found, ts.bands))
    inputs = [ts.values[:, :, found[r]].astype(np.float64) for r in spec.needs]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = spec.formula(*inputs)
    out[~np.isfinite(out)] = np.nan
    return out.astype(np.float32)


def add_indices(
    ts: TimeSeriesSet,
    names: Sequence[str] = ("NDVI",),
    sensor: str = "sentinel2",
    band_map: Mapping[str, str] | None = None,
    if_exists: str = "keep",
) -> TimeSeriesSet:
    """A copy of ``ts`` with index bands appended (named ``NDVI``, ``EVI``, ...).

    An index whose name is already a band is kept as it is (``if_exists="keep"``),
    recomputed in place (``"replace"``) or is an error (``"error"``). A missing input band
    raises :class:`DataError` listing what is needed and what the set has. The validity mask
    is kept (and narrowed where an index is undefined).
    """
    if isinstance(names, str):
        names = (names,)
    if if_exists not in {"keep", "replace", "error"}:
        raise DataError(f"if_exists must be 'keep', 'replace' or 'error', got {if_exists!r}")
    values = ts.values
    bands = list(ts.bands)
    lower = [b.lower() for b in bands]
    new_cols: list[np.ndarray] = []
    new_names: list[str] = []
    for name in dict.fromkeys(n.upper() for n in names):
        _lookup(name)
        if name.lower() in lower:
            if if_exists == "error":
                raise DataError(f"the set already has a band named {name}")
            if if_exists == "keep":
                continue
            values = values.copy() if values is ts.values else values
            values[:, :, lower.index(name.lower())] = compute_index(name, ts, sensor, band_map)
            continue
        new_cols.append(compute_index(name, ts, sensor, band_map))
        new_names.append(name)
    if new_cols:
        values = np.concatenate([values, np.stack(new_cols, axis=2)], axis=2)
    if values is ts.values:
        return ts
    return ts.replace(values=values, bands=bands + new_names, mask=ts.mask)
