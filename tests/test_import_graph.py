"""The house has floors: no module of cocoins/ imports, directly or through others, a module that imports it.

Every `import` counts, also those inside functions: a deferred import still makes the two files depend on
each other, and the next edit that moves it to the top turns the circle into an ImportError."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cocoins"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (`from a import b` counts a.b when b is a module)."""
    files = {module_name(p, package): p for p in sorted(package.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    root = ".".join(base + ([node.module] if node.module else []))
                else:
                    root = node.module or ""
                targets = [f"{root}.{alias.name}" if f"{root}.{alias.name}" in files else root
                           for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:    # `import cocoins.a.b.c` where c is a name
                    target = target.rpartition(".")[0]
                if target and target != name and target != package.name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_sees_a_circle_and_a_clean_chain():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_reads_relative_deferred_and_submodule_imports(tmp_path):
    pkg = tmp_path / "cocoins"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import low\n")
    (pkg / "sub" / "low.py").write_text("def f():\n    from cocoins import top\n")
    (pkg / "top.py").write_text("from cocoins.sub import low\nimport cocoins.sub.low as again\n")
    graph = import_graph(pkg)
    assert graph["cocoins.sub.low"] == {"cocoins.top"}
    assert graph["cocoins.top"] == {"cocoins.sub.low"}
    assert graph["cocoins.sub"] == {"cocoins.sub.low"}
    assert cycles(graph) == [["cocoins.sub.low", "cocoins.top"]]


def test_no_import_cycle_in_cocoins():
    graph = import_graph()
    assert len(graph) > 50, "the package was not found"
    assert cycles(graph) == [], "modules that import each other: give the shared piece a home below both"


def test_import_cocoins_is_free_and_the_pipeline_is_one_name_away():
    code = ("import sys, cocoins\n"
            "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules)\n"
            "assert not heavy, heavy\n"
            "from cocoins import CoCoInsPipeline\n"
            "from cocoins.pipeline import CoCoInsPipeline as direct\n"
            "assert CoCoInsPipeline is direct and 'torch' in sys.modules\n"
            "assert 'CoCoInsPipeline' in dir(cocoins)\n"
            "try:\n"
            "    cocoins.NoSuchThing\n"
            "except AttributeError as err:\n"
            "    assert 'NoSuchThing' in str(err)\n"
            "else:\n"
            "    raise SystemExit('an unknown name must raise AttributeError')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr
