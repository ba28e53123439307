"""The house's walls: the layers of README "Architecture" hold, no module cycle, no hidden imports.

`lint-imports` (import-linter, configured in ``pyproject.toml``) checks the
layers, the independence of the queue modules and acyclic packages; CI runs
it too. These tests run it, show that it does fail on a wrong-way import, and
add what it does not check: no cycle between any two modules, and project
imports inside functions only in the CLI (where each buys start-up time).
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("messages", "policy", "models", "disputes", "workers", "scheduler", "desk", "tools")
#: The only modules whose functions may import project modules: CLI commands, for start-up time.
CLI_MODULES = ("disputes/cli.py", "disputes/cli/", "tools/commands.py")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()", "--no-cache"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_of_pyproject_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_a_model_that_imports_the_desk_breaks_the_layers_contract(tmp_path: Path) -> None:
    # Given a copy of the project in which models/ reaches up into the desk
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "models" / "wrong_way.py").write_text("from desk.errors import ApiError\n", encoding="utf-8")
    # When import-linter checks it
    result = lint_imports(tmp_path)
    # Then the layers contract is broken, naming the import
    assert result.returncode != 0
    assert "Layers:" in result.stdout and "BROKEN" in result.stdout
    assert "models.wrong_way -> desk.errors" in result.stdout


def test_a_stage_entry_that_imports_another_breaks_the_independence_contract(tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "workers" / "stage3.py").open("a", encoding="utf-8") as stage3:
        stage3.write("\nimport workers.stage2  # noqa: E402\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "Queues meet through messages" in result.stdout and "workers.stage3 -> workers.stage2" in result.stdout


def test_no_two_modules_of_the_project_import_each_other_even_indirectly() -> None:
    graph = grimp.build_graph(*PACKAGES)
    cycles = [sorted(component) for component in _strongly_connected(graph) if len(component) > 1]
    assert cycles == []


def test_project_modules_are_imported_inside_functions_only_by_cli_commands() -> None:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith(CLI_MODULES):
                continue
            for function in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(function):
                    module = (node.module if isinstance(node, ast.ImportFrom) and node.level == 0
                              else node.names[0].name if isinstance(node, ast.Import) else None)
                    if module and module.split(".")[0] in PACKAGES:
                        found.append(f"{relative}:{node.lineno} imports {module} inside {function.name}()")
    assert found == []


def _strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's algorithm over the module graph, iteratively (the graph has hundreds of modules)."""
    edges = {module: sorted(graph.find_modules_directly_imported_by(module)) for module in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            for offset, child in enumerate(edges[node][position:], start=position):
                if child not in index:
                    work.append((node, offset + 1))
                    work.append((child, 0))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
    return components
