"""The package is layered: imports run downward only, and no module imports itself in a circle.

The import graph comes from grimp (the library behind import-linter), type-checking-only
imports included, so a ``TYPE_CHECKING`` block cannot hide an upward import either.
"""

from __future__ import annotations

from pathlib import Path

import grimp
import networkx as nx
import pytest

import decent

LAYERS: tuple[tuple[str, ...], ...] = (
    ("decent.cli",),
    ("decent.studies",),
    ("decent.run", "decent.report", "decent.parallel"),
    ("decent.config", "decent.results"),
    ("decent.engine",),
    ("decent.algorithms", "decent.metrics"),
    ("decent.comm", "decent.tasks"),
    ("decent.topology",),
    (
        "decent._rng",
        "decent._stream",
        "decent._stack",
        "decent._types",
        "decent._names",
        "decent._params",
        "decent._elementwise",
    ),
    ("decent._threads",),
)
"""Top to bottom; packages on one line are independent of each other."""

BUILD_OUTPUT_NAMES = {"dist", "build", "out", "target", "site", "_build"}


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    g = grimp.build_graph("decent", exclude_type_checking_imports=False)
    out = nx.DiGraph()
    for module in g.modules:
        out.add_node(module)
        for imported in g.find_modules_directly_imported_by(module):
            out.add_edge(module, imported)
    return out


def _layer(module: str) -> tuple[int, str] | None:
    for level, packages in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + "."):
                return level, package
    return None


def test_every_package_has_a_layer(graph: nx.DiGraph) -> None:
    top = {m.split(".")[1] for m in graph.nodes if m.count(".") >= 1}
    placed = {p.split(".")[1] for layer in LAYERS for p in layer}
    assert top <= placed, f"packages without a layer: {sorted(top - placed)}"


def test_imports_run_downward_only(graph: nx.DiGraph) -> None:
    bad = []
    for a, b in graph.edges:
        la, lb = _layer(a), _layer(b)
        if la is None or lb is None or la[1] == lb[1]:
            continue
        if lb[0] <= la[0]:  # upward, or sideways between independent packages
            bad.append(f"{a} -> {b}")
    assert not bad, "imports against the layers:\n" + "\n".join(sorted(bad))


def test_no_import_cycles(graph: nx.DiGraph) -> None:
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_the_checks_can_fail() -> None:
    """The two checks above see a planted upward import and a planted cycle."""
    g = nx.DiGraph([("decent.engine.loop", "decent.run.single"), ("a", "b"), ("b", "a")])
    assert _layer("decent.run.single")[0] < _layer("decent.engine.loop")[0]  # type: ignore[index]
    assert any(len(c) > 1 for c in nx.strongly_connected_components(g))


def test_no_folder_has_a_build_output_name() -> None:
    root = Path(decent.__file__).parent
    tests = Path(__file__).parent
    found = [
        str(p)
        for base in (root, tests)
        for p in base.rglob("*")
        if p.is_dir() and p.name in BUILD_OUTPUT_NAMES
    ]
    assert not found, f"linters and test runners skip these by default: {found}"
