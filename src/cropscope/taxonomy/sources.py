"""Where taxonomies come from: EuroCrops HCAT, the H2Crop four-level table, user files and
the hierarchies shipped with cropscope for the registered datasets.

User formats (:func:`read_taxonomy`, :func:`write_taxonomy`):

- **YAML**, nested: ``levels: [group, crop]`` and ``tree:`` a mapping from each class to its
  children (a mapping, a list of leaf names, or nothing for a leaf)::

      name: my-legend
      levels: [group, crop]
      tree:
        cereal: [wheat, barley]
        grassland: [meadow]

- **YAML/JSON**, flat: ``nodes:`` a list of ``{level, code, name, parent}`` (what
  :meth:`Taxonomy.to_dict` writes).
- **CSV**, wide: one row per leaf and one column per level (coarse to fine), either plain
  names or ``<level>_name`` with an optional ``<level>_code``/``<level>_id`` next to it.
- **CSV**, edges: columns ``code``, ``name``, ``parent`` (empty for top-level classes) and
  optionally ``level`` (then codes need only be unique within their level).
"""

from __future__ import annotations

import json
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from cropscope.errors import DataError
from cropscope.io import atomic_path
from cropscope.remote import RemoteFile, locate_files
from cropscope.taxonomy.tree import Node, Taxonomy

__all__ = [
    "H2CROP_FILE",
    "HCAT_FILES",
    "builtin_taxonomy",
    "h2crop_hcat_codes",
    "hcat_depth",
    "hcat_parent",
    "list_builtin_taxonomies",
    "list_taxonomies",
    "load_h2crop",
    "load_hcat",
    "load_taxonomy",
    "read_taxonomy",
    "write_taxonomy",
]

_EUROCROPS = "https://raw.githubusercontent.com/maja601/EuroCrops/b4331adc3dec584ca0e86f0f2d5c881e53cb3b68"
_H2CROP = "https://raw.githubusercontent.com/flyakon/H2Crop/d5a861ba4e266ea55677f3eaef96d7c17d0fd489"

#: EuroCrops HCAT core tables (version -> file), pinned at a commit
HCAT_FILES: dict[str, RemoteFile] = {
    "HCAT3": RemoteFile(
        "eurocrops_hcat/hcat_core/HCAT3.csv",
        f"{_EUROCROPS}/hcat_core/HCAT3.csv",
        "47dcd2fcab18862a7449870abd7662806ffa2b2fb96cec324793cb1c50ae429e",
        10_244,
    ),
    "HCAT2": RemoteFile(
        "eurocrops_hcat/hcat_core/HCAT2.csv",
        f"{_EUROCROPS}/hcat_core/HCAT2.csv",
        "90f7f35f4360ce1063d68315eaf70bcbfee156125559ebdcdb206eec08a03db3",
        10_544,
    ),
}
#: the H2Crop four-level table (resources/cascade_labels.csv of the H2Crop repository)
H2CROP_FILE = RemoteFile(
    "h2crop_taxonomy/cascade_labels.csv",
    f"{_H2CROP}/resources/cascade_labels.csv",
    "3044b0883ecad837ef6530e074edffa02751a2024ec440be254fbed5713f1586",
    8_885,
)
HCAT_LEVELS = ["hcat1", "hcat2", "hcat3", "hcat4", "hcat5", "hcat6"]
H2CROP_LEVELS = ["level1", "level2", "level3", "level4"]


# ---------------------------------------------------------------------------- HCAT codes
def _hcat_parts(code: str) -> list[str]:
    code = str(code).strip()
    if len(code) != 10 or not code.isdigit():
        raise DataError(f"not a 10-digit HCAT code: {code!r}")
    return [code[0], code[1], code[2:4], code[4:6], code[6:8], code[8:10]]


