"""Import cycles among a package's modules, read from the source (no import is run).

Every ``import``/``from ... import`` counts, the ones inside functions too: a lazy import
only hides a cycle until the two modules are changed together.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set


def module_files(root: Path, package: str) -> Dict[str, Path]:
    """``{dotted module name: file}`` of every module of ``package`` under ``root``."""
    found = {}
    for path in sorted((Path(root) / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imported(node: ast.AST, here: List[str]) -> List[str]:
    """The dotted names an import statement may load (``from a import b``: ``a`` and ``a.b``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [base] + ["%s.%s" % (base, alias.name) for alias in node.names]


def import_graph(root: Path, package: str) -> Dict[str, Set[str]]:
    """``{module: the package's modules it imports}``; a package's own ``__init__`` is left
    out of its submodules' imports (Python runs it first whatever they import)."""
    files = module_files(root, package)
    graph: Dict[str, Set[str]] = {name: set() for name in files}
    for name, path in files.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for target in _imported(node, here):
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def import_cycles(root: Path, package: str) -> List[List[str]]:
    """The groups of modules that import one another, directly or around a loop (sorted)."""
    graph = import_graph(root, package)
    reaches = {name: _reachable(graph, name) for name in graph}
    groups = {frozenset(m for m in reaches[name] if name in reaches[m]) | {name} for name in graph}
    return sorted(sorted(g) for g in groups if len(g) > 1)


def _reachable(graph: Dict[str, Set[str]], start: str) -> Set[str]:
    seen: Set[str] = set()
    todo = list(graph[start])
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    return seen
