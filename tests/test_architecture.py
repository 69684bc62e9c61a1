"""The import graph of cropscope has no cycles: not between modules, and not between the
sibling subpackages/modules of any package (imports of a subpackage's descendants count as
imports of the subpackage).

The graph is grimp's (the one import-linter checks, ``make test`` runs ``lint-imports``):
imports inside functions and under ``TYPE_CHECKING`` count like the others, so a cycle
cannot hide in a deferred import.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import pytest

grimp = pytest.importorskip("grimp")

ROOT = "cropscope"


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(ROOT, cache_dir=None)


def _cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """One concrete cycle per strongly connected component with more than one node (or a
    node importing itself), via Tarjan's algorithm without recursion."""
    nodes = sorted(set(edges) | {b for targets in edges.values() for b in targets})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                if len(members) > 1 or node in edges.get(node, ()):
                    components.append(sorted(members))
    return [_one_cycle(members, edges) for members in components]


def _one_cycle(members: Iterable[str], edges: Mapping[str, set[str]]) -> list[str]:
    """A shortest path from the first member back to itself inside the component."""
    inside = set(members)
    start = min(inside)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(edges.get(node, set()) & inside):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    return sorted(inside)  # pragma: no cover - a component always holds a cycle


def _module_edges(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if imported == ROOT or imported.startswith(f"{ROOT}."):
                edges[module].add(imported)
    return edges


def _format(cycles: list[list[str]]) -> str:
    return "\n".join("  " + " -> ".join(cycle) for cycle in cycles)


def test_no_module_import_cycles(graph: grimp.ImportGraph) -> None:
    cycles = _cycles(_module_edges(graph))
    assert not cycles, f"import cycles between modules:\n{_format(cycles)}"


def test_no_import_cycles_between_sibling_packages(graph: grimp.ImportGraph) -> None:
    edges = _module_edges(graph)
    packages = sorted(m for m in graph.modules if graph.find_children(m))
    found: list[list[str]] = []
    for package in packages:
        children = graph.find_children(package)

        def child_of(module: str, package: str = package, children: set[str] = children) -> str:
            if not module.startswith(f"{package}."):
                return ""
            child = f"{package}.{module[len(package) + 1:].split('.')[0]}"
            return child if child in children else ""

        sibling_edges: dict[str, set[str]] = defaultdict(set)
        for importer, imported in ((a, b) for a, targets in edges.items() for b in targets):
            a, b = child_of(importer), child_of(imported)
            if a and b and a != b:
                sibling_edges[a].add(b)
        found += _cycles(sibling_edges)
    assert not found, f"import cycles between sibling packages/modules:\n{_format(found)}"


def test_cycle_finder_reports_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert sorted(_cycles(edges)) == [["a", "b", "c", "a"], ["e", "e"]]