def hcat_depth(code: str) -> int:
    """0-based depth of an HCAT code: the position of its last non-zero digit group
    (``3|3|01|01|01|01``)."""
    parts = _hcat_parts(code)
    nonzero = [i for i, p in enumerate(parts) if int(p)]
    return nonzero[-1] if nonzero else 0


def hcat_parent(code: str) -> str | None:
    """The parent code (last non-zero group zeroed); ``None`` for a top-level code."""
    parts = _hcat_parts(code)
    depth = hcat_depth(code)
    if depth == 0:
        return None
    return "".join(p if i < depth else "0" * len(p) for i, p in enumerate(parts))


# ---------------------------------------------------------------------------- loaders
def _locate(rf: RemoteFile, root: str | Path | None, download: bool) -> Path:
    return locate_files(Path(rf.path).stem, [rf], root, download) / rf.path


def load_hcat(version: str = "HCAT3", root: str | Path | None = None,
              download: bool = True) -> Taxonomy:
    """The EuroCrops HCAT taxonomy (``HCAT3`` or ``HCAT2``): 10-digit codes, the hierarchy
    read from the codes (parents by zeroing the last non-zero group), ragged (a leaf may sit
    on any of the six levels)."""
    if version not in HCAT_FILES:
        raise DataError(f"unknown HCAT version {version!r}; choose from {list(HCAT_FILES)}")
    path = _locate(HCAT_FILES[version], root, download)
    df = pd.read_csv(path, dtype=str)
    code_col, name_col = f"{version}_code", f"{version}_name"
    if {code_col, name_col} - set(df.columns):
        raise DataError(f"{path} lacks the columns {code_col!r}, {name_col!r}")
    nodes = [
        Node(hcat_depth(c), c, n, hcat_parent(c))
        for c, n in zip(df[code_col].str.strip(), df[name_col].str.strip(), strict=True)
    ]
    return Taxonomy(nodes, HCAT_LEVELS[: max(n.level for n in nodes) + 1], name=version)


def load_h2crop(root: str | Path | None = None, download: bool = True) -> Taxonomy:
    """The H2Crop four-level crop hierarchy (6 -> 36 -> 82 -> 101 classes); codes are the
    table's per-level ids. The leaves' HCAT3 codes: :func:`h2crop_hcat_codes`."""
    path = _locate(H2CROP_FILE, root, download)
    return _read_wide_csv(pd.read_csv(path, dtype=str), name="h2crop", levels=H2CROP_LEVELS)


def h2crop_hcat_codes(root: str | Path | None = None, download: bool = True) -> dict[str, str]:
    """H2Crop finest-level class name -> its HCAT3 code."""
    path = _locate(H2CROP_FILE, root, download)
    df = pd.read_csv(path, dtype=str)
    return dict(zip(df["level4_name"].str.strip(), df["HCAT3_code"].str.strip(), strict=True))


# ---------------------------------------------------------------------------- user formats
def _read_wide_csv(df: pd.DataFrame, name: str, levels: list[str] | None = None) -> Taxonomy:
    """One row per leaf; level columns ``<level>_name`` (+ ``_code``/``_id``) or plain."""
    cols = list(df.columns)
    if levels is None:
        named = [c[: -len("_name")] for c in cols if c.endswith("_name")]
        levels = named or cols
    nodes: dict[tuple[int, str], Node] = {}
    for row_no, row in enumerate(df.itertuples(index=False), start=2):
        rec = dict(zip(cols, row, strict=True))
        parent: str | None = None
        for k, level in enumerate(levels):
            label = rec.get(f"{level}_name", rec.get(level))
            if label is None or (isinstance(label, float) and pd.isna(label)) or label == "":
                break  # a shorter path: a leaf above the finest level
            code = rec.get(f"{level}_code", rec.get(f"{level}_id", label))
            code, label = str(code).strip(), str(label).strip()
            node = Node(k, code, label, parent)
            old = nodes.setdefault((k, code), node)
            if old != node:
                raise DataError(
                    f"invalid taxonomy {name!r}: row {row_no}, level {level!r}: code {code!r} "
                    f"is {old.name!r} under {old.parent!r} elsewhere but {label!r} under "
                    f"{parent!r} here (a node may have only one parent)"
                )
            parent = code
    return Taxonomy(nodes.values(), levels, name)


