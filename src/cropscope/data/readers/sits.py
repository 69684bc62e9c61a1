"""Reader for the sample tibbles of the R package *sits* (``.rda`` files), without R.

A sits sample tibble has one row per sample (``longitude``, ``latitude``, ``start_date``,
``end_date``, ``label``, ...) and a nested ``time_series`` data frame per sample with an
``Index`` column (dates as days since 1970-01-01) and one column per band. The file is
parsed with the pure-Python ``rdata`` package (optional dependency ``cropscope[rdata]``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError

__all__ = ["read_sits_rda"]

_EPOCH = np.datetime64("1970-01-01", "D")


def _parse_rda(path: Path) -> dict[str, Any]:
    try:
        import rdata
    except ImportError:  # pragma: no cover - depends on the environment
        raise DataError(
            "reading sits .rda files needs the 'rdata' package: pip install 'cropscope[rdata]'"
        ) from None
    with warnings.catch_warnings():
        # rdata warns about every R class it has no special converter for
        warnings.simplefilter("ignore")
        try:
            parsed = rdata.parser.parse_file(path)
            return rdata.conversion.convert(parsed, default_encoding="utf8")
        except Exception as exc:  # any parse failure means a bad or foreign file
            raise DataError(f"cannot read R data file {path}: {exc}") from None


def _days_to_dates(days: Any) -> np.ndarray:
    return _EPOCH + np.asarray(days, dtype=np.float64).round().astype("timedelta64[D]")


def read_sits_rda(path: str | Path, object_name: str | None = None) -> TimeSeriesSet:
    """Read a sits sample tibble stored in an ``.rda`` file.

    Returns per-sample dates ``[N, T]`` (from each series' ``Index``), band names exactly as
    stored (e.g. ``"ndvi"`` or ``"NDVI"``), label names as classes (sorted), ids from
    ``id_sample`` when present (else the R row names), and meta columns ``longitude``,
    ``latitude`` and ``year`` (the start year of the agricultural season, from
    ``start_date``). ``object_name`` picks the object when the file holds several
    (default: the one named like the file, else the only one).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    objects = _parse_rda(path)
    if object_name is None:
        if path.stem in objects:
            object_name = path.stem
        elif len(objects) == 1:
            object_name = next(iter(objects))
        else:
            raise DataError(f"{path} holds several R objects {sorted(objects)}; pass object_name=")
    if object_name not in objects:
        raise DataError(f"no object {object_name!r} in {path}; objects: {sorted(objects)}")
    df = objects[object_name]
    if not isinstance(df, pd.DataFrame) or "time_series" not in df.columns:
        raise DataError(f"{path}:{object_name} is not a sits sample tibble (no time_series)")
    missing = [c for c in ("label", "start_date") if c not in df.columns]
    if missing:
        raise DataError(f"{path}:{object_name} lacks the columns {missing}")

    series = list(df["time_series"])
    if not series:
        raise DataError(f"{path}:{object_name} holds no samples")
    first = series[0]
    bands = [str(c) for c in first.columns if str(c) != "Index"]
    n_times = len(first)
    lengths = {len(s) for s in series}
    if len(lengths) != 1:
        raise DataError(f"{path}: series have different lengths {sorted(lengths)}")
    values = np.stack([s[bands].to_numpy(np.float32) for s in series])
    days = np.stack([s["Index"].to_numpy(np.float64) for s in series])
    dates = _days_to_dates(days).reshape(len(series), n_times)

    start = _days_to_dates(df["start_date"].to_numpy())
    meta = pd.DataFrame(
        {
            "longitude": df["longitude"].to_numpy(np.float64) if "longitude" in df else np.nan,
            "latitude": df["latitude"].to_numpy(np.float64) if "latitude" in df else np.nan,
            "year": start.astype("datetime64[Y]").astype(np.int64) + 1970,
        },
        index=pd.RangeIndex(len(series)),
    )
    if "id_sample" in df.columns:
        ids = df["id_sample"].to_numpy(np.int64)
    else:
        ids = np.asarray(df.index.to_numpy())
        if not np.issubdtype(ids.dtype, np.integer):
            ids = np.arange(1, len(series) + 1)
    labels = df["label"].astype(object).to_numpy()
    return TimeSeriesSet.from_labels(values, bands, list(labels), dates=dates, ids=ids, meta=meta)
