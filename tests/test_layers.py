"""The layers of DESIGN.md, read off the package's source (no import runs): no import cycle, counting every
import (inside functions and TYPE_CHECKING blocks too); each folder imports only the layers below it; the
machinery's modules stay short."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "schoolroom"

# folder -> packages it must not import (schoolroom.X), or names outside the package it must not import
FORBIDDEN = {
    "agents": {"schoolroom.classroom", "schoolroom.protocols", "schoolroom.analysis", "schoolroom.reporting",
               "schoolroom.api", "schoolroom.cli"},
    "training": {"schoolroom.agents", "schoolroom.classroom", "schoolroom.protocols", "schoolroom.analysis",
                 "schoolroom.api", "ray"},
    "environment": {"schoolroom.agents", "schoolroom.classroom", "schoolroom.protocols", "schoolroom.training",
                    "schoolroom.analysis", "schoolroom.api", "ray", "torch"},
    "reporting": {"schoolroom.agents", "schoolroom.classroom", "schoolroom.protocols", "schoolroom.analysis",
                  "schoolroom.training", "schoolroom.api", "ray", "torch"},
    "analysis": {"schoolroom.agents", "schoolroom.classroom", "schoolroom.protocols", "schoolroom.training",
                 "schoolroom.api", "ray", "torch"},
    "classroom": {"schoolroom.protocols", "schoolroom.analysis", "schoolroom.api", "schoolroom.cli"},
    "protocols": {"schoolroom.classroom", "schoolroom.analysis", "schoolroom.cli", "ray", "torch", "transformers"},
}


def modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports(path: Path) -> set[str]:
    """Every module name an import statement anywhere in the file names (``from a import b``: a and a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def edges() -> dict[str, set[str]]:
    mods = modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    out = {}
    for m, f in mods.items():
        targets = {owner(n) for n in imports(f) if n.startswith("schoolroom")} - {None, m}
        out[m] = {t for t in targets if not m.startswith(t + ".")}  # a package's __init__ is not a dependency
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert cycles(edges()) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_each_folder_imports_only_the_layers_below_it():
    wrong = []
    for m, f in modules().items():
        folder = m.split(".")[1] if m.count(".") >= 1 else ""
        for name in imports(f):
            for bad in FORBIDDEN.get(folder, ()):
                if name == bad or name.startswith(bad + "."):
                    wrong.append(f"{m} imports {name}")
    assert wrong == []


def test_a_built_in_protocol_imports_only_the_api_and_its_siblings():
    """A built-in protocol reads like a user's: everything it uses comes from ``schoolroom.api`` (its report or
    data helpers may sit beside it in ``protocols/``)."""
    wrong = [f"{m} imports {name}" for m, f in modules().items() if m.startswith("schoolroom.protocols.")
             for name in imports(f) if name.startswith("schoolroom")
             and not name.startswith(("schoolroom.api", "schoolroom.protocols"))]
    assert wrong == []


def test_the_machinery_has_no_module_over_300_lines():
    long = {f.name: n for f in (PACKAGE / "classroom").glob("*.py") if (n := len(f.read_text().splitlines())) > 300}
    assert long == {}
