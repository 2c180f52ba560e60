"""Who may import whom (shared/DESIGN.md): the faces (cli, web) -> agents -> pricer -> memory -> framework.

Read from the source with `ast`, so an import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "deals"
ALLOWED = {
    "framework": {"framework"},
    "memory": {"framework", "memory"},
    "pricer": {"framework", "memory", "pricer"},
    "agents": {"framework", "memory", "pricer", "agents"},
    "web": {"framework", "memory", "pricer", "agents", "web"},
}


def imported_layers(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "deals" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(layer):
    bad = {}
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        wrong = imported_layers(path) - ALLOWED[layer] - {"__init__"}
        if wrong:
            bad[str(path.relative_to(PACKAGE))] = sorted(wrong)
    assert bad == {}
