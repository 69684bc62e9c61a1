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
``nodata`` values (e.g. ``65535`` of uint16 reflectance) in band columns are gaps as well.

Seasons (several years in one table)
------------------------------------
Samples observed in different years share no calendar dates: a table of eleven yearly
seasons of 23 dates each would become a union grid of up to 253 steps where each sample
fills 23, and models would compare values of different crop stages. By default
(``align="auto"``) the reader therefore detects the season of every sample and, when there
are several, shifts each sample by whole calendar years onto one reference season (month
and day are kept, so monthly grids stay on the first of the month; 29 February becomes
28 February in a common year). The log says so, and the meta column ``season`` keeps each
sample's own season (the year its season starts). ``align="none"`` keeps calendar dates;
``align="season"`` aligns even a single-season table onto ``reference_season``.

- The season starts on ``season_start`` (``"MM-DD"``, the crop-calendar start, e.g.
  ``"09-01"`` for a September–August agricultural year); by default on the first day of
  the month in which most samples start.
- A sample's season is the one that holds the median of its dates.
- The reference season is ``reference_season`` (a year), else the earliest season found.

``step`` (``"monthly"``, ``"10D"``, or a number of days) then composites every sample onto
one regular grid: the per-band median of its valid observations in each window (calendar
months, or ``step``-day windows from the season start, else from the earliest date).
Tables of different steps (dekadal, monthly) read with the same ``step`` share one axis.

Wide tables
-----------
One row per sample with one column per band and step (``OPTICAL-B04-ts3-10m``): ``wide``
gives the column pattern(s), with ``{band}`` for the band name, ``{t}`` for the integer
step and ``*`` for any text, e.g. ``"OPTICAL-{band}-ts{t}-*"``. The matching columns are
turned into a long table; every other column is per sample (id, label, meta). With a
``time_col`` column (e.g. ``start_date``) and ``step``, step ``t`` is dated
``start + t * step``; otherwise the steps are integer time steps.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
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

__all__ = [
    "DEFAULT_META_COLUMNS",
    "align_seasons",
    "parse_season_start",
    "read_table",
    "sample_seasons",
    "write_table",
]

#: Meta columns picked up by default when present.
DEFAULT_META_COLUMNS = ("region", "year", "group", "longitude", "latitude", "geometry")
_META_ALIASES = {"lon": "longitude", "lat": "latitude"}
_CSV_SUFFIXES = {".csv": ",", ".csv.gz": ",", ".tsv": "\t", ".tsv.gz": "\t"}
_PARQUET_SUFFIXES = (".parquet", ".pq", ".geoparquet")
_VECTOR_SUFFIXES = (".gpkg", ".geojson", ".fgb", ".shp")
_MAX_STEPS = 100_000
_ALIGN = ("auto", "season", "none")
log = logging.getLogger(__name__)


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
def _numeric(series: pd.Series, col: str, name: str,
             nodata: Sequence[float] = ()) -> np.ndarray:
    """A band column as float32; missing values and ``nodata`` values are gaps (NaN). Text,
    booleans, infinite values and values beyond the float32 range (which would become
    infinite) are refused: they are damaged data, not gaps."""
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
    if len(nodata):
        numbers = numbers.where(~numbers.isin(list(nodata)))
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


