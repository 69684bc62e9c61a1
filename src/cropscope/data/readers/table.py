"""Bring your own data: long tables (one row per sample and date) <-> :class:`TimeSeriesSet`.

Table format
------------
One row per (sample, time step)::

    sample_id, date,       B4,    B8,    label, region, longitude, latitude
    p1,        2021-04-03, 0.041, 0.312, wheat, north,  4.35,      50.85
    p1,        2021-04-18, 0.038, 0.355, wheat, north,  4.35,      50.85

- ``id_col`` names the sample, ``time_col`` holds calendar dates (anything pandas parses;
  8-digit integers such as ``20210403`` are read as dates too) or integer time steps
  (then ``dates`` is ``None``).
- Band columns: ``bands`` or, by default, every numeric column that is not the id, time,
  label, a meta column or ``valid``. Text columns with no numeric value are ignored.
- ``label_col`` (default ``label``; ``None`` for unlabelled data) must be constant within a
  sample; empty or missing labels mean "unlabelled" (code ``-1``).
- Meta columns (one value per sample, the first non-missing one is kept): ``meta_cols``
  or, by default, whichever of ``region, year, group, longitude, latitude, geometry`` exist
  (``lon``/``lat`` are renamed ``longitude``/``latitude``). A ``geometry`` column holds WKT;
  shapely geometries (GeoDataFrame, GeoParquet/GeoPackage through geopandas) become WKT.
- A boolean ``valid`` column, if present, marks flagged observations (False = gap).

Time grid rule
--------------
- Calendar dates, every sample has the same dates: shared ``dates [T]``.
- Calendar dates, same number of dates per sample but different dates: per-sample
  ``dates [N, T]`` (sorted within each sample).
- Otherwise (different counts): the union of all dates is the grid ``[T]``; a sample's
  missing dates are gaps (NaN, mask False).
- Integer steps: the grid is every step from the smallest to the largest; missing steps
  are gaps.
In every case, a row whose band values are NaN (or whose ``valid`` is False) is a gap too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.remote import verify_listed
from cropscope.settings import check_memory

__all__ = ["DEFAULT_META_COLUMNS", "read_table", "write_table"]

#: Meta columns picked up by default when present.
DEFAULT_META_COLUMNS = ("region", "year", "group", "longitude", "latitude", "geometry")
_META_ALIASES = {"lon": "longitude", "lat": "latitude"}
_CSV_SUFFIXES = {".csv": ",", ".csv.gz": ",", ".tsv": "\t", ".tsv.gz": "\t"}
_PARQUET_SUFFIXES = (".parquet", ".pq", ".geoparquet")
_VECTOR_SUFFIXES = (".gpkg", ".geojson", ".fgb", ".shp")
_MAX_STEPS = 100_000


# ---------------------------------------------------------------------------- loading
def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (*_CSV_SUFFIXES, *_PARQUET_SUFFIXES, *_VECTOR_SUFFIXES):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _to_wkt(column: pd.Series) -> pd.Series:
    """Geometry objects or WKB bytes -> WKT strings (other values unchanged)."""
    if hasattr(column, "to_wkt"):  # GeoSeries
        return pd.Series(column.to_wkt(), index=column.index, dtype=object)
    sample = column.dropna()
    if sample.empty:
        return column
    first = sample.iloc[0]
    if hasattr(first, "wkt"):
        return column.map(lambda g: None if g is None else g.wkt)
    if isinstance(first, bytes | bytearray):
        try:
            import shapely
        except ImportError:
            return column  # WKB kept as bytes without shapely
        return column.map(lambda b: None if b is None else shapely.from_wkb(b).wkt)
    return column


def _read_vector(path: Path) -> pd.DataFrame:
    try:
        import geopandas as gpd
    except ImportError:
        raise DataError(
            f"reading {path.name} needs geopandas (pip install geopandas), or export the "
            "table as CSV/Parquet with a WKT geometry column"
        ) from None
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        return pd.DataFrame(gpd.read_parquet(path))
    return pd.DataFrame(gpd.read_file(path))


def _load(source: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str, dict[str, Any]]:
    """The table as a DataFrame, a name for messages, and cropscope metadata if any."""
    if isinstance(source, pd.DataFrame):
        return source, "table", {}
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    verify_listed(path)  # a checksum list beside or above it: verified first
    suffix = _suffix(path)
    name = path.name
    try:
        if suffix in _CSV_SUFFIXES:
            return pd.read_csv(path, sep=_CSV_SUFFIXES[suffix]), name, {}
        if suffix in _PARQUET_SUFFIXES:
            import pyarrow.parquet as pq

            schema_meta = pq.read_schema(path).metadata or {}
            info = json.loads(schema_meta[b"cropscope"]) if b"cropscope" in schema_meta else {}
            if b"geo" in schema_meta:
                try:
                    return _read_vector(path), name, info
                except DataError:
                    pass  # no geopandas: read as plain Parquet, geometry as WKB/WKT
            return pq.read_table(path).to_pandas(), name, info
        if suffix in _VECTOR_SUFFIXES:
            return _read_vector(path), name, {}
    except DataError:
        raise
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read {path}: {first}") from None
    raise DataError(
        f"unsupported table format {suffix or '(no extension)'!r} for {path}; use .csv, "
        ".csv.gz, .tsv, .parquet (or .gpkg/.geojson with geopandas)"
    )


def _columns(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    return ", ".join(cols[:30]) + (", ..." if len(cols) > 30 else "")


def _require(df: pd.DataFrame, col: str, role: str, name: str, hint: str = "") -> None:
    if col not in df.columns:
        raise DataError(f"{name} has no {role} column {col!r}{hint}; columns are: {_columns(df)}")


# ---------------------------------------------------------------------------- time
def _yyyymmdd(values: np.ndarray) -> np.ndarray | None:
    """Dates if every integer looks like YYYYMMDD, else None."""
    if values.size == 0 or values.min() < 19000101 or values.max() > 21001231:
        return None
    parsed = pd.to_datetime(pd.Series(values.astype(str)), format="%Y%m%d", errors="coerce")
    if parsed.isna().any():
        return None
    return parsed.to_numpy().astype("datetime64[D]")


def _parse_time(series: pd.Series, col: str, name: str) -> tuple[np.ndarray, bool]:
    """(values, is_calendar): int64 steps or datetime64[D] dates."""
    missing = series.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataError(f"{name}: time column {col!r} has missing values, e.g. row {row}")
    if ptypes.is_bool_dtype(series):
        raise DataError(f"{name}: time column {col!r} holds booleans, not dates or steps")
    if ptypes.is_numeric_dtype(series):
        arr = series.to_numpy(np.float64)
        if not np.all(arr == np.round(arr)):
            bad = arr[arr != np.round(arr)][0]
            raise DataError(
                f"{name}: time column {col!r} holds non-integer numbers (e.g. {bad}); "
                "use calendar dates or integer steps"
            )
        if not np.all(np.abs(arr) < 2.0**53):  # beyond exact integers (and int64 overflow)
            bad = arr[~(np.abs(arr) < 2.0**53)][0]
            raise DataError(f"{name}: time column {col!r} holds a step out of range ({bad}); "
                            "use calendar dates or consecutive step numbers")
        steps = arr.astype(np.int64)
        dates = _yyyymmdd(steps)
        return (steps, False) if dates is None else (dates, True)
    if ptypes.is_datetime64_any_dtype(series):
        if getattr(series.dt, "tz", None) is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        return series.to_numpy().astype("datetime64[D]"), True
    parsed = pd.to_datetime(series, errors="coerce", format="ISO8601", utc=True)
    if parsed.isna().any():
        parsed = pd.to_datetime(series, errors="coerce", format="mixed", utc=True)
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{name}: cannot parse {series.iloc[row]!r} in time column {col!r} (row {row}) as a "
            "date; use ISO dates (2021-04-03) or integer time steps"
        )
    return parsed.dt.tz_localize(None).to_numpy().astype("datetime64[D]"), True


# ---------------------------------------------------------------------------- columns
def _numeric(series: pd.Series, col: str, name: str) -> np.ndarray:
    """A band column as float32; missing values are gaps (NaN). Text, booleans, infinite
    values and values beyond the float32 range (which would become infinite) are refused:
    they are damaged data, not gaps."""
    if ptypes.is_bool_dtype(series):
        raise DataError(f"{name}: band column {col!r} holds booleans, not numbers")
    if ptypes.is_numeric_dtype(series):
        numbers = series
    else:
        numbers = pd.to_numeric(series, errors="coerce")
        bad = (numbers.isna() & series.notna()).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{name}: band column {col!r} has a non-numeric value "
                            f"{series.iloc[row]!r} (row {row})")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            out = numbers.to_numpy(np.float32, na_value=np.nan)
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. a huge integer
        raise DataError(f"{name}: band column {col!r} has a value that is not a float "
                        f"({exc})") from None
    inf = np.isinf(out)
    if inf.any():
        row = int(np.flatnonzero(inf)[0])
        raise DataError(f"{name}: band column {col!r} has an infinite value or one beyond the "
                        f"float32 range, {series.iloc[row]!r} (row {row}); missing "
                        "observations are empty cells or NaN")
    return out


def _default_bands(df: pd.DataFrame, used: set[str], name: str) -> list[str]:
    bands = []
    for col in df.columns:
        if col in used:
            continue
        s = df[col]
        if ptypes.is_bool_dtype(s) or ptypes.is_datetime64_any_dtype(s):
            continue
        if ptypes.is_numeric_dtype(s):
            bands.append(col)
            continue
        numbers = pd.to_numeric(s, errors="coerce")
        if numbers.notna().any():  # a mostly numeric column with bad cells: say which
            _numeric(s, str(col), name)
            bands.append(col)
    if not bands:
        raise DataError(
            f"{name} has no band columns (no numeric column besides id, time, label and "
            f"meta); columns are: {_columns(df)}"
        )
    return bands


def _valid_column(df: pd.DataFrame, bands: Sequence[str]) -> np.ndarray | None:
    if "valid" not in df.columns or "valid" in bands:
        return None
    s = df["valid"]
    if ptypes.is_bool_dtype(s):
        return s.fillna(False).to_numpy(bool)
    if ptypes.is_integer_dtype(s) and set(np.unique(s.to_numpy())) <= {0, 1}:
        return s.to_numpy() == 1
    return None


def _labels(
    df: pd.DataFrame, col: str, codes: np.ndarray, ids: np.ndarray, name: str
) -> tuple[list[Any], list[str] | None]:
    """Per-sample label names (None = unlabelled) and a default class order."""
    lab = df[col]
    default_classes = None
    if ptypes.is_numeric_dtype(lab) and not ptypes.is_bool_dtype(lab):
        arr = lab.to_numpy(np.float64, na_value=np.nan)
        finite = np.isfinite(arr)
        if np.all(arr[finite] == np.round(arr[finite])):
            uniq = np.unique(arr[finite]).astype(np.int64)
            default_classes = [str(v) for v in uniq]
            lab = pd.Series(
                [str(int(v)) if ok else None for v, ok in zip(arr, finite, strict=True)],
                index=lab.index,
                dtype=object,
            )
    lab = lab.astype(object).where(lab.notna(), None)
    lab = lab.map(lambda v: None if v is None or str(v).strip() == "" else str(v))
    grouped = lab.groupby(codes)
    counts = grouped.nunique(dropna=True)
    if (counts > 1).any():
        sample = int(counts.index[np.flatnonzero(counts.to_numpy() > 1)[0]])
        found = sorted(set(lab[codes == sample].dropna()))[:4]
        raise DataError(
            f"{name}: label column {col!r} is not constant within sample {ids[sample]!r} "
            f"(values {found}); each sample needs one label"
        )
    first = grouped.first().reindex(range(len(ids)))
    return [None if pd.isna(v) else v for v in first], default_classes


# ---------------------------------------------------------------------------- reader
def read_table(
    source: str | Path | pd.DataFrame,
    *,
    id_col: str = "sample_id",
    time_col: str = "date",
    label_col: str | None = "label",
    bands: Sequence[str] | None = None,
    meta_cols: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
) -> TimeSeriesSet:
    """Read a long table (CSV, ``.csv.gz``, TSV, Parquet or a DataFrame) into a set.

    See the module docstring for the format and the time-grid rule. Without a ``date``
    column, a ``time`` column (integer steps, as written by :func:`write_table` for sets
    without dates) is used. Parquet files written by :func:`write_table` /
    :meth:`TimeSeriesSet.to_parquet` restore their bands, meta columns and class order.
    Every problem in the table raises :class:`~cropscope.errors.DataError` with one line
    naming the column and an example row (0-based data row).
    """
    df, name, info = _load(source)
    df = df.reset_index(drop=True)
    if df.empty:
        raise DataError(f"{name} has no rows")
    if bands is None and info.get("bands"):
        bands = list(info["bands"])
    if meta_cols is None and "meta_columns" in info:
        meta_cols = list(info["meta_columns"])
    if classes is None and info.get("classes"):
        classes = list(info["classes"])
    if label_col == "label" and info.get("has_labels") is False and "label" not in df:
        label_col = None

    _require(df, id_col, "id", name, " (id_col)")
    if time_col == "date" and "date" not in df.columns and "time" in df.columns:
        time_col = "time"
    _require(df, time_col, "time", name, " (time_col)")
    if label_col is not None:
        _require(df, label_col, "label", name, " (label_col; pass label_col=None if unlabelled)")

    # meta columns
    if meta_cols is None:
        meta_map = {c: c for c in DEFAULT_META_COLUMNS if c in df.columns}
        for alias, target in _META_ALIASES.items():
            if alias in df.columns and target not in meta_map:
                meta_map[alias] = target
    else:
        absent = [c for c in meta_cols if c not in df.columns]
        if absent:
            raise DataError(f"{name} has no meta columns {absent}; columns are: {_columns(df)}")
        meta_map = {c: c for c in meta_cols}
    used = {id_col, time_col, *meta_map}
    if label_col is not None:
        used.add(label_col)

    # bands
    if bands is None:
        bands = _default_bands(df, used | {"valid"}, name)
    else:
        bands = list(bands)
        absent = [b for b in bands if b not in df.columns]
        if absent:
            raise DataError(f"{name} has no band columns {absent}; columns are: {_columns(df)}")
        if not bands:
            raise DataError(f"{name}: no band columns given")
    band_values = np.stack([_numeric(df[b], str(b), name) for b in bands], axis=1)
    valid = _valid_column(df, bands)

    # samples and times
    ids_col = df[id_col]
    if ids_col.isna().any():
        row = int(np.flatnonzero(ids_col.isna().to_numpy())[0])
        raise DataError(f"{name}: id column {id_col!r} has missing values, e.g. row {row}")
    codes, uniques = pd.factorize(ids_col, sort=False)
    ids = np.asarray(uniques)
    times, calendar = _parse_time(df[time_col], time_col, name)
    tkey = times.astype(np.int64)
    dup = pd.DataFrame({"s": codes, "t": tkey}).duplicated(keep=False).to_numpy()
    if dup.any():
        first = int(np.flatnonzero(dup)[0])
        rows = np.flatnonzero(dup & (codes == codes[first]) & (tkey == tkey[first]))
        raise DataError(
            f"{name}: duplicate rows for sample {ids[codes[first]]!r} at {time_col} "
            f"{times[first]} (rows {', '.join(str(r) for r in rows[:3])}); each "
            "(sample, time) pair must appear once"
        )

    n = len(ids)
    counts = np.bincount(codes, minlength=n)
    union = np.unique(times)
    per_sample = False
    grid: np.ndarray | None
    if not calendar:
        span = int(union[-1]) - int(union[0]) + 1  # Python ints: no overflow
        if span > _MAX_STEPS:
            raise DataError(
                f"{name}: integer time steps in {time_col!r} span {span} steps "
                f"({union[0]}..{union[-1]}); use calendar dates or consecutive step numbers"
            )
        grid = np.arange(union[0], union[-1] + 1)
        pos = (times - union[0]).astype(np.int64)
    elif np.all(counts == len(union)):
        grid, pos = union, np.searchsorted(union, times)
    elif np.all(counts == counts[0]):
        per_sample = True
        order = np.lexsort((tkey, codes))
        pos = np.empty(len(times), dtype=np.int64)
        pos[order] = np.arange(len(times)) - np.repeat(np.cumsum(counts) - counts, counts)
        grid = None
    else:
        grid, pos = union, np.searchsorted(union, times)

    t = int(counts[0]) if per_sample or grid is None else len(grid)
    # values [N, T, C] float32, mask [N, T], per-sample dates [N, T]: checked before allocating
    check_memory(n * t * (4 * len(bands) + 1 + (8 if per_sample else 0)),
                 f"{name} ({n} samples x {t} time steps x {len(bands)} bands)")
    values = np.full((n, t, len(bands)), np.nan, dtype=np.float32)
    values[codes, pos] = band_values
    mask = np.zeros((n, t), dtype=bool)
    mask[codes, pos] = True if valid is None else valid
    dates: np.ndarray | None
    if per_sample:
        dates = np.empty((n, t), dtype="datetime64[D]")
        dates[codes, pos] = times
    else:
        dates = grid if calendar else None

    # meta and labels
    meta = None
    if meta_map:
        firsts = df[list(meta_map)].groupby(codes).first().reindex(range(n))
        meta = firsts.rename(columns=meta_map).reset_index(drop=True)
        if "geometry" in meta.columns:
            meta["geometry"] = _to_wkt(meta["geometry"])
    label_names = None
    if label_col is not None:
        label_names, default_classes = _labels(df, label_col, codes, ids, name)
        if classes is None:
            classes = default_classes
    return TimeSeriesSet.from_labels(
        values,
        [str(b) for b in bands],
        label_names,
        classes=classes,
        dates=dates,
        mask=mask,
        ids=ids,
        meta=meta,
    )


# ---------------------------------------------------------------------------- writer
def write_table(ts: TimeSeriesSet, path: str | Path) -> Path:
    """Write ``ts`` as a long table (inverse of :func:`read_table`), atomically.

    ``.csv``/``.csv.gz``/``.tsv``: one row per (sample, time step) with ``sample_id``,
    ``date`` (ISO) or ``time``, the bands, ``valid``, ``label`` and the meta columns; gaps
    keep their row with empty band values. ``.parquet``: the same table plus the band,
    meta and class lists in the file metadata (:meth:`TimeSeriesSet.to_parquet`).
    """
    from cropscope.io import atomic_path

    path = Path(path)
    suffix = _suffix(path)
    if suffix in _PARQUET_SUFFIXES:
        return ts.to_parquet(path)
    if suffix not in _CSV_SUFFIXES:
        raise DataError(
            f"unsupported table format {suffix or '(no extension)'!r} for {path}; use .csv, "
            ".csv.gz, .tsv or .parquet"
        )
    df = ts.to_long()
    if "date" in df.columns:
        df["date"] = pd.to_datetime(df["date"]).dt.strftime("%Y-%m-%d")
    with atomic_path(path) as tmp:
        df.to_csv(
            tmp,
            index=False,
            sep=_CSV_SUFFIXES[suffix],
            compression="gzip" if suffix.endswith(".gz") else None,
        )
    return path
