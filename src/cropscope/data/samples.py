"""Samples named by a registered dataset or a user's long table, and the class hierarchy
attached to them: what the ``--dataset``/``--table``/``--taxonomy`` options of the command
line load (:func:`load_samples`, :func:`sample_source`, :func:`attach_taxonomy`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cropscope.data.readers.table import read_table
from cropscope.data.registry import get_dataset, load_dataset
from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.taxonomy.sources import builtin_taxonomy, load_taxonomy
from cropscope.taxonomy.tree import Taxonomy

__all__ = ["attach_taxonomy", "load_samples", "sample_source"]


def _check_one(dataset: str | None, table: str | Path | None) -> None:
    if (dataset is None) == (table is None):
        raise DataError("give exactly one of --dataset NAME or --table FILE")


def load_samples(
    dataset: str | None = None,
    table: str | Path | None = None,
    *,
    split: str | None = None,
    id_col: str = "sample_id",
    time_col: str = "date",
    label_col: str | None = "label",
    bands: Sequence[str] | None = None,
    **read_options: Any,
) -> TimeSeriesSet:
    """The samples of a registered ``dataset`` (optionally one ``split``) or of a long
    ``table`` (CSV/Parquet; ``id_col``/``time_col``/``label_col`` name its columns, see
    :func:`~cropscope.data.readers.table.read_table`); give exactly one of the two.
    ``bands``: the bands to keep, in this order (default: all; for a table, every numeric
    column). ``read_options`` go to ``read_table`` for a table (``nodata``, ``align``,
    ``season_start``, ``step``, ``wide``, ...; None: the reader's default); a dataset takes
    none."""
    _check_one(dataset, table)
    if dataset is not None:
        if any(v is not None for v in read_options.values()):
            given = sorted(k for k, v in read_options.items() if v is not None)
            raise DataError(f"table options {given} apply to --table files, not to a dataset")
        ts = load_dataset(dataset, split=split)
        return ts.select_bands(list(bands)) if bands else ts
    assert table is not None
    return read_table(Path(table), id_col=id_col, time_col=time_col, label_col=label_col,
                      bands=list(bands) if bands else None,
                      **{k: v for k, v in read_options.items() if v is not None})


def sample_source(dataset: str | None = None, table: str | Path | None = None,
                  split: str | None = None) -> str:
    """How runs and reports name the samples of :func:`load_samples`:
    ``dataset:NAME[:SPLIT]`` or ``table:PATH``."""
    _check_one(dataset, table)
    if dataset is not None:
        return f"dataset:{dataset}" + (f":{split}" if split else "")
    return f"table:{table}"


#: ``--taxonomy prefixes:2,4,6``: levels from the leading characters of the class codes
PREFIX_TAXONOMY = "prefixes:"


def _prefix_lengths(spec: str) -> list[int]:
    text = spec[len(PREFIX_TAXONOMY):]
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise DataError(f"taxonomy {spec!r}: expected prefix lengths such as "
                        f"'{PREFIX_TAXONOMY}2,4,6'") from None  # fmt: skip


def attach_taxonomy(
    ts: TimeSeriesSet,
    taxonomy: str | Path | Taxonomy | None = None,
    dataset: str | None = None,
) -> TimeSeriesSet:
    """``ts`` with a class hierarchy attached (per-level labels): ``taxonomy`` (a
    :class:`~cropscope.taxonomy.Taxonomy`, a YAML/JSON/CSV file or a shipped name, see
    :func:`~cropscope.taxonomy.load_taxonomy`; or ``"prefixes:2,4,6"``, levels made of the
    first 2, 4 and 6 characters of the set's class codes, see
    :meth:`~cropscope.taxonomy.Taxonomy.from_code_prefixes`), else the one shipped with
    ``dataset``. The tree is completed and, when the set's classes are all leaves,
    restricted to them."""
    if isinstance(taxonomy, Taxonomy):
        tax = taxonomy
    elif isinstance(taxonomy, str) and taxonomy.startswith(PREFIX_TAXONOMY):
        tax = Taxonomy.from_code_prefixes(ts.classes, _prefix_lengths(taxonomy), "prefixes")
    elif taxonomy is not None:
        tax = load_taxonomy(taxonomy)
    elif dataset is not None:
        name = get_dataset(dataset).taxonomy
        if name is None:
            raise DataError(f"no class hierarchy is shipped for {dataset!r}; give --taxonomy")
        tax = builtin_taxonomy(name)
    else:
        raise DataError("per-level evaluation needs --taxonomy FILE for your own table")
    tax = tax.complete()
    if set(ts.classes) <= set(tax.classes(-1)):
        tax = tax.subtree(ts.classes)
    return ts.with_taxonomy(tax)
