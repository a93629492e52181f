"""The harness's import graph (parsed with `ast`): `bench/` reaches the methods only through the
registry and the contract (`methods.registry`, `methods.base`), and no two of its modules import
each other, directly or around a longer loop (function-level imports and `importlib.import_module`
of a literal name included)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTRACT = {"methods.registry", "methods.base"}
"""The methods' side of the contract: the only modules of methods/ that bench/ may import."""
METHOD_PACKAGES = ("methods", "baselines")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules that `path` imports anywhere (type-checking-only imports excluded)."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for statement in ast.walk(tree) if isinstance(statement, ast.If)
               and isinstance(statement.test, ast.Name) and statement.test.id == "TYPE_CHECKING"
               for node in ast.walk(statement)}
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        elif literal := imported_by_name(node):
            names = [literal]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def imported_by_name(node: ast.AST) -> str | None:
    """The module of `importlib.import_module("name")` (or a bare `import_module("name")`), else None."""
    if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
        return None
    function = node.func
    called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
    return node.args[0].value if called == "import_module" and isinstance(node.args[0].value, str) else None


def project_graph() -> dict[str, set[str]]:
    paths = [path for package in ("bench", *METHOD_PACKAGES) for path in (REPO_ROOT / package).rglob("*.py")]
    known = {module_name(path) for path in paths}
    return {module_name(path): imports_of(path, known) - {module_name(path)} for path in paths}


def test_bench_imports_no_method_module():
    graph = project_graph()
    offending = {module: sorted(target for target in targets if target.startswith(METHOD_PACKAGES)
                                and target not in CONTRACT and target not in METHOD_PACKAGES)
                 for module, targets in graph.items() if module.startswith("bench")}
    assert {module: targets for module, targets in offending.items() if targets} == {}


PLUGIN_SCAN = {"methods.registry": {"methods.base"}}
"""Imports the graph cannot read: `load_plugins` imports every method module by a computed name
(`importlib.import_module(f"{package}.{module}")`), and each of them imports the contract, `methods.base`."""


def harness_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles among bench/ and the contract modules."""
    nodes = {module for module in graph if module.startswith("bench")} | CONTRACT
    edges = {module: {target for target in graph[module] if target in nodes} for module in nodes}
    cycles = []
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "closed"

    for module in sorted(nodes):
        if module not in state:
            visit(module, [module])
    return cycles


def test_harness_import_graph_has_no_cycles():
    assert harness_cycles(project_graph()) == []


def test_no_cycle_through_the_plugin_scan():
    """bench.spec -> methods.registry -> (every method module) -> methods.base must not lead back: the
    contract module holds no job runtime (`JobContext` lives in `bench.job_context`)."""
    graph = project_graph()
    for module, targets in PLUGIN_SCAN.items():
        graph[module] = graph[module] | targets
    assert harness_cycles(graph) == []


def test_the_graph_sees_function_level_imports():
    """The check would miss a cycle hidden in a function body if it read only the module's top."""
    graph = project_graph()
    assert "bench.paper" in graph["bench.grid"]  # `GridPart.levels` imports it inside the method


def test_the_graph_sees_import_module_of_a_literal():
    calls = [node for node in ast.walk(ast.parse(
        "import importlib\nfrom importlib import import_module\n"
        "def late(name):\n    importlib.import_module('bench.paper')\n    import_module('bench.grid')\n"
        "    importlib.import_module(name)\n")) if isinstance(node, ast.Call)]
    assert [imported_by_name(node) for node in calls] == ["bench.paper", "bench.grid", None]
