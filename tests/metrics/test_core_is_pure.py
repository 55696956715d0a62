"""The metric engine is a pure core: no command line, no pandas, no Kafka/HTTP/Parquet I/O,
no import cycle (not even a typing-only one) and no import hidden inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mlwatcher" / "metrics"
FORBIDDEN = {
    "click", "pandas", "pyarrow", "confluent_kafka", "faust", "aiokafka", "requests",
    "matplotlib", "sklearn", "socket", "urllib", "http",
}  # fmt: skip


def _imports(path: Path) -> tuple[set[str], list[str]]:
    """Modules imported anywhere in ``path``, and the ones imported inside a function."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    nested: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found.update(names)
        if node.col_offset > 0 and not _under_type_checking(tree, node):
            nested.extend(names)
    return found, nested


def _under_type_checking(tree: ast.Module, target: ast.AST) -> bool:
    for node in tree.body:
        if (
            isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test)
            and any(child is target for child in ast.walk(node))
        ):
            return True
    return False


def _module_graph() -> dict[str, set[str]]:
    modules = {
        f"mlwatcher.metrics.{p.stem}": p for p in PACKAGE.glob("*.py") if p.stem != "__init__"
    }
    graph = {}
    for name, path in modules.items():
        found, _ = _imports(path)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_command_line_pandas_or_io_library() -> None:
    for path in PACKAGE.glob("*.py"):
        found, _ = _imports(path)
        assert not {m.split(".")[0] for m in found} & FORBIDDEN, path.name


def test_no_import_hidden_in_a_function() -> None:
    for path in PACKAGE.glob("*.py"):
        assert _imports(path)[1] == [], path.name


def test_no_import_cycle_between_the_engine_modules() -> None:
    graph = _module_graph()
    assert "mlwatcher.metrics.compute" in graph["mlwatcher.metrics.state"]  # the graph is real
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        assert node not in visiting, " -> ".join([*visiting[visiting.index(node) :], node])
        if node in done:
            return
        visiting.append(node)
        for successor in sorted(graph[node]):
            visit(successor)
        visiting.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)
