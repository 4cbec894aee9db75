"""How ibnedge is put together: no import cycle among its modules, and a command line whose
choices come from the registries that define them without importing NumPy."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

from edge_helpers import REPO, subprocess_env

PACKAGE = REPO / "ibnedge"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: Set[str]) -> Set[str]:
    """The ibnedge modules ``path`` imports anywhere (top level or inside a function: a
    lazy import closes a cycle as surely as an eager one)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()  # type: Set[str]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # ``from pkg import mod`` imports the module pkg.mod where there is one.
            targets = [base + "." + a.name if base + "." + a.name in modules else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_graph() -> Dict[str, Set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = set(_module_name(f) for f in files)
    return dict((_module_name(f), _imports(f, modules)) for f in files)


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []  # type: ignore[var-annotated]

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_lazy_import_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_ibnedge():
    graph = import_graph()
    assert "ibnedge.backends.mindspore" in graph and "ibnedge.hub" in graph
    assert cycles(graph) == []


def test_no_backend_imports_the_hub_or_the_model_maker():
    graph = import_graph()
    for name, imported in graph.items():
        if name.startswith("ibnedge.backends"):
            assert not imported & {"ibnedge.hub", "ibnedge.models", "ibnedge.onnx_builder"}, (name, imported)


_HELP_PROBE = r"""
import contextlib, io, json, runpy, sys
seen = {}
for sub in ([], ["infer"], ["convert"], ["bench"], ["doctor"]):
    sys.argv = ["ibnedge"] + sub + ["--help"]
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        try:
            runpy.run_module("ibnedge", run_name="__main__", alter_sys=False)
        except SystemExit:
            pass
    seen[" ".join(sub) or "-"] = text.getvalue()
heavy = sorted(m for m in ("numpy", "onnx", "mindspore", "mindspore_lite", "onnxruntime", "ibnedge._native",
                           "ibnedge.backends", "ibnedge.metadata") if m in sys.modules)
print(json.dumps({"heavy": heavy, "help": seen}))
"""


def test_help_imports_no_numpy_and_lists_the_registries_choices():
    """``ibnedge --help`` (and each command's) stays fast: no NumPy, no runtime, not even the
    backend registry; the choices it shows are the registries' own (ibnedge.choices)."""
    import json

    from ibnedge import backends, choices
    from ibnedge.ascend_config import PRECISIONS, SOCS
    from ibnedge.metadata import PreprocessSpec

    proc = subprocess.run([sys.executable, "-c", _HELP_PROBE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=subprocess_env(), cwd="/")
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert result["heavy"] == []
    assert tuple(backends.BACKENDS) == choices.BACKENDS and backends.backend_names() == list(choices.BACKEND_CHOICES)
    assert set(choices.SOCS) == set(SOCS) and set(choices.precisions("ascend")) == set(PRECISIONS)
    infer = " ".join(result["help"]["infer"].split())
    assert "{%s}" % ",".join(choices.BACKEND_CHOICES) in infer
    assert "{%s}" % ",".join(choices.DEVICES) in infer and "{%s}" % ",".join(choices.SEMANTICS) in infer
    assert "{%s}" % ",".join(choices.OPTIMIZE_LEVELS) in " ".join(result["help"]["convert"].split())
    for semantics in choices.SEMANTICS:  # every choice offered is one the engine's spec takes
        PreprocessSpec(semantics=semantics)


def _expand(pattern: str) -> List[str]:
    """``resnet{18,34}_ibn_{a,b}`` -> the names it stands for (shell brace expansion)."""
    import re

    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    return [name for option in match.group(1).split(",")
            for name in _expand(pattern[:match.start()] + option + pattern[match.end():])]


def test_readme_names_exactly_the_variants_with_official_weights():
    import re

    from ibnedge import architectures

    text = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    claim = re.search(r"Official ImageNet weights \(the authors' v1\.0 release\) exist for exactly these (\w+): ([^;]*);",
                      text)
    assert claim is not None, "README no longer says which variants have official weights"
    listed = [name for pattern in re.findall(r"`([^`]+)`", claim.group(2)) for name in _expand(pattern)]
    released = sorted(n for n in architectures.names() if architectures.get(n).weights_url)
    assert sorted(listed) == released
    assert claim.group(1) == {12: "twelve"}.get(len(released), str(len(released)))


def test_train_export_offers_the_semantics_the_engine_has():
    import argparse

    import pytest

    pytest.importorskip("mindspore", reason="train/ needs MindSpore (Python 3.9+)")
    from ibnedge import choices
    from train import config

    parser = config.export_parser()
    semantics = next(a for a in parser._actions if isinstance(a, argparse.Action) and a.dest == "semantics")
    assert tuple(semantics.choices) == choices.SEMANTICS
