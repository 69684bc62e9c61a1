"""Reader (and writer, for tests and examples) of the CropGlobe packaged ``.npz`` files.

Each file holds ``fea`` (features) and ``lbl`` (codes in the global index 0 corn, 1 soybeans,
2 rice, 3 wheat, 4 sugarcane, 5 cotton, 6 other), one file per feature type and country
(cropnet.md §1):

| kind | file name | ``fea`` |
|---|---|---|
| ``median`` | ``median_S2_{CC}_month5-11_day5.npz`` | ``[N, 10, 43]`` (5-day steps, May-Nov) |
| ``median_full`` | ``median_S2_{CC}_month1-12_day5.npz`` | ``[N, 10, 73]`` (full year) |
| ``harmonic`` | ``harmonic_{CC}_month5-11.npz`` | ``[N, D]`` |
| ``presto`` / ``presto_maynov`` | ``presto_embedding_S2_{CC}[_MayNov].npz`` | ``[N, D]`` |
| ``alphaearth`` | ``alphaearth_embedding_{CC}.npz`` | ``[N, 64]`` |

Median files become a :class:`TimeSeriesSet` ``[N, T, C]`` with the ten Sentinel-2 bands
(plus ``VV``, ``VH`` when ``fea`` has 12) and the dates of the 5-day windows (label year 2023);
vector files become a set with one time step and one "band" per feature (``dates=None``),
which the tree models read as a flat vector. ``classes`` is always the full global index, so
codes agree across countries; ``meta['country']`` holds the country code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.io import ARRAY_READ_ERRORS, atomic_path

__all__ = [
    "CROPGLOBE_BANDS",
    "CROPGLOBE_CLASSES",
    "CROPGLOBE_FILES",
    "cropglobe_path",
    "read_cropglobe",
    "read_cropglobe_file",
    "write_cropglobe_file",
]

#: Sentinel-2 bands assumed for ``fea[:, :10]`` (cropnet.md §2.1), then S1 ``VV, VH``
CROPGLOBE_BANDS: tuple[str, ...] = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
#: the global CropGlobe label index (code = position)
CROPGLOBE_CLASSES: tuple[str, ...] = (
    "corn", "soybeans", "rice", "wheat", "sugarcane", "cotton", "other",
)
#: feature kind -> file name pattern
CROPGLOBE_FILES: dict[str, str] = {
    "median": "median_S2_{cc}_month5-11_day5.npz",
    "median_full": "median_S2_{cc}_month1-12_day5.npz",
    "harmonic": "harmonic_{cc}_month5-11.npz",
    "presto": "presto_embedding_S2_{cc}.npz",
    "presto_maynov": "presto_embedding_S2_{cc}_MayNov.npz",
    "alphaearth": "alphaearth_embedding_{cc}.npz",
}
_YEAR = 2023
_DAY = 5
#: first 5-day window (DOY index) of the median files: May-Nov starts at DOY 121
_FIRST_WINDOW = {"median": (121 - 1) // _DAY, "median_full": 0}


def cropglobe_path(directory: str | Path, kind: str, country: str) -> Path:
    """The file of ``kind`` for ``country`` (ISO-3 code) in ``directory``."""
    if kind not in CROPGLOBE_FILES:
        raise DataError(
            f"unknown CropGlobe feature kind {kind!r}; options: {list(CROPGLOBE_FILES)}"
        )
    return Path(directory) / CROPGLOBE_FILES[kind].format(cc=str(country).upper())


def _kind_of(path: Path) -> tuple[str, str]:
    """Kind and country code from a file name."""
    for kind, pattern in CROPGLOBE_FILES.items():
        head, tail = pattern.split("{cc}")
        name = path.name
        if name.startswith(head) and name.endswith(tail):
            cc = name[len(head): len(name) - len(tail)]
            if cc.isalpha():
                return kind, cc
    raise DataError(
        f"{path.name} is not a CropGlobe file name; expected one of "
        + ", ".join(p.format(cc="{CC}") for p in CROPGLOBE_FILES.values())
    )


def _window_dates(first_window: int, n_times: int) -> np.ndarray:
    start = np.datetime64(f"{_YEAR}-01-01")
    return start + ((first_window + np.arange(n_times)) * _DAY).astype("timedelta64[D]")


def read_cropglobe_file(path: str | Path) -> TimeSeriesSet:
    """Read one packaged file (kind and country from its name)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CropGlobe file not found: {path}")
    kind, cc = _kind_of(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "fea" not in data or "lbl" not in data:
                raise DataError(f"{path} lacks the arrays 'fea' and 'lbl' (has {list(data)})")
            fea = np.asarray(data["fea"], dtype=np.float32)
            lbl = np.asarray(data["lbl"]).reshape(-1)
    except ARRAY_READ_ERRORS as exc:  # a damaged header is a SyntaxError, a bad zip...
        raise DataError(f"cannot read {path}: {exc}") from None
    if fea.shape[0] != lbl.shape[0]:
        raise DataError(f"{path}: {fea.shape[0]} feature rows but {lbl.shape[0]} labels")
    if not np.issubdtype(lbl.dtype, np.integer) and not np.all(lbl == np.round(lbl)):
        raise DataError(f"{path}: labels must be integer codes")
    lbl = lbl.astype(np.int64)
    if lbl.size and (lbl.min() < 0 or lbl.max() >= len(CROPGLOBE_CLASSES)):
        raise DataError(f"{path}: label codes must be in 0..{len(CROPGLOBE_CLASSES) - 1}")
    if fea.ndim == 4 and fea.shape[1] == 1:  # already [N, 1, C, T]
        fea = fea[:, 0]
    n = fea.shape[0]
    meta = pd.DataFrame({"country": [cc] * n, "year": [_YEAR] * n})
    if kind in _FIRST_WINDOW:
        if fea.ndim != 3 or fea.shape[1] not in (10, 12):
            raise DataError(f"{path}: median features must be [N, 10 or 12, T], got {fea.shape}")
        bands = list(CROPGLOBE_BANDS) + (["VV", "VH"] if fea.shape[1] == 12 else [])
        values = np.ascontiguousarray(fea.transpose(0, 2, 1))
        dates = _window_dates(_FIRST_WINDOW[kind], values.shape[1])
    else:
        if fea.ndim != 2:
            raise DataError(f"{path}: {kind} features must be [N, D], got {fea.shape}")
        values = fea[:, None, :]
        bands = [f"{kind}_{i:03d}" for i in range(fea.shape[1])]
        dates = None
    return TimeSeriesSet(values=values, bands=bands, dates=dates, labels=lbl,
                         classes=list(CROPGLOBE_CLASSES), meta=meta)


def read_cropglobe(
    directory: str | Path, countries: str | list[str], kind: str = "median"
) -> dict[str, TimeSeriesSet]:
    """``{country: set}`` for the files of ``kind`` in ``directory``."""
    ccs = [countries] if isinstance(countries, str) else list(countries)
    return {str(cc).upper(): read_cropglobe_file(cropglobe_path(directory, kind, cc))
            for cc in ccs}


def write_cropglobe_file(
    directory: str | Path, kind: str, country: str, fea: np.ndarray, lbl: np.ndarray
) -> Path:
    """Write ``fea``/``lbl`` in the packaged layout (atomically); returns the path."""
    path = cropglobe_path(directory, kind, country)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, fea=np.asarray(fea, dtype=np.float32), lbl=np.asarray(lbl, dtype=np.int64))
    return path