# ---------------------------------------------------------------------------- seasons
def parse_season_start(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"09-01"`` (or ``"9"``, ``"sep"``, ``(9, 1)``) → ``(month, day)``; None stays None."""
    if text is None:
        return None
    if isinstance(text, tuple):
        month, day = (int(v) for v in text)
    else:
        raw = str(text).strip().lower()
        months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                  "dec"]
        match = re.fullmatch(r"(\d{1,2})(?:[-/](\d{1,2}))?", raw)
        if match is not None:
            month, day = int(match.group(1)), int(match.group(2) or 1)
        elif raw[:3] in months:
            month, day = months.index(raw[:3]) + 1, 1
        else:
            month = day = 0
    if not 1 <= month <= 12 or not 1 <= day <= 31 or (month, day) == (2, 29):
        raise DataError(f"invalid season start {text!r}; use MM-DD, e.g. 09-01 (not 02-29)")
    try:
        np.datetime64(f"2001-{month:02d}-{day:02d}")
    except ValueError:
        raise DataError(f"invalid season start {text!r}: no such day") from None
    return month, day


def _month_day(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Year, month (1-12) and day (1-31) of ``datetime64[D]`` values."""
    years = days.astype("datetime64[Y]")
    months = days.astype("datetime64[M]")
    return (years.astype(np.int64) + 1970, (months - years.astype("datetime64[M]"))
            .astype(np.int64) + 1, (days - months.astype("datetime64[D]")).astype(np.int64) + 1)


def _detect_start(first_dates: np.ndarray) -> tuple[int, int]:
    """The first day of the month in which most samples start."""
    _, month, _ = _month_day(first_dates)
    return int(np.bincount(month, minlength=13).argmax()), 1


def _season_of(days: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """The season (the year it starts) that holds each date."""
    year, month, day = _month_day(days)
    before = (month < start[0]) | ((month == start[0]) & (day < start[1]))
    return year - before.astype(np.int64)


def _add_months(days: np.ndarray, months: np.ndarray) -> np.ndarray:
    """``days`` shifted by whole calendar ``months`` (the day of the month kept, clipped to
    the month's last day: 29 February → 28 February in a common year)."""
    start = days.astype("datetime64[M]")
    offset = days - start.astype("datetime64[D]")
    target = start + np.asarray(months, dtype=np.int64).astype("timedelta64[M]")
    last = (target + np.timedelta64(1, "M")).astype("datetime64[D]") - np.timedelta64(1, "D")
    return np.minimum(target.astype("datetime64[D]") + offset, last)


def _add_years(days: np.ndarray, years: np.ndarray) -> np.ndarray:
    """``days`` shifted by whole calendar ``years`` (month and day kept)."""
    return _add_months(days, 12 * np.asarray(years, dtype=np.int64))


def _sample_median_days(days: np.ndarray, codes: np.ndarray, n: int) -> np.ndarray:
    """Median date of each sample's rows (``datetime64[D]``)."""
    med = pd.Series(days.astype(np.int64)).groupby(codes).median().reindex(range(n))
    return np.floor(med.to_numpy(np.float64)).astype(np.int64).astype("datetime64[D]")


def sample_seasons(
    ts: TimeSeriesSet, season_start: str | tuple[int, int] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """The season of every sample of ``ts`` (the year its season starts; the season that
    holds the median of the sample's dates) and the season start ``(month, day)`` used
    (``season_start``, else detected as in :func:`read_table`)."""
    if ts.dates is None:
        raise DataError("seasons need calendar dates; this set has integer time steps")
    dates = np.broadcast_to(ts.dates, (ts.n_samples, ts.n_times))
    start = parse_season_start(season_start) or _detect_start(dates[:, 0])
    med = np.sort(dates, axis=1)[:, (ts.n_times - 1) // 2]
    return _season_of(med, start), start


def align_seasons(
    ts: TimeSeriesSet,
    season_start: str | tuple[int, int] | None = None,
    reference_season: int | None = None,
) -> TimeSeriesSet:
    """``ts`` with every sample shifted by whole years onto ``reference_season`` (default:
    its earliest season), as :func:`read_table` does with ``align="season"``; the meta
    column ``season`` records each sample's own season (an existing one is kept).

    Shared dates ``[T]`` stay shared when every sample is in one season; per-sample
    dates stay per sample (a step whose shifted date collides with another of the same
    sample, only possible for 28/29 February, keeps the earlier value).
    """
    seasons, _ = sample_seasons(ts, season_start)
    ref = int(seasons.min() if reference_season is None else reference_season)
    shift = ref - seasons
    meta = ts.meta if ts.meta is not None else pd.DataFrame(index=range(ts.n_samples))
    if "season" not in meta.columns:
        meta = meta.assign(season=seasons)
    if not shift.any():
        return ts.replace(meta=meta)
    assert ts.dates is not None
    if ts.dates.ndim == 1 and (shift == shift[0]).all():
        return ts.replace(dates=_add_years(ts.dates, np.full(ts.n_times, shift[0])), meta=meta)
    dates = _add_years(np.broadcast_to(ts.dates, (ts.n_samples, ts.n_times)),
                       np.repeat(shift[:, None], ts.n_times, axis=1))
    mask = ts.mask
    assert mask is not None
    clash = np.zeros_like(mask)
    clash[:, 1:] = dates[:, 1:] == dates[:, :-1]
    if clash.any():
        mask = mask & ~clash
    return ts.replace(dates=dates, mask=mask, meta=meta)


# ---------------------------------------------------------------------------- wide tables
def _wide_regex(pattern: str) -> re.Pattern[str]:
    if "{band}" not in pattern or "{t}" not in pattern:
        raise DataError(f"wide column pattern {pattern!r} needs {{band}} and {{t}}, e.g. "
                        "'OPTICAL-{band}-ts{t}-*'")
    parts = re.split(r"(\{band\}|\{t\}|\*)", pattern)
    regex = "".join({"{band}": r"(?P<band>.+?)", "{t}": r"(?P<t>\d+)", "*": ".*"}.get(p)
                    or re.escape(p) for p in parts)
    return re.compile(regex)


def _wide_to_long(df: pd.DataFrame, patterns: Sequence[str], id_col: str, time_col: str,
                  step: str | int | None, name: str) -> tuple[pd.DataFrame, str, list[str]]:
    """A wide table (one row per sample) as a long one; the time column name and the
    band names, in first-seen order."""
    regexes = [_wide_regex(p) for p in patterns]
    cells: dict[tuple[str, int], str] = {}
    for col in df.columns:
        for rx in regexes:
            m = rx.fullmatch(str(col))
            if m is not None:
                key = (m.group("band"), int(m.group("t")))
                if key in cells:
                    raise DataError(f"{name}: columns {cells[key]!r} and {col!r} both match "
                                    f"band {key[0]!r} step {key[1]}")
                cells[key] = str(col)
                break
    if not cells:
        raise DataError(f"{name}: no column matches the wide pattern(s) {list(patterns)}; "
                        f"columns are: {_columns(df)}")
    _require(df, id_col, "id", name, " (id_col)")
    bands = list(dict.fromkeys(b for b, _ in cells))
    steps = sorted({t for _, t in cells})
    per_sample = [c for c in df.columns if c not in set(cells.values())]
    check_memory(len(df) * len(steps) * (len(bands) + len(per_sample)) * 8,
                 f"{name} ({len(df)} samples x {len(steps)} steps, as a long table)")
    blocks = []
    for t in steps:
        block = df[per_sample].copy()
        for b in bands:
            col = cells.get((b, t))
            block[b] = df[col] if col is not None else np.nan
        block["__step"] = t
        blocks.append(block)
    long = pd.concat(blocks, ignore_index=True)
    if time_col in df.columns and step is not None:
        start = pd.to_datetime(long[time_col], errors="coerce")
        if start.isna().any():
            raise DataError(f"{name}: start date column {time_col!r} has missing or "
                            "unparsable values")
        start_days = start.to_numpy().astype("datetime64[D]")
        k = long["__step"].to_numpy(np.int64)
        if _parse_step(step) == "monthly":
            dates = _add_months(start_days, k)
        else:
            dates = start_days + k * int(_parse_step(step))
        long["__time"] = dates
        long = long.drop(columns=[time_col])
    else:
        long["__time"] = long["__step"]
    long = long.drop(columns=["__step"]).sort_values([id_col, "__time"], kind="stable")
    return long.reset_index(drop=True), "__time", bands


def _parse_step(step: str | int) -> int | str:
    """``"monthly"`` or a positive number of days (``10``, ``"10D"``)."""
    if isinstance(step, bool):
        raise DataError(f"invalid time step {step!r}")
    text = str(step).strip().lower()
    if text in {"month", "monthly", "m", "ms", "1m", "1ms"}:
        return "monthly"
    digits = text[:-1] if text.endswith("d") else text
    if digits.isdigit() and int(digits) > 0:
        return int(digits)
    raise DataError(f"invalid time step {step!r}; use 'monthly' or a number of days ('10D')")


def _expand_bands(df: pd.DataFrame, bands: Sequence[str], used: set[str], name: str
                  ) -> tuple[list[str], bool]:
    """Band names with glob patterns (``S2-L2A-B*``) expanded to the matching columns;
    whether any pattern was used."""
    out: list[str] = []
    patterned = False
    for b in bands:
        if any(ch in str(b) for ch in "*?["):
            patterned = True
            hits = [str(c) for c in df.columns
                    if str(c) not in used and fnmatch.fnmatchcase(str(c), str(b))]
            if not hits:
                raise DataError(f"{name}: no column matches band pattern {b!r}; columns are: "
                                f"{_columns(df)}")
            out.extend(h for h in hits if h not in out)
        elif b not in out:
            out.append(b)
    return out, patterned


def _composite_rows(values: np.ndarray, valid: np.ndarray, codes: np.ndarray,
                    times: np.ndarray, n: int, step: int | str, origin: np.datetime64
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per (sample, window) median of the valid rows: ``[N, W, C]`` and the window dates."""
    if step == "monthly":
        first = origin.astype("datetime64[M]")
        win = (times.astype("datetime64[M]") - first).astype(np.int64)
    else:
        win = (times - origin).astype(np.int64) // int(step)
    keep = win >= 0
    n_win = int(win[keep].max()) + 1 if keep.any() else 0
    check_memory(n * n_win * values.shape[1] * 4, f"{n} samples x {n_win} windows")
    data = np.where(valid[:, None], values, np.nan)[keep]
    frame = pd.DataFrame(data)
    med = frame.groupby([codes[keep], win[keep]]).median()
    out = np.full((n, n_win, values.shape[1]), np.nan, dtype=np.float32)
    idx = med.index.to_frame().to_numpy()
    out[idx[:, 0], idx[:, 1]] = med.to_numpy(np.float32)
    if step == "monthly":
        grid = (origin.astype("datetime64[M]") + np.arange(n_win)).astype("datetime64[D]")
    else:
        grid = origin + np.arange(n_win) * int(step)
    return out, grid


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
    nodata: float | Sequence[float] | None = None,
    align: str = "auto",
    season_start: str | tuple[int, int] | None = None,
    reference_season: int | None = None,
    step: str | int | None = None,
    wide: str | Sequence[str] | None = None,
    drop_empty: bool = False,
) -> TimeSeriesSet:
    """Read a long table (CSV, ``.csv.gz``, TSV, Parquet or a DataFrame) into a set.

    See the module docstring for the format, the time-grid rule, seasons and wide tables.
    Without a ``date`` column, a ``time`` column (integer steps, as written by
    :func:`write_table` for sets without dates) is used. Parquet files written by
    :func:`write_table` / :meth:`TimeSeriesSet.to_parquet` restore their bands, meta
    columns and class order. ``bands`` may hold glob patterns (``"S2-L2A-B*"``); bands
    chosen by a pattern or by default that hold no value at all (every cell missing or
    ``nodata``) are dropped, with a log line. ``nodata``: band values that mean "no
    observation" (one number or several). ``align`` (``"auto"``, ``"season"``,
    ``"none"``), ``season_start``, ``reference_season``, ``step`` and ``wide``: see the
    module docstring. ``drop_empty`` drops samples without any valid observation (with a log
    line); otherwise they stay, and training refuses them. Every problem in the table raises
    :class:`~cropscope.errors.DataError` with one line naming the column and an example row
    (0-based data row).
    """
    if align not in _ALIGN:
        raise DataError(f"unknown align={align!r}; use one of {list(_ALIGN)}")
    start_md = parse_season_start(season_start)
    parsed_step = None if step is None else _parse_step(step)
    nodata_values: tuple[float, ...] = () if nodata is None else (
        (float(nodata),) if isinstance(nodata, int | float) else tuple(float(v) for v in nodata))
    df, name, info = _load(source)
    df = df.reset_index(drop=True)
    if df.empty:
        raise DataError(f"{name} has no rows")
    if wide is not None:
        patterns = [wide] if isinstance(wide, str) else list(wide)
        patterns = [q.strip() for p in patterns for q in str(p).split(",") if q.strip()]
        df, time_col, wide_bands = _wide_to_long(df, patterns, id_col, time_col, step, name)
        if bands is None:
            bands = wide_bands
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
    droppable = bands is None
    if bands is None:
        bands = _default_bands(df, used | {"valid"}, name)
    else:
        bands, patterned = _expand_bands(df, list(bands), used | {"valid"}, name)
        droppable = patterned
        absent = [b for b in bands if b not in df.columns]
        if absent:
            raise DataError(f"{name} has no band columns {absent}; columns are: {_columns(df)}")
        if not bands:
            raise DataError(f"{name}: no band columns given")
    band_values = np.stack([_numeric(df[b], str(b), name, nodata_values) for b in bands],
                           axis=1)
    if droppable:
        empty = ~np.isfinite(band_values).any(axis=0)
        if empty.all():
            raise DataError(f"{name}: every band column is empty (all missing or nodata): "
                            f"{', '.join(map(str, bands))}")
        if empty.any():
            log.info("%s: band%s %s hold%s no value (all missing or nodata): dropped", name,
                     "s" if empty.sum() > 1 else "",
                     ", ".join(str(b) for b, e in zip(bands, empty, strict=True) if e),
                     "" if empty.sum() > 1 else "s")
            bands = [b for b, e in zip(bands, empty, strict=True) if not e]
            band_values = band_values[:, ~empty]
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
        shown = time_col if time_col != "__time" else "step"
        raise DataError(
            f"{name}: duplicate rows for sample {ids[codes[first]]!r} at {shown} "
            f"{times[first]} (rows {', '.join(str(r) for r in rows[:3])}); each "
            "(sample, time) pair must appear once"
        )
    n = len(ids)

    # seasons: several years on one axis
    seasons: np.ndarray | None = None
    if calendar and align != "none":
        times, seasons, start_md, keep = _align_rows(times, codes, n, align, start_md,
                                                     reference_season, name)
        if keep is not None:
            codes, times, band_values = codes[keep], times[keep], band_values[keep]
            valid = None if valid is None else valid[keep]
        tkey = times.astype(np.int64)
    elif parsed_step is not None and not calendar:
        raise DataError(f"{name}: step={step!r} needs calendar dates in {time_col!r}")

    counts = np.bincount(codes, minlength=n)
    per_sample = False
    grid: np.ndarray | None
    if parsed_step is not None:
        # windows from the (reference) season start when seasons are in play
        ref_season: int | None = None
        if seasons is not None:
            ref_season = int(seasons.min() if reference_season is None else reference_season)
        elif season_start is not None and start_md is not None:
            ref_season = int(_season_of(np.sort(times)[len(times) // 2: len(times) // 2 + 1],
                                        start_md)[0])
        origin = times.min()
        if ref_season is not None and start_md is not None:
            origin = np.datetime64(f"{ref_season:04d}-{start_md[0]:02d}-{start_md[1]:02d}")
        before = times < (origin.astype("datetime64[M]").astype("datetime64[D]")
                          if parsed_step == "monthly" else origin)
        if before.any():
            log.info("%s: %d observation(s) before the grid start %s: dropped", name,
                     int(before.sum()), origin)
        ok = np.ones(len(times), bool) if valid is None else valid
        values, grid = _composite_rows(band_values, ok, codes, times, n, parsed_step, origin)
        mask = np.isfinite(values).all(axis=2)
        dates: np.ndarray | None = grid
    else:
        union = np.unique(times)
        if not calendar:
            span = int(union[-1]) - int(union[0]) + 1  # Python ints: no overflow
            if span > _MAX_STEPS:
                raise DataError(
                    f"{name}: integer time steps in {time_col!r} span {span} steps "
                    f"({union[0]}..{union[-1]}); use calendar dates or consecutive step "
                    "numbers"
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
            if seasons is not None and len(union) > 1.5 * counts.max():
                log.info("%s: after season alignment the samples (%d-%d dates each) span %d "
                         "distinct dates; a regular grid (step='monthly' or '10D', "
                         "--time-step) gives them one axis", name, counts.min(), counts.max(),
                         len(union))

        t = int(counts[0]) if per_sample or grid is None else len(grid)
        # values [N, T, C] float32, mask [N, T], per-sample dates [N, T]: checked first
        check_memory(n * t * (4 * len(bands) + 1 + (8 if per_sample else 0)),
                     f"{name} ({n} samples x {t} time steps x {len(bands)} bands)")
        values = np.full((n, t, len(bands)), np.nan, dtype=np.float32)
        values[codes, pos] = band_values
        mask = np.zeros((n, t), dtype=bool)
        mask[codes, pos] = True if valid is None else valid
        if per_sample:
            dates = np.empty((n, t), dtype="datetime64[D]")
            dates[codes, pos] = times
        else:
            dates = grid if calendar else None

    # meta and labels
    meta = None
    if meta_map:
        firsts = df[list(meta_map)].groupby(pd.factorize(df[id_col], sort=False)[0]).first()
        meta = firsts.reindex(range(n)).rename(columns=meta_map).reset_index(drop=True)
        if "geometry" in meta.columns:
            meta["geometry"] = _to_wkt(meta["geometry"])
    if seasons is not None:
        meta = pd.DataFrame(index=range(n)) if meta is None else meta
        if "season" not in meta.columns:
            meta["season"] = seasons
    label_names = None
    if label_col is not None:
        all_codes = pd.factorize(df[id_col], sort=False)[0]
        label_names, default_classes = _labels(df, label_col, all_codes, ids, name)
        if classes is None:
            classes = default_classes
    ts = TimeSeriesSet.from_labels(
        values,
        [str(b) for b in bands],
        label_names,
        classes=classes,
        dates=dates,
        mask=mask,
        ids=ids,
        meta=meta,
    )
    if drop_empty:
        assert ts.mask is not None
        empty = np.logical_not(ts.mask.any(axis=1))
        if empty.all():
            raise DataError(f"{name}: no sample has a valid observation")
        if empty.any():
            log.info("%s: %d sample(s) without any valid observation dropped, e.g. %s", name,
                     int(empty.sum()), ", ".join(str(i) for i in ids[empty][:3]))
            ts = ts.subset(np.flatnonzero(np.logical_not(empty)))
    return ts


def _align_rows(
    times: np.ndarray, codes: np.ndarray, n: int, align: str,
    start: tuple[int, int] | None, reference: int | None, name: str,
) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int] | None, np.ndarray | None]:
    """Row dates shifted onto one season (see the module doc): the new dates, each
    sample's own season (None: not aligned), the season start, and the rows to keep (None:
    all; rows whose shifted date collides with another of the sample are dropped)."""
    firsts = pd.Series(times.astype(np.int64)).groupby(codes).min().reindex(range(n))
    first_days = firsts.to_numpy(np.int64).astype("datetime64[D]")
    start = start or _detect_start(first_days)
    seasons = _season_of(_sample_median_days(times, codes, n), start)
    distinct = np.unique(seasons)
    if align == "auto" and len(distinct) < 2:
        return times, None, start, None
    ref = int(distinct[0] if reference is None else reference)
    shift = ref - seasons
    if not shift.any():
        return times, seasons, start, None
    shifted = _add_years(times, shift[codes])
    log.info("%s: samples from %d season%s (%s, season start %02d-%02d) aligned on the "
             "%d season by whole years (meta column 'season' keeps each sample's own; "
             "align='none' / --no-align keeps calendar dates)", name, len(distinct),
             "s" if len(distinct) > 1 else "",
             f"{distinct[0]}" if len(distinct) == 1 else f"{distinct[0]}..{distinct[-1]}",
             start[0], start[1], ref)
    clash = pd.DataFrame({"s": codes, "t": shifted.astype(np.int64)}).duplicated().to_numpy()
    if clash.any():
        log.info("%s: %d observation(s) on 29 February met 28 February of the same sample "
                 "after alignment: dropped", name, int(clash.sum()))
        return shifted, seasons, start, ~clash
    return shifted, seasons, start, None


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
