"""Reader for UCR time-series archive files (tab-separated, label first, no header).

Each row is ``label, v1, ..., vT`` for one univariate series. The series have no calendar,
so ``dates`` is ``None``. UCR labels are usually 1-based integers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError

__all__ = ["CROP_CLASSES", "read_ucr_crop", "read_ucr_tsv"]

#: Class names of the UCR "Crop" data set (labels 1..24), from the archive's description.
CROP_CLASSES = (
    "corn", "wheat", "dense building", "built industrial", "diffuse building",
    "temporary meadow", "hardwood", "wasteland", "fallow", "soy", "water", "meadow",
    "softwood", "sunflower", "sorghum", "eucalyptus", "rapeseed", "silage maize", "barley",
    "peas", "poplars", "mineral surface", "gravel pit", "lake",
)  # fmt: skip


def read_ucr_tsv(
    path: str | Path,
    classes: list[str] | tuple[str, ...] | None = None,
    band: str = "NDVI",
    first_label: int = 1,
) -> TimeSeriesSet:
    """Read one UCR ``.tsv`` split as ``[N, T, 1]`` with band name ``band``.

    Label ``first_label + k`` becomes class ``classes[k]`` (default names: the label numbers
    as written). Missing values (``NaN``) become gaps. Ids are row numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    table = pd.read_csv(path, sep="\t", header=None)
    if table.shape[1] < 2:
        raise DataError(f"{path}: expected a label column and at least one value per row")
    raw = table.iloc[:, 0].to_numpy(np.float64)
    if not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw)):
        raise DataError(f"{path}: the first column must hold integer class labels")
    codes = raw.astype(np.int64) - first_label
    if classes is None:
        classes = [str(k + first_label) for k in range(int(codes.max()) + 1)]
    if codes.min() < 0 or codes.max() >= len(classes):
        raise DataError(
            f"{path}: labels {int(raw.min())}..{int(raw.max())} do not fit {len(classes)} "
            f"classes starting at {first_label}"
        )
    values = table.iloc[:, 1:].to_numpy(np.float32)[:, :, None]
    return TimeSeriesSet(values=values, bands=[band], labels=codes, classes=list(classes))


def read_ucr_crop(path: str | Path) -> TimeSeriesSet:
    """The UCR "Crop" split at ``path``: labels 1..24 named by :data:`CROP_CLASSES`."""
    return read_ucr_tsv(path, classes=CROP_CLASSES, band="NDVI", first_label=1)
