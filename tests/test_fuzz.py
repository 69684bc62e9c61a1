"""Property-based fuzzing of the readers of user files (issue 20): the table reader, the
taxonomy readers and the run-folder loader. Whatever the input, the result is a loaded
object or one :class:`~cropscope.errors.CropscopeError` (the CLI's ``error:`` line), never
another exception, a hang or an unbounded allocation.

Bounded for CI: a fixed number of examples each (:data:`EXAMPLES`), no deadline (the first
call imports pandas/torch), no example database written to the checkout.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cropscope.errors import CropscopeError
from tests.conftest import make_toy_set

#: examples per property (``CROPSCOPE_FUZZ_EXAMPLES=2000`` for a longer search)
EXAMPLES = int(os.environ.get("CROPSCOPE_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="cropscope-fuzz-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def small_memory_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs that declare a huge size must be refused by the guard, not allocated."""
    monkeypatch.setenv("CROPSCOPE_MEMORY_LIMIT", "256M")


def loads_or_user_error(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except CropscopeError as exc:
        assert str(exc), "a user error has a message"
        return None


# ---------------------------------------------------------------------------- tables
CELL = st.one_of(
    st.none(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "nan", "inf", "-inf", "1e40", "NA", "2021-04-03", "20210403",
                     "x", "a,b", '"', "\n", "0x10", "1_000", "true"]),
    st.text(max_size=8),
)
COLUMNS = st.lists(st.sampled_from(["sample_id", "date", "time", "label", "B4", "B8",
                                    "valid", "region", "longitude", "geometry", "x", ""]),
                   min_size=1, max_size=7)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    if any(c in text for c in ',"\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


@FUZZ
@given(columns=COLUMNS, rows=st.lists(st.lists(CELL, min_size=7, max_size=7), max_size=12),
       suffix=st.sampled_from([".csv", ".tsv"]))
def test_table_reader_loads_or_raises_a_user_error(scratch: Path, columns: list[str],
                                                   rows: list[list[Any]], suffix: str) -> None:
    from cropscope.data import TimeSeriesSet
    from cropscope.data.readers.table import read_table

    sep = "," if suffix == ".csv" else "\t"
    lines = [sep.join(columns)] + [sep.join(_cell(v) for v in row[: len(columns)])
                                   for row in rows]
    path = scratch / f"t{suffix}"
    path.write_text("\n".join(lines) + "\n")
    ts = loads_or_user_error(read_table, path)
    if ts is not None:
        assert isinstance(ts, TimeSeriesSet)
        assert not ((ts.values == math.inf) | (ts.values == -math.inf)).any()


@FUZZ
@given(raw=st.binary(max_size=400))
def test_table_reader_on_raw_bytes(scratch: Path, raw: bytes) -> None:
    from cropscope.data.readers.table import read_table

    for name in ("b.csv", "b.parquet"):
        path = scratch / name
        path.write_bytes(raw)
        loads_or_user_error(read_table, path)


@FUZZ
@given(ids=st.integers(1, 40), span=st.integers(1, 10**9), bands=st.integers(1, 3))
def test_table_reader_declared_grid_sizes(scratch: Path, ids: int, span: int,
                                          bands: int) -> None:
    """Few rows, any span of integer steps: loaded, or refused (steps or memory limit)."""
    from cropscope.data.readers.table import read_table

    head = "sample_id,time," + ",".join(f"B{b}" for b in range(bands)) + ",label"
    rows = [f"s{i},{t},{','.join(['0.5'] * bands)},{'ab'[i % 2]}"
            for i in range(ids) for t in (0, span)]
    path = scratch / "g.csv"
    path.write_text(head + "\n" + "\n".join(rows) + "\n")
    loads_or_user_error(read_table, path)


# ---------------------------------------------------------------------------- taxonomies
NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
TREE = st.recursive(
    st.one_of(st.none(), NAMES, st.integers(-5, 5), st.floats(allow_nan=True)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(NAMES, inner, max_size=4)),
    max_leaves=25,
)
DOC = st.fixed_dictionaries(
    {}, optional={"tree": TREE, "nodes": TREE, "levels": TREE, "name": TREE},
)


@FUZZ
@given(doc=st.one_of(DOC, TREE), as_yaml=st.booleans())
def test_taxonomy_files_load_or_raise_a_user_error(scratch: Path, doc: Any,
                                                   as_yaml: bool) -> None:
    import yaml

    from cropscope.taxonomy import Taxonomy, read_taxonomy

    if as_yaml:
        path = scratch / "t.yaml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    else:
        path = scratch / "t.json"
        path.write_text(json.dumps(doc))
    tax = loads_or_user_error(read_taxonomy, path)
    if tax is not None:
        assert isinstance(tax, Taxonomy) and tax.n_levels >= 1


@FUZZ
@given(text=st.text(max_size=300), suffix=st.sampled_from([".yaml", ".json", ".csv", ".tsv"]))
def test_taxonomy_readers_on_any_text(scratch: Path, text: str, suffix: str) -> None:
    from cropscope.taxonomy import read_taxonomy

    path = scratch / f"x{suffix}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    loads_or_user_error(read_taxonomy, path)


@FUZZ
@given(rows=st.lists(st.lists(st.sampled_from(["", "a", "b", "c", "A", "x y", "a"]),
                              min_size=3, max_size=3), max_size=8),
       header=st.sampled_from(["code,name,parent", "code,name,parent,level",
                               "l1_name,l2_name,l3_name", "a,b,c"]))
def test_taxonomy_tables_load_or_raise_a_user_error(scratch: Path, rows: list[list[str]],
                                                    header: str) -> None:
    from cropscope.taxonomy import read_taxonomy

    width = len(header.split(","))
    path = scratch / "t.csv"
    path.write_text(header + "\n" + "\n".join(",".join((r * 2)[:width]) for r in rows) + "\n")
    loads_or_user_error(read_taxonomy, path)


# ---------------------------------------------------------------------------- run folders
@pytest.fixture(scope="module")
def good_runs(scratch: Path) -> dict[str, Path]:
    from cropscope.training.rundir import train_run

    ts = make_toy_set(n_per_class=6)
    out = {}
    for name, config in (("logreg", {}), ("lightgbm", {"n_estimators": 3,
                                                       "min_child_samples": 2})):
        train_run(ts, name, scratch / f"good-{name}", config=config, holdout=0)
        out[name] = scratch / f"good-{name}"
    return out


JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=False),
              st.text(max_size=12), st.sampled_from(["os:system", "../x", "rf", "tempcnn",
                                                     "classifier", "segmentation"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    obj[path[0]] = _set(obj[path[0]], path[1:], value)
    return obj


@FUZZ
@given(data=st.data(), which=st.sampled_from(["logreg", "lightgbm"]),
       target=st.sampled_from(["run.json", "model.json"]), remanifest=st.booleans())
def test_run_loader_on_edited_json(good_runs: dict[str, Path], scratch: Path, data: Any,
                                   which: str, target: str, remanifest: bool) -> None:
    from cropscope.models import load_run_model
    from cropscope.runs.store import _write_manifest

    run = scratch / "edited"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(good_runs[which], run)
    doc = json.loads((run / target).read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        doc = _set(doc, path, data.draw(JSON_VALUE))
    (run / target).write_text(json.dumps(doc))
    if remanifest:  # as a hostile editor would: the manifest agrees with the edit
        _write_manifest(run)
    loads_or_user_error(load_run_model, run)


@FUZZ
@given(data=st.data(), which=st.sampled_from(["logreg", "lightgbm"]))
def test_run_loader_on_damaged_files(good_runs: dict[str, Path], scratch: Path,
                                     data: Any, which: str) -> None:
    from cropscope.models import load_run_model
    from cropscope.runs.store import _write_manifest

    run = scratch / "damaged"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(good_runs[which], run)
    files = sorted(p for p in run.iterdir() if p.is_file())
    victim = data.draw(st.sampled_from(files))
    raw = victim.read_bytes()
    how = data.draw(st.sampled_from(["cut", "flip", "replace", "delete"]))
    if how == "cut":
        victim.write_bytes(raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))])
    elif how == "flip" and raw:
        i = data.draw(st.integers(0, len(raw) - 1))
        victim.write_bytes(raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))])
                           + raw[i + 1:])
    elif how == "replace":
        victim.write_bytes(data.draw(st.binary(max_size=200)))
    else:
        victim.unlink()
    if data.draw(st.booleans()) and victim.name != "manifest.json":
        _write_manifest(run)
    loads_or_user_error(load_run_model, run)
