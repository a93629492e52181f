"""The harness's import graph (parsed with `ast`): `bench/` reaches the methods only through the
registry (`methods.registry`, which re-exports what the harness needs of the contract `methods.base`),
and no two of its modules import each other, directly or around a longer loop (function-level imports
and `importlib.import_module` of a literal name included)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DOOR = "methods.registry"
"""The one module of methods/ and baselines/ that bench/ may import (anywhere, type-checking blocks too)."""
CONTRACT = {DOOR, "methods.base"}
"""The method side's modules that the cycle check follows: the registry and the contract it re-exports."""
METHOD_PACKAGES = ("methods", "baselines")


def module_name(path: Path, root: Path = REPO_ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_lines(path: Path, known: set[str], type_checking: bool = False, root: Path = REPO_ROOT) -> dict[str, int]:
    """The project modules that `path` imports anywhere -> the first line doing so (imports under
    `if TYPE_CHECKING:` only with `type_checking`: they never run, so they close no cycle)."""
    tree = ast.parse(path.read_text())
    skipped = set() if type_checking else {
        id(node) for statement in ast.walk(tree) if isinstance(statement, ast.If)
        and isinstance(statement.test, ast.Name) and statement.test.id == "TYPE_CHECKING" for node in ast.walk(statement)}
    package = module_name(path, root) if path.name == "__init__.py" else module_name(path, root).rpartition(".")[0]
    found: dict[str, int] = {}
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
                found[name] = min(found.get(name, node.lineno), node.lineno)
    return found


def imported_by_name(node: ast.AST) -> str | None:
    """The module of `importlib.import_module("name")` (or a bare `import_module("name")`), else None."""
    if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
        return None
    function = node.func
    called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
    return node.args[0].value if called == "import_module" and isinstance(node.args[0].value, str) else None


def project_paths() -> list[Path]:
    return [path for package in ("bench", *METHOD_PACKAGES) for path in (REPO_ROOT / package).rglob("*.py")]


def project_graph() -> dict[str, set[str]]:
    paths = project_paths()
    known = {module_name(path) for path in paths}
    return {module_name(path): set(import_lines(path, known)) - {module_name(path)} for path in paths}


def method_side_imports(path: Path, known: set[str], root: Path = REPO_ROOT) -> list[str]:
    """`file:line imports module` for each module of methods/ or baselines/ other than the registry that
    the bench/ module at `path` imports (module level, in a function, type-checking-only or by
    `importlib.import_module`)."""
    return [f"{path.relative_to(root)}:{line} imports {target}; accepted: {DOOR} only"
            for target, line in sorted(import_lines(path, known, type_checking=True, root=root).items())
            if target.split(".")[0] in METHOD_PACKAGES and target != DOOR]


def test_bench_reaches_the_method_side_only_through_the_registry():
    paths = project_paths()
    known = {module_name(path) for path in paths}
    offending = [line for path in paths if module_name(path).split(".")[0] == "bench"
                 for line in method_side_imports(path, known)]
    assert offending == [], "\n".join(offending)


def test_the_registry_rule_names_file_and_line(tmp_path):
    """The rule fails on an import of the contract itself, also type-checking-only or by `import_module`."""
    module = tmp_path / "bench" / "late.py"
    module.parent.mkdir()
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from methods.base import Method\n"
                      "def late():\n    from methods.registry import get_method\n"
                      "    import importlib\n    importlib.import_module('baselines.snip')\n")
    known = {"bench.late", "methods", "methods.base", "methods.registry", "baselines", "baselines.snip"}
    assert method_side_imports(module, known, tmp_path) == [
        "bench/late.py:7 imports baselines.snip; accepted: methods.registry only",
        "bench/late.py:3 imports methods.base; accepted: methods.registry only"]


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


def test_the_cycle_check_follows_the_registry_into_the_contract():
    """bench.spec -> methods.registry -> methods.base must not lead back (the registry imports the contract it
    re-exports; the contract holds no job runtime: `JobContext` lives in `bench.job_context`)."""
    graph = project_graph()
    assert "methods.base" in graph["methods.registry"] and "methods.registry" in graph["bench.spec"]
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