def _read_edges_csv(df: pd.DataFrame, name: str) -> Taxonomy:
    """Columns ``code``, ``name``, ``parent`` (+ optional ``level``). With a ``level`` column
    codes need only be unique within a level (levels in order of appearance); without it,
    codes are unique overall and levels follow from the parent chains."""
    df = df.fillna("")
    if "level" in df.columns:
        levels = list(dict.fromkeys(str(v).strip() for v in df["level"]))
        return Taxonomy(
            [
                Node(levels.index(str(lv).strip()), str(c).strip(), str(n).strip(),
                     str(p).strip() or None)
                for lv, c, n, p in zip(df["level"], df["code"], df["name"], df["parent"],
                                       strict=True)
            ],
            levels,
            name,
        )
    codes = [str(c).strip() for c in df["code"]]
    names = [str(c).strip() for c in df["name"]]
    parents = [str(c).strip() or None for c in df["parent"]]
    dups = sorted(c for c, n in Counter(codes).items() if n > 1)
    if dups:
        raise DataError(f"invalid taxonomy {name!r}: duplicate codes {dups[:5]}")
    parent_of = dict(zip(codes, parents, strict=True))
    depth: dict[str, int] = {}
    for code in codes:
        chain: list[str] = []
        cur: str | None = code
        while cur is not None and cur not in depth:
            if cur in chain:
                raise DataError(f"invalid taxonomy {name!r}: cycle through {cur!r}")
            if cur not in parent_of:
                raise DataError(
                    f"invalid taxonomy {name!r}: parent {cur!r} of {chain[-1]!r} is not a class"
                )
            chain.append(cur)
            cur = parent_of[cur]
        base = -1 if cur is None else depth[cur]
        for i, c in enumerate(reversed(chain)):
            depth[c] = base + 1 + i
    nodes = [Node(depth[c], c, n, p) for c, n, p in zip(codes, names, parents, strict=True)]
    return Taxonomy(nodes, None, name)


def _nested_paths(tree: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if tree is None:
        return [prefix] if prefix else []
    if isinstance(tree, str | int | float):
        return [(*prefix, str(tree))]
    if isinstance(tree, list):
        out: list[tuple[str, ...]] = []
        for item in tree:
            out += _nested_paths(item, prefix)
        return out
    if isinstance(tree, dict):
        out = []
        for key, sub in tree.items():
            out += _nested_paths(sub, (*prefix, str(key)))
        return out
    raise DataError(f"cannot read taxonomy tree element {tree!r}")


def _from_mapping(data: dict[str, Any], default_name: str) -> Taxonomy:
    name = str(data.get("name", default_name))
    if "nodes" in data:
        return Taxonomy.from_dict({**data, "name": name})
    if "tree" in data:
        return Taxonomy.from_paths(_nested_paths(data["tree"]), data.get("levels"), name)
    raise DataError("a taxonomy file needs a 'tree' (nested classes) or a 'nodes' list")


def read_taxonomy(path: str | Path) -> Taxonomy:
    """Read a user taxonomy from YAML, JSON or CSV (formats in the module docstring).

    Bounded: the file is at most :data:`cropscope.io.MAX_USER_FILE_BYTES`, YAML aliases and
    deep nesting are refused (:func:`cropscope.io.load_yaml`). Any problem with the file is
    one :class:`~cropscope.errors.DataError`."""
    import csv
    import io

    from cropscope.io import load_yaml, read_user_text

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in {".yaml", ".yml", ".json", ".csv", ".tsv", ".txt"}:
        raise DataError(f"unknown taxonomy format {suffix!r}; use .yaml, .json or .csv")
    text = read_user_text(path, "taxonomy file")
    try:
        if suffix in {".yaml", ".yml", ".json"}:
            if suffix == ".json":
                try:
                    data = json.loads(text)
                except (json.JSONDecodeError, RecursionError) as exc:
                    raise DataError(f"cannot parse {path}: {exc}") from None
            else:
                data = load_yaml(text, f"taxonomy file {path}")
            if not isinstance(data, dict):
                raise DataError(f"{path}: a taxonomy file holds a mapping at its top level")
            return _from_mapping(data, path.stem)
        if not text.strip():
            raise DataError(f"taxonomy file {path} is empty")
        try:
            df = pd.read_csv(io.StringIO(text), dtype=str, sep=None, engine="python")
        except (ValueError, csv.Error) as exc:  # pandas' parser errors are ValueErrors
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(f"cannot read taxonomy table {path}: {first}") from None
        df.columns = [str(c).strip() for c in df.columns]
        if {"code", "name", "parent"} <= set(df.columns):
            return _read_edges_csv(df, path.stem)
        return _read_wide_csv(df, path.stem)
    except DataError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, IndexError,
            RecursionError) as exc:  # a structure the readers do not expect
        raise DataError(f"{path} is not a valid taxonomy file ({type(exc).__name__}: "
                        f"{exc})") from None


