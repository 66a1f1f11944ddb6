"""No import cycle in pdp/: each module's pdp imports, resolved to modules, form a DAG."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements that run on import: the module's own, and those under its if/try blocks
    (``if TYPE_CHECKING:`` included); not function bodies, where an import waits for a call."""
    found: list[ast.stmt] = []
    for node in body:
        found.append(node)
        if isinstance(node, ast.If | ast.Try):
            found += module_level([*node.body, *node.orelse, *getattr(node, "finalbody", [])])
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in (ROOT / "pdp").rglob("*.py") if "v1" not in p.parts}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets: set[str] = set()
        for node in module_level(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        graph[name] = {t for t in targets if t in files and t != name}
        # "from pdp.x import y": an edge to pdp.x.y when it is a module, else to pdp.x
        for t in list(graph[name]):
            if any(s.startswith(t + ".") and s in graph[name] for s in files):
                graph[name].discard(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_pdp_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 30 and "pdp.grpc.app" in graph
    assert find_cycle(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_telemetry_does_not_import_the_pipeline() -> None:
    assert "pdp.decide" not in import_graph()["pdp.telemetry"]


FACES = ("pdp.grpc", "pdp.cli", "pdp.server", "pdp.__main__")


def is_in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_what_may_import_what_as_docs_architecture_says() -> None:
    graph = import_graph()
    assert graph["pdp.errors"] == set() and graph["pdp.encoding"] == set()
    assert graph["pdp.decision"] <= {"pdp.verdict"}
    ledger_may = ("pdp.errors", "pdp.encoding", "pdp.keys", "pdp.records", "pdp.schema", "pdp.ledger")
    for module, imports in graph.items():
        if is_in(module, ("pdp.ledger",)):
            assert all(is_in(i, ledger_may) for i in imports), (module, imports)
        if not is_in(module, FACES):
            assert not any(is_in(i, FACES) for i in imports), (module, imports)
        if is_in(module, ("pdp.grpc", "pdp.server")):
            assert not any(is_in(i, ("pdp.cli",)) for i in imports), (module, imports)


def test_the_mcp_proxy_uses_only_the_public_client_api() -> None:
    """pdp.pep is a PEP like any other: the client, the error tree and the wire types, no server internals."""
    public = {"pdp.client", "pdp.errors"}
    for name, targets in import_graph().items():
        if name.startswith("pdp.pep"):
            inside = {t for t in targets if not t.startswith(("pdp.pep", "pdp.v1"))}
            assert inside <= public, f"{name} imports {sorted(inside - public)}"
