"""Imports go one way: no import cycle (module-level or inside a function) anywhere in the
project. The last ones went when the tools' parser helpers moved to ``relam.toolargs`` (the tools
imported ``relam.cli`` while it runs them) and ``RunResult`` to ``relam.results`` (``relam.methods``
and ``relam.rl.ppo`` imported each other)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

from relam.cache import REPO_ROOT

PACKAGES = ("relam", "baselines")
#: module-name prefixes that must be on no cycle
ACYCLIC = ("relam", "baselines")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (REPO_ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(REPO_ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``"""
    t = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(t, ast.Compare) and isinstance(t.left, ast.Name)
            and t.left.id == "__name__" and len(t.ops) == 1 and isinstance(t.ops[0], ast.Eq)
            and isinstance(t.comparators[0], ast.Constant) and t.comparators[0].value == "__main__")


def _imports(tree: ast.AST):
    """The import statements anywhere in a module (functions included), except in its
    ``if __name__ == "__main__":`` block: that block runs only when the file is the program
    (``python -m relam.demos``, a shim calling :func:`relam.cli.main`), as a module named
    ``__main__`` that no module imports, so what it imports closes no cycle."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_main_guard(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its file."""
    mods = _modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for node in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for n in names:
                t = owner(n)
                if t and t != m and not m.startswith(t + "."):  # a package's own __init__ is no cycle
                    graph[m].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in graph:
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_a_main_guard_closes_no_cycle_but_a_function_does():
    tree = ast.parse("import a\ndef f():\n    import b\nif __name__ == '__main__':\n    import c\n")
    assert sorted(n.names[0].name for n in _imports(tree)) == ["a", "b"]


def test_no_import_cycle_through_the_acyclic_modules():
    bad = [c for c in cycles(import_graph()) if any(m == p or m.startswith(p + ".") for m in c for p in ACYCLIC)]
    assert not bad, ("import cycles (imports must go one way: tasks -> demos -> subgoals -> anticipation -> "
                     f"rewards -> agents -> methods -> harness -> cli): {bad}")
