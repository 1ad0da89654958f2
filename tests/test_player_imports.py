"""The player package's modules import each other without a cycle (lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import streambed.player

PACKAGE = "streambed.player"


def imports_of(path: Path) -> set[str]:
    """The modules of this package that ``path`` imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE:
                found.update(f"{PACKAGE}.{a.name}" for a in node.names)
            elif node.module.startswith(PACKAGE + "."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(PACKAGE + "."))
    return found


def test_no_import_cycle_in_the_player() -> None:
    folder = Path(streambed.player.__file__).parent
    graph = {f"{PACKAGE}.{p.stem}": imports_of(p) for p in folder.glob("*.py")}
    assert "streambed.player.base" in graph["streambed.player.browser"]
    assert "streambed.player.session" not in graph["streambed.player.browser"]

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, " -> ".join([*path, module])
        for target in sorted(graph.get(module, ())):
            visit(target, [*path, module])

    for module in graph:
        visit(module, [])
