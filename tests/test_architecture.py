"""The layout's promises, checked on the source: no import cycle between the toolkit's modules,
no det/rec branching outside toolkit/tasks/, run-directory paths only through RunDir, and a thin
CLI."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "toolkit"


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """toolkit modules this file imports, at any depth (function-local imports count too)."""
    out = set()
    mod = _module(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("toolkit"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("toolkit"))
    return {m for m in out if m != mod}


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in files} for m, p in files.items()}


def test_no_import_cycle():
    graph = _graph()
    # A package's __init__ may import its own submodules (a registry); that is not a cycle of modules.
    edges = {m: {d for d in deps if not (m + ".").startswith(d + ".") and not d.startswith(m + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_no_task_branches_outside_tasks():
    pattern = re.compile(r"""(task|name)\s*[!=]=\s*["'](det|rec)["']|["'](det|rec)["']\s*[!=]=""")
    hits = [f"{p.relative_to(PKG.parent)}:{n}" for p in PKG.rglob("*.py") if "tasks" not in p.relative_to(PKG).parts
            for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_run_directory_paths_only_through_rundir():
    """No hand-built paths under the run directory (`run.root / ...`, `quant_dir(t) / ...`)."""
    pattern = re.compile(r"\.root\s*/|(quant_dir|nb_dir|eval_dir|deploy_dir|data_root)\([^)]*\)\s*/")
    hits = [f"{p.relative_to(PKG.parent)}:{n}: {line.strip()}" for p in PKG.rglob("*.py") if p.name != "rundir.py"
            for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_cli_is_thin():
    """Logic in cli/ (lines that are not option declarations, docstrings, imports or blank) stays small."""
    logic = 0
    for p in (PKG / "cli").glob("*.py"):
        tree = ast.parse(p.read_text())
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.Module)) and ast.get_docstring(node):
                doc = node.body[0]
                skip.update(range(doc.lineno, doc.end_lineno + 1))
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                skip.update(range(node.lineno, node.end_lineno + 1))
            if isinstance(node, ast.FunctionDef):  # the signature: option declarations
                first = node.body[0].lineno
                skip.update(range(node.lineno, first))
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Option":
                skip.update(range(node.lineno, node.end_lineno + 1))
        lines = p.read_text().splitlines()
        logic += sum(1 for n, line in enumerate(lines, 1) if n not in skip and line.strip() and not line.strip().startswith(("#", "@")))
    assert logic < 300, logic
