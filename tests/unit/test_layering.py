"""The packages of ``processor`` depend on each other one way (README, "Architecture"): the import graph
between them, read from the source, has no cycle, and the foundation modules import no component."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "processor"
#: Modules every layer may use; they use none of the components.
FOUNDATION = {"config", "errors", "limits", "windows", "logs", "retry"}
COMPONENTS = {"aggregator", "sink", "gateway", "emulator", "ops", "notify", "cli"}


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        source = path.relative_to(ROOT).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("processor."):
                target = node.module.split(".")[1]
                if target != source:
                    graph[source].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_graph_has_no_cycle() -> None:
    graph = package_graph()
    assert len(graph) > 10  # the scan found the packages
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_foundation_imports_no_component() -> None:
    graph = package_graph()
    assert {name: graph[name] & COMPONENTS for name in FOUNDATION if graph[name] & COMPONENTS} == {}


def test_a_cycle_is_found() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
