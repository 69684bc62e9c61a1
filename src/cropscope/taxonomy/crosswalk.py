"""Crosswalks: national crop legends -> EuroCrops HCAT -> another taxonomy (e.g. H2Crop).

EuroCrops publishes, per country or region, a table mapping each declared crop code to an
HCAT3 code. :func:`hcat_to_taxonomy` then places an HCAT code in a target taxonomy whose
finest classes carry HCAT codes: exactly (the code is a target leaf's code), or at the
deepest target node that covers it. That node is the lowest common ancestor of the target
leaves found under the code, walking up the HCAT hierarchy until some are found: e.g. spring
common soft wheat, absent from H2Crop, lands on H2Crop's level-3 ``common_soft_wheat``. A code
whose covering leaves span several top-level classes stays unmapped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cropscope.errors import DataError
from cropscope.io import atomic_path
from cropscope.remote import RemoteFile, locate_files
from cropscope.taxonomy.sources import (
    _EUROCROPS,
    h2crop_hcat_codes,
    hcat_parent,
    load_h2crop,
    load_hcat,
)
from cropscope.taxonomy.tree import Taxonomy

__all__ = [
    "COUNTRY_TABLES",
    "CrosswalkResult",
    "HcatPlacement",
    "crosswalk_country",
    "crosswalk_legend",
    "hcat_to_taxonomy",
    "read_country_table",
]

#: EuroCrops country tables shipped in csvs/country_mappings (name -> sha256)
COUNTRY_TABLES: dict[str, str] = {
    "at_2021": "ca5ecb40dde27be481b7dacf496684f0b1cdc1c836daf05ad33f4693c8158c9c",
    "be_vlg_2021": "8bf4dfbcf1ac754d257638539f5cd91d3804912b206608b8874d863f0dcf4582",
    "be_wal_all_years": "2313ce51767a0df1bd2345f2b20275fd3625bb6b05bb1e1369e50b95f705eff1",
    "cz_2023": "181550a4bc3ff351c7dda8cbf9cc8a1c5d00b0d00f9e74100355ed9780af058e",
    "de": "988746f69fa3c2374e9893dbee0c2735d549f19a1292fcccc044bc00b9d7c6d9",
    "de_BW_2022": "608e766b8acc965634797c59bde78d07f9fb9c3222d98c2b12b11982f8e81d54",
    "de_bb_2023": "330d6503a95df42d549a98d647a2efb7bf83426bdac0fd273cc46f5a98a18cdf",
    "de_ls_2021": "7129a0350e63880a29dd979627fa0538a184e53f5716fb2933ed57d7df5adb72",
    "de_nrw_2021": "5c55c6bba37e3bc851a19be84c7d4407546ef7de9c8d301becab69fe2182eaed",
    "dk_2019": "c97460c295330022de4d06ca998949f10d3361cef9996f1a9b23210543989213",
    "ee_2021": "6d389c9ed65c4b3968be46f1daf23e99d309579b59d880457b10303bb4c11c8a",
    "es_2023": "911c639e1f753b70b95a98fca6f3a46377c1d3a8d8b0e50619693cd0b07e1a04",
    "es_ne_2021": "b33b52448a8bc9802a465c456631b04da305a82701309f3d241c8cb584e21088",
    "fi_2020": "3f940335ab5117038af1a73a01a2e1a6c5d5c29951fcca4433a8c5588904d113",
    "fr_2018": "3bad5f442691c7e06051727cb21560e583edbb347e197da273b8d0a7840c289d",
    "fr_other_years": "8dfa01e9ab0195705e598db7b2ab14a13cdd5cf81983cd124e074d7951f7eb81",
    "hr_2020": "fc69880ecc96ea36759df9cb41168391c8355cf1044c2e9f3bbcdaa6816ed975",
    "ie_2023": "b021e0f05fb47697668a9fc1838f7c26212b80d13c22f3118f090cdb327b500b",
    "lt_2021": "2546ff335744fc3f39f642380b79ff4cd10b5993d2ca4cd238049a394d2127cb",
    "lv_2021": "73d35c0f3f4ad708a9454c26bc10787ae44e493567decc8687db02b4ac06743c",
    "nl_2020": "f9cfab42a901e78b68eda34532a73e8dc8766ef8c8dd05e85104c95fb24ba837",
    "nl_other_years": "bf4f8230dab57711217dccd14392facc2381ea7f0fe804f650a4d43d4589c68a",
    "pt_2021": "61eb0d77ddaad94f301c27742938fac98e015c26e4389f3780760565e2a67b97",
    "ro_no_year": "c949492183038ab31035f36b2a0812d41e3691f9f724d986d04d600ab795a11c",
    "se_2021": "2e0320c047d3eb1c2fe244a2fae3146588a6e41e8d98b02f3eaca55cf58dd929",
    "si_2021": "0d936b2a4280181c9ed1d30bc88db105af303b8a6567ce4679c38c71ee3169fc",
    "sk_2021": "cafa85325bb3b0fa1e7afac2307f5f0d50e83bceacc61f6f93449495de187748",
}


@dataclass(frozen=True)
class HcatPlacement:
    """Where an HCAT code lands in the target taxonomy (``level`` -1: unmapped)."""

    level: int
    index: int
    exact: bool


def _ancestors(code: str) -> list[str]:
    out = [code]
    while (parent := hcat_parent(out[-1])) is not None:
        out.append(parent)
    return out


def _common_ancestor(codes: list[str]) -> str | None:
    """The deepest HCAT code that is an ancestor-or-self of every code in ``codes``."""
    chains = [_ancestors(c)[::-1] for c in codes]
    common = None
    for level in zip(*chains, strict=False):
        if len(set(level)) != 1:
            break
        common = level[0]
    return common


def hcat_to_taxonomy(
    target: Taxonomy, leaf_codes: Mapping[str, str], hcat: Taxonomy | None = None
) -> Callable[[str], HcatPlacement]:
    """A function ``code -> HcatPlacement`` placing HCAT codes in ``target``.

    ``leaf_codes`` maps each finest-level class name of ``target`` to its HCAT code (for
    H2Crop: :func:`cropscope.taxonomy.sources.h2crop_hcat_codes`). Every target node stands
    for an HCAT concept: a leaf for its code; an inner node for the HCAT class of the same
    name when ``hcat`` has one (H2Crop names its nodes after HCAT classes), else for the
    deepest common HCAT ancestor of its leaves. A code lands on the deepest target node whose
    concept is the code itself or one of its HCAT ancestors; never on a node narrower than
    the code (spring wheat does not become winter wheat).
    """
    last = target.n_levels - 1
    table = target.ancestor_table()
    by_name = {} if hcat is None else {n.name: n.code for n in hcat.nodes()}
    leaf_code = {target.index(leaf, last): str(code).strip() for leaf, code in leaf_codes.items()}
    missing = [target.classes(last)[i] for i in range(target.n_classes(last)) if i not in leaf_code]
    if missing:
        raise DataError(f"no HCAT code for the target classes {missing[:5]}")
    # concept code -> deepest (level, index) standing for it
    concept: dict[str, tuple[int, int]] = {}
    for k in range(target.n_levels):
        for i, name in enumerate(target.classes(k)):
            code: str | None
            if k == last:
                code = leaf_code[i]
            elif name in by_name:
                code = by_name[name]
            else:
                leaves = np.flatnonzero(table[:, k] == i)
                code = _common_ancestor([leaf_code[int(j)] for j in leaves])
            if code is not None:
                concept[code] = (k, i)  # finer levels overwrite coarser ones
    cache: dict[str, HcatPlacement] = {}

    def place(code: str) -> HcatPlacement:
        code = str(code).strip()
        if code not in cache:
            result = HcatPlacement(-1, -1, False)
            try:
                chain = _ancestors(code)
            except DataError:
                chain = []
            for step in chain:  # from the code itself up to the HCAT root
                if step in concept:
                    k, i = concept[step]
                    result = HcatPlacement(k, i, step == code and k == last)
                    break
            cache[code] = result
        return cache[code]

    return place


def read_country_table(name_or_path: str | Path, root: str | Path | None = None,
                       download: bool = True) -> pd.DataFrame:
    """A EuroCrops country table (name such as ``fr_2018`` or a CSV path) with the columns
    ``original_code`` (may be absent), ``original_name``, ``HCAT3_code``, ``HCAT3_name``."""
    path = Path(name_or_path)
    if not path.is_file():
        name = str(name_or_path)
        if name not in COUNTRY_TABLES:
            raise DataError(
                f"no country table {name!r}; EuroCrops tables: {', '.join(COUNTRY_TABLES)}"
            )
        rel = f"eurocrops_hcat/csvs/country_mappings/{name}.csv"
        rf = RemoteFile(rel, f"{_EUROCROPS}/csvs/country_mappings/{name}.csv",
                        COUNTRY_TABLES[name])
        path = locate_files(name, [rf], root, download) / rel
    from cropscope.io import MAX_USER_FILE_BYTES

    if path.stat().st_size > 16 * MAX_USER_FILE_BYTES:
        raise DataError(f"{path} is too large to be a country table")
    try:
        df = pd.read_csv(path, dtype=str)
    except (ValueError, OSError) as exc:  # pandas' parser errors and bad encodings
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"cannot read country table {path}: {first}") from None
    if "HCAT3_code" not in df.columns:
        raise DataError(f"{path} has no HCAT3_code column; columns: {list(df.columns)}")
    return df


@dataclass
class CrosswalkResult:
    """One row per national code: its HCAT3 code, status and the target class per level."""

    table: pd.DataFrame
    target: Taxonomy
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        by_level = self.table[self.table.status != "unmapped"]["target_level"].value_counts()
        return {
            "target": self.target.name,
            "rows": len(self.table),
            **self.counts,
            "mapped_by_level": {str(k): int(v) for k, v in by_level.items()},
            "unmapped_codes": self.table.loc[
                self.table.status == "unmapped", "source"
            ].tolist(),
        }

    def write_csv(self, path: str | Path) -> Path:
        """The row-by-row mapping as CSV (written atomically)."""
        with atomic_path(path) as tmp:
            self.table.to_csv(tmp, index=False)
        return Path(path)

    def describe(self, source: str, shown: int = 20) -> str:
        """Counts in a few lines (what ``cropscope taxonomy crosswalk`` prints); ``source``:
        the legend's name, ``shown``: how many unmapped codes to list."""
        summary = self.to_dict()
        c = self.counts
        lines = [f"{source} -> {self.target.name}: {summary['rows']} codes; exact "
                 f"{c['exact']}, broader {c['broader']}, unmapped {c['unmapped']}"]
        for level, n in sorted(summary["mapped_by_level"].items()):
            lines.append(f"  mapped to {level}: {n}")
        unmapped = summary["unmapped_codes"]
        if unmapped:
            lines.append(f"  unmapped: {', '.join(map(str, unmapped[:shown]))}"
                         + (" ..." if len(unmapped) > shown else ""))
        return "\n".join(lines)