def write_taxonomy(taxonomy: Taxonomy, path: str | Path) -> Path:
    """Write ``taxonomy`` as flat YAML/JSON (``nodes``) or edge CSV, atomically."""
    import yaml

    path = Path(path)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix in {".yaml", ".yml"}:
            Path(tmp).write_text(yaml.safe_dump(taxonomy.to_dict(), sort_keys=False))
        elif suffix == ".json":
            Path(tmp).write_text(json.dumps(taxonomy.to_dict(), indent=1))
        elif suffix == ".csv":
            rows = [
                {"level": taxonomy.levels[n.level], "code": n.code, "name": n.name,
                 "parent": n.parent or ""}
                for n in taxonomy.nodes()
            ]
            pd.DataFrame(rows).to_csv(tmp, index=False)
        else:
            raise DataError(f"unknown taxonomy format {suffix!r}; use .yaml, .json or .csv")
    return path


# ---------------------------------------------------------------------------- shipped files
def list_builtin_taxonomies() -> list[str]:
    """Names of the hierarchies shipped with cropscope (one per registered dataset family)."""
    folder = resources.files("cropscope.taxonomy") / "builtin"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def builtin_taxonomy(name: str) -> Taxonomy:
    """A shipped hierarchy (e.g. ``sits-matogrosso``), or ``h2crop``/``HCAT3``/``HCAT2``
    from the data directory."""
    import yaml

    if name == "h2crop":
        return load_h2crop()
    if name in HCAT_FILES:
        return load_hcat(name)
    if name not in list_builtin_taxonomies():
        raise DataError(
            f"no taxonomy named {name!r}; shipped: "
            f"{', '.join([*list_builtin_taxonomies(), 'h2crop', *HCAT_FILES])}"
        )
    text = (resources.files("cropscope.taxonomy") / "builtin" / f"{name}.yaml").read_text()
    return _from_mapping(yaml.safe_load(text), name)


def list_taxonomies() -> list[str]:
    """Every name :func:`load_taxonomy` accepts: the shipped hierarchies, then ``h2crop`` and
    the EuroCrops HCAT versions (read from the data directory)."""
    return [*list_builtin_taxonomies(), "h2crop", *HCAT_FILES]


def load_taxonomy(source: str | Path) -> Taxonomy:
    """A hierarchy from a YAML/JSON/CSV file (a path with a suffix, see
    :func:`read_taxonomy`) or a name from :func:`list_taxonomies` (see
    :func:`builtin_taxonomy`)."""
    path = Path(source)
    return read_taxonomy(path) if path.suffix else builtin_taxonomy(str(source))
