"""Reader for the TempCNN example data (Formosat-2 pixel series, Pelletier et al. 2019).

Each CSV has no header: ``class, polygonID, d1.NIR, d1.R, d1.G, ..., dT.G``. The series
are on regular steps without a calendar, so ``dates`` is ``None``.

Class names come from ``class_map.txt`` (``value,class,colour`` with values 1..13).
**Assumption:** label ``k`` in the CSV is class-map value ``k + 1`` (label 0 = wheat). This
is likely but not documented by the authors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError

__all__ = ["BANDS", "SPLITS", "read_class_map", "read_tempcnn_csv", "read_tempcnn_dir"]

BANDS = ("NIR", "R", "G")
SPLITS = ("train", "test")


def read_class_map(path: str | Path) -> list[str]:
    """Class names from a ``value,class[,colour]`` table, in value order (1, 2, ...)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    table = pd.read_csv(path)
    if not {"value", "class"} <= set(table.columns):
        raise DataError(f"{path} needs the columns value and class; has {list(table.columns)}")
    table = table.sort_values("value")
    expected = np.arange(1, len(table) + 1)
    if not np.array_equal(table["value"].to_numpy(), expected):
        raise DataError(f"{path}: class values must be 1..{len(table)}")
    return [str(c) for c in table["class"]]


def read_tempcnn_csv(
    path: str | Path,
    classes: list[str] | None = None,
    bands: tuple[str, ...] = BANDS,
    id_prefix: str = "",
) -> TimeSeriesSet:
    """Read one TempCNN CSV (``class, polygonID, values...``) into ``[N, T, len(bands)]``.

    ``classes[k]`` names label ``k``; default names are the label numbers. Meta columns:
    ``polygon_id`` and ``group`` (the same polygon id, for group-aware splits). Ids are
    ``f"{id_prefix}{row}"`` (row numbers when ``id_prefix`` is empty).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    table = pd.read_csv(path, header=None)
    n_values = table.shape[1] - 2
    if n_values <= 0 or n_values % len(bands):
        raise DataError(
            f"{path}: {table.shape[1]} columns; expected class, polygonID and a multiple of "
            f"{len(bands)} values"
        )
    labels = table.iloc[:, 0].to_numpy()
    if not np.all(np.equal(np.mod(labels, 1), 0)):
        raise DataError(f"{path}: the first column (class) must hold integer labels")
    labels = labels.astype(np.int64)
    if classes is None:
        classes = [str(k) for k in range(int(labels.max()) + 1)]
    if labels.min() < 0 or labels.max() >= len(classes):
        raise DataError(
            f"{path}: labels {labels.min()}..{labels.max()} outside 0..{len(classes) - 1}"
        )
    values = table.iloc[:, 2:].to_numpy(np.float32).reshape(len(table), -1, len(bands))
    polygons = table.iloc[:, 1].to_numpy(np.int64)
    ids = np.arange(len(table))
    if id_prefix:
        ids = np.array([f"{id_prefix}{i}" for i in ids], dtype=object)
    return TimeSeriesSet(
        values=values,
        bands=list(bands),
        labels=labels,
        classes=list(classes),
        ids=ids,
        meta=pd.DataFrame({"polygon_id": polygons, "group": polygons}),
    )


def read_tempcnn_dir(directory: str | Path, split: str | None = None) -> TimeSeriesSet:
    """The TempCNN example folder (``train_dataset.csv``, ``test_dataset.csv``,
    ``class_map.txt``).

    ``split`` is ``"train"``, ``"test"`` or ``None`` (both concatenated, train first, with a
    ``split`` meta column). Ids are ``"train-<row>"`` / ``"test-<row>"`` in every case.
    """
    directory = Path(directory)
    if split is not None and split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {list(SPLITS)} or None")
    classes = read_class_map(directory / "class_map.txt")
    parts = []
    for name in SPLITS if split is None else (split,):
        part = read_tempcnn_csv(
            directory / f"{name}_dataset.csv", classes=classes, id_prefix=f"{name}-"
        )
        assert part.meta is not None  # set by TimeSeriesSet.__post_init__
        part.meta["split"] = name
        parts.append(part)
    if len(parts) == 1:
        return parts[0]
    return TimeSeriesSet(
        values=np.concatenate([p.values for p in parts]),
        bands=list(BANDS),
        labels=np.concatenate([p.labels for p in parts]),
        classes=list(classes),
        ids=np.concatenate([p.ids for p in parts]),
        meta=pd.concat([p.meta for p in parts], ignore_index=True),
    )
