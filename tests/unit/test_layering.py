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


# ---- the Kafka layer ----------------------------------------------------------------------------------
KAFKA_LAYER = ROOT / "kafka"
#: The confluent-kafka classes that open connections: only processor/kafka/ constructs them.
CLIENT_CLASSES = {"Producer", "Consumer", "AdminClient"}
#: (module, name) pairs still waiting for their owner's change, with the reason. Keep this empty.
PENDING_CLIENTS: set[tuple[str, str]] = set()
PENDING_TOPIC_LITERALS: set[tuple[str, str]] = set()


def _outside_the_kafka_layer() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if KAFKA_LAYER not in p.parents)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (imports there exist for annotations, never at run time)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                inside.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return inside


def client_imports(source: str) -> set[str]:
    """The confluent-kafka client classes ``source`` can construct: imported by name from any
    ``confluent_kafka`` module outside ``if TYPE_CHECKING:``, or reached as ``confluent_kafka.<Class>``."""
    tree = ast.parse(source)
    typing_only = _type_checking_only(tree)
    modules = {  # the names `import confluent_kafka [as x]` binds
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.split(".")[0] == "confluent_kafka"
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "confluent_kafka":
            if id(node) not in typing_only:
                names = {alias.name for alias in node.names}
                found |= CLIENT_CLASSES if "*" in names else names & CLIENT_CLASSES
        elif isinstance(node, ast.Attribute) and node.attr in CLIENT_CLASSES:
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                found.add(node.attr)
    return found


def test_only_the_kafka_layer_builds_confluent_kafka_clients() -> None:
    found = {
        (str(path.relative_to(ROOT)), name)
        for path in _outside_the_kafka_layer()
        for name in client_imports(path.read_text("utf-8"))
    }
    assert found - PENDING_CLIENTS == set(), "use processor.kafka (AckedProducer, new_consumer, new_admin)"


def test_client_imports_are_found() -> None:
    assert client_imports("from confluent_kafka import KafkaError, Producer") == {"Producer"}
    assert client_imports("from confluent_kafka.admin import AdminClient as A") == {"AdminClient"}
    assert client_imports("import confluent_kafka\nc = confluent_kafka.Consumer({})") == {"Consumer"}
    assert client_imports("import confluent_kafka.admin as ka\nc = ka.AdminClient({})") == {"AdminClient"}
    assert client_imports("import other\nc = other.Producer()") == set()
    assert (
        client_imports("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from confluent_kafka import Consumer")
        == set()
    )


def _topic_names() -> set[str]:
    from topics import Topic

    return {t.value for t in Topic}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of string statements: module, class and function docstrings and attribute docstrings."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }


def topic_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string literal in ``source`` that is a topic's base name, or starts with one
    followed by ``/`` (a ``"<topic>/<partition>"`` key). f-string pieces count (``f"{prefix}meters"``);
    docstrings and comments do not, nor do dict keys (``{"meters": n}`` is a field of a JSON answer)."""
    names = _topic_names()
    tree = ast.parse(source)
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            skip.update(id(key) for key in node.keys if key is not None)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
            if text.split("/", 1)[0] in names:
                found.append((node.lineno, text))
    return sorted(found)


def test_topic_names_come_from_the_catalog() -> None:
    """Topic base names are written once, in ``topics.catalog`` (``topics.Topic``); everywhere else a typo
    would be a topic nobody reads."""
    found = {
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in _outside_the_kafka_layer()
        for line, text in topic_literals(path.read_text("utf-8"))
        if (str(path.relative_to(ROOT)), text) not in PENDING_TOPIC_LITERALS
    }
    assert found == set(), "use topics.Topic / topics.topic_name"


def test_topic_literals_are_found() -> None:
    source = 'x = prefix + "meters"\ny = f"{p}meter-events"\nz = "meter-event-errors/3"\n'
    assert topic_literals(source) == [(1, "meters"), (2, "meter-events"), (3, "meter-event-errors/3")]
    assert topic_literals('"""reads meter-events"""\nd = {"meters": 1}\n# "meters"\nm = "meters.list"\n') == []


# ---- tests/ and bench/ on the Kafka layer ---------------------------------------------------------------
REPO = ROOT.parent
#: Files of tests/ and bench/ that build a raw confluent-kafka client on purpose; the file says why too, in
#: a comment beside the client. Everything else produces through AckedProducer (tests.pipeline.producer),
#: reads through new_consumer and administers through processor.kafka.admin.
RAW_CLIENT_EXCEPTIONS = {
    "tests/e2e/test_up.py": "runs the README's reader snippet (a raw Consumer) the way a user copies it",
}
#: Files owned by another change while this one lands: move them onto the layer with that change.
PENDING_TEST_CLIENTS: dict[str, str] = {}
#: Shared helpers and benchmarks: no topic's base name written as a string (``topics.Topic`` instead).
#: memory_bench's ``"meters"`` is the label of the Redis meters hash in its report, not the topic.
TOPIC_CLEAN = ["tests/pipeline.py", "tests/fixtures.py", "tests/helpers.py", "tests/conftest.py", "bench"]
TOPIC_LITERAL_EXCEPTIONS = {("bench/memory_bench.py", "meters")}


def _repo_files(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in ([REPO / top] if top.endswith(".py") else (REPO / top).rglob("*.py")))


def test_tests_and_benchmarks_build_clients_through_the_kafka_layer() -> None:
    found = {
        str(path.relative_to(REPO)): names
        for path in _repo_files("tests", "bench")
        if (names := client_imports(path.read_text("utf-8")))
    }
    allowed = RAW_CLIENT_EXCEPTIONS.keys() | PENDING_TEST_CLIENTS.keys()
    assert {rel: names for rel, names in found.items() if rel not in allowed} == {}, (
        "produce through processor.kafka.AckedProducer (tests.pipeline.producer), read through new_consumer, "
        "administer through processor.kafka.admin; a deliberate raw client goes in RAW_CLIENT_EXCEPTIONS"
    )
    assert allowed <= found.keys(), "an exception no longer needed: remove it from the list"


def test_test_helpers_and_benchmarks_name_topics_through_the_catalog() -> None:
    found = {
        f"{path.relative_to(REPO)}:{line}: {text!r}"
        for path in _repo_files(*TOPIC_CLEAN)
        for line, text in topic_literals(path.read_text("utf-8"))
        if (str(path.relative_to(REPO)), text) not in TOPIC_LITERAL_EXCEPTIONS
    }
    assert found == set(), "use topics.Topic / topics.topic_name"