def crosswalk_country(
    country: str | Path | pd.DataFrame,
    target: Taxonomy,
    leaf_codes: Mapping[str, str],
    hcat: Taxonomy | None = None,
) -> CrosswalkResult:
    """Map a national legend through HCAT3 to ``target``.

    Status per row: ``exact`` (the code of a finest-level target class), ``broader`` (a
    target class broader than the code covers it, on the level given in ``target_level``;
    finer levels stay empty) or ``unmapped`` (no HCAT3 code, or no target class covers it).
    ``hcat`` (the HCAT3 taxonomy) names the target's inner nodes' concepts (see
    :func:`hcat_to_taxonomy`); codes absent from it are flagged in ``in_hcat``.
    """
    df = country if isinstance(country, pd.DataFrame) else read_country_table(country)
    place = hcat_to_taxonomy(target, leaf_codes, hcat)
    known = None
    if hcat is not None:
        known = {n.code for n in hcat.nodes()}
    source_col = "original_code" if "original_code" in df.columns else "original_name"
    rows = []
    for rec in df.to_dict("records"):
        code = rec.get("HCAT3_code")
        code = "" if code is None or (isinstance(code, float) and np.isnan(code)) else str(code)
        p = place(code) if code else HcatPlacement(-1, -1, False)
        row: dict[str, Any] = {
            "source": rec.get(source_col),
            "source_name": rec.get("original_name"),
            "HCAT3_code": code or None,
            "HCAT3_name": rec.get("HCAT3_name"),
            "status": "unmapped" if p.level < 0 else ("exact" if p.exact else "broader"),
            "target_level": None if p.level < 0 else target.levels[p.level],
        }
        if known is not None:
            row["in_hcat"] = code in known
        path = [] if p.level < 0 else target.path(target.classes(p.level)[p.index], p.level)
        for k, level in enumerate(target.levels):
            row[level] = path[k] if k < len(path) else None
        rows.append(row)
    table = pd.DataFrame(rows)
    counts = {
        "exact": int((table.status == "exact").sum()),
        "broader": int((table.status == "broader").sum()),
        "unmapped": int((table.status == "unmapped").sum()),
    }
    counts["mapped"] = counts["exact"] + counts["broader"]
    if known is not None:
        counts["not_in_hcat"] = int((~table.in_hcat & table.HCAT3_code.notna()).sum())
    return CrosswalkResult(table, target, counts)


def crosswalk_legend(country: str | Path, target: str = "h2crop") -> CrosswalkResult:
    """:func:`crosswalk_country` into a shipped target taxonomy by name: a EuroCrops country
    table name (e.g. ``fr_2018``) or a CSV with an ``HCAT3_code`` column, mapped through
    HCAT3 to the target's levels. Only ``h2crop`` carries HCAT codes for its classes."""
    if target != "h2crop":
        raise DataError(f"no HCAT codes are known for the classes of {target!r}; use h2crop")
    return crosswalk_country(country, load_h2crop(), h2crop_hcat_codes(), hcat=load_hcat())
