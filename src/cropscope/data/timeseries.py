"""The canonical labelled satellite time-series set.

A :class:`TimeSeriesSet` holds ``N`` pixel or parcel series of ``T`` time steps and ``C``
bands. Everything in cropscope that works on samples (features, augmentation, models,
evaluation) takes and returns this one type.

Conventions
-----------
- ``values`` is ``float32 [N, T, C]``; missing observations are NaN.
- ``mask`` is ``bool [N, T]``: True where the time step holds a valid observation (all bands
  finite and not flagged as cloud/gap). It is derived from NaNs unless given.
- ``dates`` is ``datetime64[D]``, either shared ``[T]`` or per sample ``[N, T]``. A series
  on integer time steps (no calendar) has ``dates=None``.
- ``labels`` are integer codes ``int64 [N]`` into ``classes`` (``-1`` = unlabelled).
- With a ``taxonomy`` (:class:`cropscope.taxonomy.Taxonomy`), ``level_labels`` is
  ``int64 [N, L]``: a code into ``taxonomy.classes(k)`` for every level ``k`` (``-1`` where
  unknown, e.g. a sample labelled only "cereal"). ``labels``/``classes`` are then one level's
  view (the finest unless :meth:`TimeSeriesSet.at_level` chose another).
- ``meta`` is a DataFrame with one row per sample for optional attributes: ``longitude``,
  ``latitude``, ``region``, ``year``, ``group`` or anything a user brings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cropscope.data._labelled import LabelledSamples
from cropscope.errors import DataError

if TYPE_CHECKING:
    import xarray as xr

    from cropscope.taxonomy.tree import Taxonomy

__all__ = ["TimeSeriesSet"]

_META_PREFIX = "meta:"


def _as_dates(dates: Any) -> np.ndarray | None:
    if dates is None:
        return None
    arr = np.asarray(dates)
    if np.issubdtype(arr.dtype, np.integer):
        raise DataError("dates must be calendar dates; use dates=None for integer time steps")
    try:
        return arr.astype("datetime64[D]")
    except (ValueError, TypeError) as exc:
        raise DataError(f"cannot interpret dates as calendar dates: {exc}") from None


@dataclass(eq=False)
class TimeSeriesSet(LabelledSamples):
    """Labelled satellite time series ``[N, T, C]`` with dates, validity mask and metadata."""

    _kind = "time-series set"

    values: np.ndarray
    bands: list[str]
    dates: np.ndarray | None = None
    mask: np.ndarray | None = None
    labels: np.ndarray | None = None
    classes: list[str] = field(default_factory=list)
    ids: np.ndarray | None = None
    meta: pd.DataFrame | None = None
    taxonomy: Taxonomy | None = None
    level_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float32)
        if values.ndim != 3:
            raise DataError(f"values must be [N, T, C], got shape {values.shape}")
        n, t, c = values.shape
        self.values = values
        self.bands = [str(b) for b in self.bands]
        if len(self.bands) != c:
            raise DataError(f"{len(self.bands)} band names for {c} bands")
        if len(set(self.bands)) != c:
            raise DataError(f"duplicate band names: {self.bands}")
        self.dates = _as_dates(self.dates)
        if self.dates is not None and self.dates.shape not in {(t,), (n, t)}:
            raise DataError(f"dates must be [T] or [N, T], got {self.dates.shape} for {(n, t)}")
        finite = np.asarray(np.isfinite(values).all(axis=2))
        if self.mask is None:
            self.mask = finite
        else:
            mask = np.asarray(self.mask, dtype=bool)
            if mask.shape != (n, t):
                raise DataError(f"mask must be [N, T] = {(n, t)}, got {mask.shape}")
            self.mask = mask & finite
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (n,):
                raise DataError(f"labels must be [N] = ({n},), got {labels.shape}")
            if not np.issubdtype(labels.dtype, np.integer):
                raise DataError("labels must be integer codes; use TimeSeriesSet.from_labels")
            self.labels = labels.astype(np.int64)
            self.classes = [str(c) for c in self.classes]
            if labels.size and labels.max(initial=-1) >= len(self.classes):
                raise DataError(f"label code {labels.max()} has no class name")
        self.ids = np.arange(n) if self.ids is None else np.asarray(self.ids)
        if self.ids.shape != (n,):
            raise DataError(f"ids must be [N] = ({n},), got {self.ids.shape}")
        if self.meta is None:
            self.meta = pd.DataFrame(index=pd.RangeIndex(n))
        else:
            if len(self.meta) != n:
                raise DataError(f"meta has {len(self.meta)} rows for {n} samples")
            self.meta = self.meta.reset_index(drop=True)
        self._init_levels()

    def _init_levels(self) -> None:
        """Check (or derive from ``labels``) the per-level labels of a taxonomy."""
        tax = self.taxonomy
        if tax is None:
            if self.level_labels is not None:
                raise DataError("level_labels need a taxonomy")
            return
        n = self.n_samples
        if self.level_labels is None:
            if self.labels is None:
                return
            view = self.label_level
            names = self.label_names
            if view is None:
                self.level_labels = tax.encode(names)
            else:
                codes = self.labels
                self.level_labels = np.full((n, tax.n_levels), -1, dtype=np.int64)
                for k in range(view + 1):
                    self.level_labels[:, k] = tax.rollup_labels(codes, view, k)
            return
        ll = np.asarray(self.level_labels)
        if ll.shape != (n, tax.n_levels) or not np.issubdtype(ll.dtype, np.integer):
            raise DataError(
                f"level_labels must be integer [N, L] = {(n, tax.n_levels)}, got {ll.shape}"
            )
        ll = ll.astype(np.int64)
        for k in range(tax.n_levels):
            if ll[:, k].max(initial=-1) >= tax.n_classes(k):
                raise DataError(f"level_labels hold a code outside level {tax.levels[k]!r}")
        bad = ~tax.check_consistent(ll)
        if bad.any():
            _, ids, _ = self._normalised()
            raise DataError(
                f"{int(bad.sum())} samples have level labels that contradict the taxonomy, "
                f"e.g. sample id {ids[bad][0]}"
            )
        self.level_labels = ll
        if self.labels is None:
            self.labels = ll[:, -1].copy()
            self.classes = tax.classes(-1)

    @property
    def label_level(self) -> int | None:
        """The taxonomy level whose classes ``labels`` refer to (``None`` without a
        taxonomy, or when ``classes`` are not exactly one level's classes)."""
        tax = self.taxonomy
        if tax is None:
            return None
        for k in range(tax.n_levels - 1, -1, -1):
            if tax.classes(k) == list(self.classes):
                return k
        return None

    def with_taxonomy(self, taxonomy: Taxonomy, complete: bool = True) -> TimeSeriesSet:
        """This set with a class hierarchy attached: the labels (names at any level of
        ``taxonomy``) become per-level labels, and ``labels``/``classes`` the finest level's.

        ``complete=True`` first pads a ragged tree (:meth:`Taxonomy.complete`), as the
        hierarchical models need.
        """
        if self.labels is None:
            raise DataError("a taxonomy needs labels to attach to")
        tax = taxonomy.complete() if complete else taxonomy
        level_labels = tax.encode(self.label_names)
        return self.replace(
            labels=level_labels[:, -1].copy(), classes=tax.classes(-1), taxonomy=tax,
            level_labels=level_labels,
        )

    def at_level(self, level: int | str) -> TimeSeriesSet:
        """The same samples with ``labels``/``classes`` at another taxonomy level (a
        roll-up to a coarser level, or back to a finer one)."""
        tax, level_labels = self._require_taxonomy()
        k = tax.level_index(level)
        return self.replace(labels=level_labels[:, k].copy(), classes=tax.classes(k),
                            level_labels=level_labels)

    def _require_taxonomy(self) -> tuple[Taxonomy, np.ndarray]:
        """The taxonomy and the per-level labels, or a clear error."""
        if self.taxonomy is None or self.level_labels is None:
            raise DataError("this set has no class hierarchy; attach one with with_taxonomy()")
        return self.taxonomy, self.level_labels

    def _normalised(self) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """``mask``, ``ids`` and ``meta``, which ``__post_init__`` always sets."""
        if self.mask is None or self.ids is None or self.meta is None:
            raise DataError("mask, ids and meta of a time-series set must not be set to None")
        return self.mask, self.ids, self.meta

    # ------------------------------------------------------------------ construction
    @staticmethod
    def encode_labels(
        names: Sequence[Any], classes: Sequence[str] | None = None
    ) -> tuple[np.ndarray, list[str]]:
        """Turn label names into integer codes; ``classes`` fixes the order (sorted otherwise).

        Missing names (None/NaN/"") become ``-1``.
        """
        arr = pd.Series(names, dtype="object")
        missing = arr.isna() | (arr.astype(str) == "")
        as_str = arr.astype(str)
        if classes is None:
            classes = sorted(set(as_str[~missing]))
        classes = [str(c) for c in classes]
        lookup = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(as_str[~missing]) - set(lookup))
        if unknown:
            raise DataError(f"labels not among the classes {classes}: {unknown[:5]}")
        codes = np.array([lookup.get(s, -1) for s in as_str], dtype=np.int64)
        codes[missing.to_numpy()] = -1
        return codes, classes

    @classmethod
    def from_labels(
        cls,
        values: np.ndarray,
        bands: Sequence[str],
        label_names: Sequence[Any] | None,
        classes: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> TimeSeriesSet:
        """Build a set from label *names* (strings) instead of integer codes."""
        labels: np.ndarray | None = None
        cls_list: list[str] = []
        if label_names is not None:
            labels, cls_list = cls.encode_labels(label_names, classes)
        return cls(values=values, bands=list(bands), labels=labels, classes=cls_list, **kwargs)

    # ------------------------------------------------------------------ shape and access
    @property
    def n_times(self) -> int:
        return self.values.shape[1]

    @property
    def n_bands(self) -> int:
        return self.values.shape[2]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    @property
    def per_sample_dates(self) -> np.ndarray | None:
        """Dates as ``[N, T]`` (broadcast when shared)."""
        if self.dates is None:
            return None
        return np.broadcast_to(self.dates, (self.n_samples, self.n_times))

    @property
    def day_of_year(self) -> np.ndarray | None:
        """Day of year (1..366), derived from dates, same shape as ``dates``."""
        if self.dates is None:
            return None
        years = self.dates.astype("datetime64[Y]")
        return (self.dates - years).astype(np.int64) + 1

    def band_index(self, names: Sequence[str]) -> list[int]:
        """Positions of the named bands, matched case-insensitively."""
        lookup = {b.lower(): i for i, b in enumerate(self.bands)}
        missing = [n for n in names if n.lower() not in lookup]
        if missing:
            raise DataError(f"bands {missing} not found; available bands: {self.bands}")
        return [lookup[n.lower()] for n in names]

    def band(self, name: str) -> np.ndarray:
        """One band as ``[N, T]``."""
        return self.values[:, :, self.band_index([name])[0]]

    def select_bands(self, names: Sequence[str]) -> TimeSeriesSet:
        """A new set with only the named bands, in the given order."""
        idx = self.band_index(names)
        return self.replace(
            values=self.values[:, :, idx], bands=[self.bands[i] for i in idx], mask=self.mask
        )

    def subset(self, index: np.ndarray | Sequence[int] | slice) -> TimeSeriesSet:
        """Samples selected by integer positions, boolean mask or slice."""
        idx = np.arange(self.n_samples)[index]
        dates = self.dates
        if dates is not None and dates.ndim == 2:
            dates = dates[idx]
        mask, ids, meta = self._normalised()
        return TimeSeriesSet(
            values=self.values[idx],
            bands=list(self.bands),
            dates=dates,
            mask=mask[idx],
            labels=None if self.labels is None else self.labels[idx],
            classes=list(self.classes),
            ids=ids[idx],
            meta=meta.iloc[idx].reset_index(drop=True),
            taxonomy=self.taxonomy,
            level_labels=None if self.level_labels is None else self.level_labels[idx],
        )

    def replace(self, **changes: Any) -> TimeSeriesSet:
        """A copy with some fields replaced.

        If ``values`` change and no ``mask`` is given, the mask is re-derived from NaNs. If
        ``labels`` or ``classes`` change and no ``level_labels`` are given, the per-level
        labels are derived again from the new labels.
        """
        fields: dict[str, Any] = {
            "values": self.values,
            "bands": self.bands,
            "dates": self.dates,
            "mask": None if "values" in changes else self.mask,
            "labels": self.labels,
            "classes": self.classes,
            "ids": self.ids,
            "meta": self.meta,
            "taxonomy": self.taxonomy,
            "level_labels": (
                None if {"labels", "classes"} & set(changes) else self.level_labels
            ),
        }
        fields.update(changes)
        return TimeSeriesSet(**fields)

    def group_values(self, column: str) -> np.ndarray:
        """One metadata column (e.g. ``region``, ``year``) as an array, with a clear error."""
        _, _, meta = self._normalised()
        if column not in meta.columns:
            raise DataError(
                f"no column {column!r} in sample metadata; available: {list(meta.columns)}"
            )
        return meta[column].to_numpy()

    def check_no_empty_series(self) -> None:
        """Raise if any series has no valid observation at all."""
        mask, ids, _ = self._normalised()
        empty = ~mask.any(axis=1)
        if empty.any():
            bad = [str(i) for i in ids[empty][:5]]
            raise DataError(
                f"{int(empty.sum())} series have no valid observation (all NaN), e.g. sample ids "
                f"{', '.join(bad)}; drop them or fill them before training"
            )

    def __repr__(self) -> str:
        cls = f", classes={self.n_classes}" if self.labels is not None else ""
        if self.taxonomy is not None:
            cls += f", levels={self.taxonomy.sizes}"
        return (
            f"TimeSeriesSet(N={self.n_samples}, T={self.n_times}, C={self.n_bands}, "
            f"bands={self.bands}{cls})"
        )

    # ------------------------------------------------------------------ long tables
    def to_long(self) -> pd.DataFrame:
        """One row per (sample, time step): ``sample_id``, ``date`` or ``time``, bands, ``label``,
        metadata columns. Invalid steps keep their row with NaN band values."""
        n, t, _ = self.values.shape
        mask, ids, meta = self._normalised()
        out: dict[str, Any] = {"sample_id": np.repeat(ids, t)}
        dates = self.per_sample_dates
        if dates is None:
            out["time"] = np.tile(np.arange(t), n)
        else:
            out["date"] = dates.reshape(-1)
        flat = self.values.reshape(n * t, -1)
        for i, b in enumerate(self.bands):
            out[b] = flat[:, i]
        out["valid"] = mask.reshape(-1)
        if self.labels is not None:
            out["label"] = np.repeat(self.label_names, t)
        if self.taxonomy is not None and self.level_labels is not None:
            for k, level in enumerate(self.taxonomy.levels):
                names = np.array([*self.taxonomy.classes(k), ""], dtype=object)
                out[f"label@{level}"] = np.repeat(names[self.level_labels[:, k]], t)
        df = pd.DataFrame(out)
        for col in meta.columns:
            df[col] = np.repeat(meta[col].to_numpy(), t)
        return df

    # ------------------------------------------------------------------ xarray
    def to_xarray(self) -> xr.Dataset:
        """An ``xarray.Dataset`` with ``values(sample, time, band)`` and per-sample coords."""
        import xarray as xr

        mask, ids, meta = self._normalised()
        coords: dict[str, Any] = {"sample": ids, "band": list(self.bands)}
        ds = xr.Dataset(
            {
                "values": (("sample", "time", "band"), self.values),
                "valid": (("sample", "time"), mask),
            },
            coords=coords,
        )
        if self.dates is not None:
            dims = ("time",) if self.dates.ndim == 1 else ("sample", "time")
            ds = ds.assign_coords(date=(dims, self.dates.astype("datetime64[ns]")))
        if self.labels is not None:
            ds = ds.assign_coords(label=("sample", self.labels))
            ds.attrs["classes"] = list(self.classes)
        for col in meta.columns:
            ds = ds.assign_coords({f"{_META_PREFIX}{col}": ("sample", meta[col].to_numpy())})
        return ds

    @classmethod
    def from_xarray(cls, ds: xr.Dataset) -> TimeSeriesSet:
        """Inverse of :meth:`to_xarray`."""
        if "values" not in ds:
            raise DataError("dataset has no 'values' variable (sample, time, band)")
        da = ds["values"].transpose("sample", "time", "band")
        dates = None
        if "date" in ds.coords:
            dims = [d for d in ("sample", "time") if d in ds["date"].dims]
            dates = ds["date"].transpose(*dims).to_numpy()
        meta = pd.DataFrame(
            {
                str(name)[len(_META_PREFIX) :]: ds.coords[name].to_numpy()
                for name in ds.coords
                if str(name).startswith(_META_PREFIX)
            }
        )
        labels = ds.coords["label"].to_numpy() if "label" in ds.coords else None
        return cls(
            values=da.to_numpy(),
            bands=[str(b) for b in ds["band"].to_numpy()],
            dates=dates,
            mask=ds["valid"].transpose("sample", "time").to_numpy() if "valid" in ds else None,
            labels=labels,
            classes=list(ds.attrs.get("classes", [])),
            ids=ds["sample"].to_numpy(),
            meta=meta if len(meta.columns) else None,
        )

    # ------------------------------------------------------------------ parquet
    def to_parquet(self, path: str | Path) -> Path:
        """Save as a long Parquet table with the class list and band order in its metadata.

        Written atomically (temp file + rename).
        """
        import json

        import pyarrow as pa
        import pyarrow.parquet as pq

        from cropscope.io import atomic_path

        table = pa.Table.from_pandas(self.to_long(), preserve_index=False)
        info = {
            "bands": self.bands,
            "classes": self.classes,
            "n_times": self.n_times,
            "has_dates": self.dates is not None,
            "has_labels": self.labels is not None,
            "meta_columns": list(self._normalised()[2].columns),
            "taxonomy": None if self.taxonomy is None else self.taxonomy.to_dict(),
        }
        schema_meta = dict(table.schema.metadata or {})
        schema_meta[b"cropscope"] = json.dumps(info).encode()
        table = table.replace_schema_metadata(schema_meta)
        path = Path(path)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return path

    @classmethod
    def read_parquet(cls, path: str | Path) -> TimeSeriesSet:
        """Load a set written by :meth:`to_parquet`."""
        import json

        import pyarrow.parquet as pq

        path = Path(path)
        if not path.exists():
            raise DataError(f"file not found: {path}")
        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(b"cropscope")
        if raw is None:
            raise DataError(
                f"{path} was not written by TimeSeriesSet.to_parquet; "
                "read a plain long table with cropscope.data.read_table"
            )
        info = json.loads(raw)
        df = table.to_pandas()
        t = int(info["n_times"])
        n = len(df) // t
        bands = info["bands"]
        values = df[bands].to_numpy(np.float32).reshape(n, t, len(bands))
        dates = df["date"].to_numpy().reshape(n, t) if info["has_dates"] else None
        if dates is not None and (dates == dates[:1]).all():
            dates = dates[0]
        labels = None
        if info["has_labels"]:
            labels, _ = cls.encode_labels(
                df["label"].to_numpy()[::t].tolist(), info["classes"]
            )
        meta_cols = info["meta_columns"]
        meta = df[meta_cols].iloc[::t].reset_index(drop=True) if meta_cols else None
        taxonomy = level_labels = None
        if info.get("taxonomy"):
            from cropscope.taxonomy.tree import Taxonomy

            taxonomy = Taxonomy.from_dict(info["taxonomy"])
            level_labels = np.stack(
                [
                    cls.encode_labels(
                        df[f"label@{level}"].to_numpy()[::t].tolist(), taxonomy.classes(k)
                    )[0]
                    for k, level in enumerate(taxonomy.levels)
                ],
                axis=1,
            )
        return cls(
            values=values,
            bands=bands,
            dates=dates,
            mask=df["valid"].to_numpy(bool).reshape(n, t),
            labels=labels,
            classes=info["classes"],
            ids=df["sample_id"].to_numpy()[::t],
            meta=meta,
            taxonomy=taxonomy,
            level_labels=level_labels,
        )
