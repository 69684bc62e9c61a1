"""The :class:`Taxonomy`: a tree of crop classes with a code and a name per node, in levels.

Level 0 is the coarsest (e.g. "arable crops"), the last level the finest ("winter common soft
wheat"). Every node of level ``k > 0`` has exactly one parent in level ``k - 1``. Codes and
names are unique *within* a level (H2Crop repeats a name such as
``pasture_meadow_grassland_grass`` on every level: those are four nodes, one per level).

A tree may be *ragged* (a leaf above the finest level, as in EuroCrops HCAT); models and
level-wise metrics need a *complete* tree, where every leaf is on the finest level:
:meth:`Taxonomy.complete` pads a shallow leaf down by repeating it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cropscope.errors import DataError

__all__ = ["Node", "Taxonomy"]


@dataclass(frozen=True)
class Node:
    """One class of a taxonomy: its level, code, name and the code of its parent."""

    level: int
    code: str
    name: str
    parent: str | None = None


class Taxonomy:
    """A validated tree of classes organised in levels (coarse to fine).

    Build one from :class:`Node` objects, with :meth:`from_paths`, or with the readers in
    :mod:`cropscope.taxonomy.sources`. The constructor validates: strict tree (one parent
    per node, in the level above), unique codes and names within each level, at least one
    class per level.
    """

    def __init__(self, nodes: Iterable[Node], levels: Sequence[str] | None = None,
                 name: str = "") -> None:
        nodes = list(nodes)
        if not nodes:
            raise DataError("a taxonomy needs at least one class")
        depth = max(n.level for n in nodes) + 1
        if min(n.level for n in nodes) < 0:
            raise DataError("taxonomy levels start at 0")
        self.levels: list[str] = (
            [f"level{i + 1}" for i in range(depth)] if levels is None else [str(v) for v in levels]
        )
        if len(self.levels) != depth:
            raise DataError(f"{len(self.levels)} level names for a tree of depth {depth}")
        if len(set(self.levels)) != depth:
            raise DataError(f"duplicate level names: {self.levels}")
        self.name = name
        per_level: list[list[Node]] = [[] for _ in range(depth)]
        for n in nodes:
            per_level[n.level].append(n)
        self._codes: list[list[str]] = []
        self._names: list[list[str]] = []
        self._parent: list[np.ndarray] = []
        errors: list[str] = []
        for k, level_nodes in enumerate(per_level):
            if not level_nodes:
                errors.append(f"level {self.levels[k]!r} has no class")
                self._codes.append([])
                self._names.append([])
                self._parent.append(np.zeros(0, dtype=np.int64))
                continue
            codes = [n.code for n in level_nodes]
            names = [n.name for n in level_nodes]
            for what, values in (("code", codes), ("name", names)):
                dups = sorted(v for v, n in Counter(values).items() if n > 1)
                if dups:
                    errors.append(
                        f"duplicate {what}s on level {self.levels[k]!r}: {dups[:5]} "
                        "(a node may have only one parent)"
                    )
            parents = np.full(len(level_nodes), -1, dtype=np.int64)
            if k > 0:
                lookup = {c: i for i, c in enumerate(self._codes[k - 1])}
                for i, n in enumerate(level_nodes):
                    if n.parent is None or n.parent not in lookup:
                        errors.append(
                            f"{n.name!r} ({n.code}) on level {self.levels[k]!r} has no parent "
                            f"on level {self.levels[k - 1]!r} (parent code {n.parent!r})"
                        )
                    else:
                        parents[i] = lookup[n.parent]
            elif any(n.parent is not None for n in level_nodes):
                bad = [n.name for n in level_nodes if n.parent is not None][:5]
                errors.append(f"top-level classes cannot have a parent: {bad}")
            self._codes.append(codes)
            self._names.append(names)
            self._parent.append(parents)
        if errors:
            more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
            raise DataError(f"invalid taxonomy {name!r}: " + "; ".join(errors[:5]) + more)
        self._code_index = [{c: i for i, c in enumerate(cs)} for cs in self._codes]
        self._name_index = [{c: i for i, c in enumerate(ns)} for ns in self._names]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_paths(cls, paths: Iterable[Sequence[str]], levels: Sequence[str] | None = None,
                   name: str = "") -> Taxonomy:
        """From root-to-leaf name paths (``[("crop", "cereal", "wheat"), ...]``); codes are
        the names. Paths may be shorter than the deepest one (a ragged tree)."""
        nodes: dict[tuple[int, str], Node] = {}
        for path in paths:
            parent = None
            for k, label in enumerate(path):
                label = str(label)
                node = Node(k, label, label, parent)
                old = nodes.setdefault((k, label), node)
                if old.parent != parent:
                    raise DataError(
                        f"invalid taxonomy {name!r}: {label!r} on level {k + 1} has two "
                        f"parents, {old.parent!r} and {parent!r}"
                    )
                parent = label
        return cls(nodes.values(), levels, name)

    @classmethod
    def from_code_prefixes(cls, codes: Iterable[str], digits: Sequence[int],
                           name: str = "prefixes") -> Taxonomy:
        """From class codes whose leading characters name their groups, as WorldCereal's
        EWOC codes do (``1101060000``: ``11`` temporary crops, ``1101`` cereals, ...).

        Level ``k`` holds the first ``digits[k]`` characters of the codes; the codes
        themselves are the finest level (named ``code``; the others ``prefix2``,
        ``prefix4``, ...). ``digits`` must increase and be shorter than every code.
        """
        codes = sorted({str(c) for c in codes})
        cuts = [int(d) for d in digits]
        if not codes:
            raise DataError("a prefix taxonomy needs at least one class code")
        if not cuts or min(cuts) < 1 or any(b <= a for a, b in itertools.pairwise(cuts)):
            raise DataError(f"prefix lengths must be positive and increasing, got {cuts}")
        short = [c for c in codes if len(c) <= cuts[-1]]
        if short:
            raise DataError(f"{len(short)} class code(s) are not longer than the longest prefix "
                            f"({cuts[-1]} characters), e.g. {short[:3]}")  # fmt: skip
        paths = [[c[:d] for d in cuts] + [c] for c in codes]
        return cls.from_paths(paths, [f"prefix{d}" for d in cuts] + ["code"], name)

    # ------------------------------------------------------------------ structure
    @property
    def n_levels(self) -> int:
        return len(self.levels)

    def level_index(self, level: int | str) -> int:
        """Position of a level given by index (negative counts from the finest) or name."""
        if isinstance(level, str):
            if level not in self.levels:
                raise DataError(f"unknown level {level!r}; levels: {self.levels}")
            return self.levels.index(level)
        k = int(level)
        if k < 0:
            k += self.n_levels
        if not 0 <= k < self.n_levels:
            raise DataError(f"level {level} out of range for {self.n_levels} levels")
        return k

    def classes(self, level: int | str = -1) -> list[str]:
        """Class names of one level, in code order."""
        return list(self._names[self.level_index(level)])

    def codes(self, level: int | str = -1) -> list[str]:
        """Class codes of one level."""
        return list(self._codes[self.level_index(level)])

    def n_classes(self, level: int | str = -1) -> int:
        return len(self._names[self.level_index(level)])

    @property
    def sizes(self) -> list[int]:
        """Number of classes per level, coarse to fine."""
        return [len(n) for n in self._names]

    def nodes(self) -> list[Node]:
        """Every node, level by level."""
        out = []
        for k in range(self.n_levels):
            for i, (c, n) in enumerate(zip(self._codes[k], self._names[k], strict=True)):
                p = None if k == 0 else self._codes[k - 1][self._parent[k][i]]
                out.append(Node(k, c, n, p))
        return out

    def parents(self, level: int | str) -> np.ndarray:
        """For each class of ``level``, the index of its parent in the level above (-1 on
        the top level)."""
        return self._parent[self.level_index(level)].copy()

    def children(self, level: int | str, name: str) -> list[str]:
        """Names of the children of class ``name`` of ``level``."""
        k = self.level_index(level)
        i = self.index(name, k)
        if k + 1 >= self.n_levels:
            return []
        return [self._names[k + 1][j] for j in np.flatnonzero(self._parent[k + 1] == i)]

    def is_leaf(self, level: int | str) -> np.ndarray:
        """Boolean per class of ``level``: True when it has no child."""
        k = self.level_index(level)
        leaf = np.ones(self.n_classes(k), dtype=bool)
        if k + 1 < self.n_levels:
            leaf[np.unique(self._parent[k + 1])] = False
        return leaf

    @property
    def is_complete(self) -> bool:
        """True when every leaf is on the finest level."""
        return all(not self.is_leaf(k).any() for k in range(self.n_levels - 1))

    def index(self, name_or_code: str, level: int | str = -1) -> int:
        """Position of a class (by name, else by code) within its level."""
        k = self.level_index(level)
        key = str(name_or_code)
        if key in self._name_index[k]:
            return self._name_index[k][key]
        if key in self._code_index[k]:
            return self._code_index[k][key]
        raise DataError(f"no class {key!r} on level {self.levels[k]!r}")

    def find(self, name_or_code: str) -> tuple[int, int]:
        """``(level, index)`` of a class given by name or code, searching from the finest
        level up (so a name repeated on several levels resolves to its finest node)."""
        key = str(name_or_code)
        for k in range(self.n_levels - 1, -1, -1):
            if key in self._name_index[k]:
                return k, self._name_index[k][key]
        for k in range(self.n_levels - 1, -1, -1):
            if key in self._code_index[k]:
                return k, self._code_index[k][key]
        raise DataError(f"no class {key!r} in taxonomy {self.name!r}")

    def ancestor_table(self) -> np.ndarray:
        """``[K_fine, L]`` int: for each class of the finest level, its ancestor's index on
        every level (itself on the last)."""
        k_last = self.n_levels - 1
        table = np.empty((self.n_classes(k_last), self.n_levels), dtype=np.int64)
        table[:, k_last] = np.arange(self.n_classes(k_last))
        for k in range(k_last, 0, -1):
            table[:, k - 1] = self._parent[k][table[:, k]]
        return table

    def path(self, name: str, level: int | str = -1) -> list[str]:
        """Names from the top level down to class ``name`` of ``level``."""
        k = self.level_index(level)
        i = self.index(name, k)
        out = [self._names[k][i]]
        while k > 0:
            i = int(self._parent[k][i])
            k -= 1
            out.append(self._names[k][i])
        return out[::-1]

    # ------------------------------------------------------------------ roll-up
    def rollup_index(self, src: int | str, dst: int | str) -> np.ndarray:
        """For each class of level ``src``, the index of its ancestor on the coarser (or
        equal) level ``dst``."""
        s, d = self.level_index(src), self.level_index(dst)
        if d > s:
            raise DataError(
                f"cannot roll level {self.levels[s]!r} up to the finer level {self.levels[d]!r}"
            )
        idx = np.arange(self.n_classes(s))
        for k in range(s, d, -1):
            idx = self._parent[k][idx]
        return idx

    def rollup_matrix(self, src: int | str, dst: int | str) -> np.ndarray:
        """``[K_src, K_dst]`` 0/1 matrix: ``proba_src @ M`` sums children into parents."""
        idx = self.rollup_index(src, dst)
        m = np.zeros((idx.size, self.n_classes(dst)), dtype=np.float32)
        m[np.arange(idx.size), idx] = 1.0
        return m

    def rollup_labels(self, labels: np.ndarray, src: int | str, dst: int | str) -> np.ndarray:
        """Integer codes of level ``src`` mapped to level ``dst`` (``-1`` stays ``-1``)."""
        labels = np.asarray(labels, dtype=np.int64)
        idx = self.rollup_index(src, dst)
        out = np.full(labels.shape, -1, dtype=np.int64)
        ok = labels >= 0
        if ok.any() and labels[ok].max() >= idx.size:
            raise DataError(f"label code {labels[ok].max()} outside level {src!r}")
        out[ok] = idx[labels[ok]]
        return out

    def rollup_proba(self, proba: np.ndarray, src: int | str, dst: int | str) -> np.ndarray:
        """Class probabilities ``[N, K_src]`` summed into level ``dst`` ``[N, K_dst]``."""
        proba = np.asarray(proba)
        k = self.n_classes(src)
        if proba.ndim != 2 or proba.shape[1] != k:
            raise DataError(f"probabilities must be [N, {k}] for level {src!r}, got {proba.shape}")
        return proba @ self.rollup_matrix(src, dst).astype(proba.dtype, copy=False)

    def encode(self, labels: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Per-level codes ``[N, L]`` for labels given by name or code at *any* level.

        A label found on level ``k`` fills levels ``0..k`` (its ancestors) and leaves finer
        levels ``-1`` (unknown); missing labels (None, NaN, "") are ``-1`` everywhere.
        """
        out = np.full((len(labels), self.n_levels), -1, dtype=np.int64)
        cache: dict[str, tuple[int, int]] = {}
        unknown: set[str] = set()
        for r, lab in enumerate(labels):
            if lab is None or (isinstance(lab, float) and np.isnan(lab)) or str(lab) == "":
                continue
            key = str(lab)
            if key not in cache:
                try:
                    cache[key] = self.find(key)
                except DataError:
                    unknown.add(key)
                    continue
            k, i = cache[key]
            for level in range(k, -1, -1):
                out[r, level] = i
                if level:
                    i = int(self._parent[level][i])
        if unknown:
            raise DataError(
                f"{len(unknown)} label(s) not in taxonomy {self.name!r}: {sorted(unknown)[:5]}"
            )
        return out

    def check_consistent(self, level_labels: np.ndarray) -> np.ndarray:
        """Boolean ``[N]``: True where every known label's parent is the known label above."""
        y = np.asarray(level_labels, dtype=np.int64)
        if y.ndim != 2 or y.shape[1] != self.n_levels:
            raise DataError(f"level labels must be [N, {self.n_levels}], got {y.shape}")
        ok = np.ones(len(y), dtype=bool)
        for k in range(1, self.n_levels):
            both = (y[:, k] >= 0) & (y[:, k - 1] >= 0)
            parent = np.where(both, self._parent[k][np.maximum(y[:, k], 0)], -1)
            ok &= ~both | (parent == y[:, k - 1])
        return ok

    # ------------------------------------------------------------------ transforms
    def complete(self) -> Taxonomy:
        """A tree where every leaf is on the finest level: a leaf on level ``k`` is repeated
        (same name, same code) on every finer level. Unchanged when already complete."""
        if self.is_complete:
            return self
        nodes = self.nodes()
        for k in range(self.n_levels - 1):
            leaf = self.is_leaf(k)
            for i in np.flatnonzero(leaf):
                code, name = self._codes[k][i], self._names[k][i]
                for j in range(k + 1, self.n_levels):
                    nodes.append(Node(j, code, name, code))
        return Taxonomy(nodes, self.levels, self.name)

    def subtree(self, leaves: Sequence[str]) -> Taxonomy:
        """The part of the tree above the given finest-level classes (by name or code),
        keeping the level names; useful to restrict a large legend to the classes present."""
        k_last = self.n_levels - 1
        keep: list[set[int]] = [set() for _ in range(self.n_levels)]
        for leaf in leaves:
            i = self.index(leaf, k_last)
            for k in range(k_last, -1, -1):
                keep[k].add(i)
                if k:
                    i = int(self._parent[k][i])
        nodes = [
            n for n in self.nodes()
            if self._code_index[n.level][n.code] in keep[n.level]
        ]
        return Taxonomy(nodes, self.levels, self.name)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: name, level names and every node (level, code, name, parent)."""
        return {
            "name": self.name,
            "levels": list(self.levels),
            "nodes": [
                {"level": n.level, "code": n.code, "name": n.name, "parent": n.parent}
                for n in self.nodes()
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Taxonomy:
        try:
            nodes = [
                Node(int(n["level"]), str(n["code"]), str(n["name"]),
                     None if n.get("parent") is None else str(n["parent"]))
                for n in data["nodes"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed taxonomy description: {exc}") from None
        return cls(nodes, data.get("levels"), str(data.get("name", "")))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Taxonomy):
            return NotImplemented
        return self.levels == other.levels and self.nodes() == other.nodes()

    def __hash__(self) -> int:
        return hash((tuple(self.levels), tuple(self.nodes())))

    def __repr__(self) -> str:
        sizes = " -> ".join(str(s) for s in self.sizes)
        label = f"{self.name!r}, " if self.name else ""
        return f"Taxonomy({label}levels={self.levels}, classes {sizes})"

    def describe(self, shown: int = 8) -> str:
        """The tree in a few lines: the repr, then per level its class count and first
        ``shown`` class names (what ``cropscope taxonomy show`` prints)."""
        lines = [repr(self)]
        for k, level in enumerate(self.levels):
            names = self.classes(k)
            listed = ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")
            lines.append(f"  {level}: {len(names)} classes ({listed})")
        if not self.is_complete:
            lines.append("  (ragged: some leaves sit above the finest level)")
        return "\n".join(lines)
