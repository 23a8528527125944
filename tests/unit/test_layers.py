"""The layers import downwards only: the library (`bus`) knows nothing of the box SDK
(`connectors`), the processors (`processors`) or the command line (`boxbus`); the SDK and the
processors know nothing of the command line. A connector installs and imports the library
without the rest."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ABOVE = {
    "bus": {"connectors", "processors", "boxbus"},
    "connectors": {"boxbus"},
    "processors": {"boxbus"},
}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("layer", sorted(ABOVE))
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    wrong = {}
    for path in sorted((REPO / layer).rglob("*.py")):
        bad = imported_packages(path) & ABOVE[layer]
        if bad:
            wrong[str(path.relative_to(REPO))] = sorted(bad)
    assert not wrong, f"imports from a layer above: {wrong}"


def test_no_module_runs_the_command_line_by_its_old_name() -> None:
    for layer in ("bus", "connectors", "processors"):
        for path in (REPO / layer).rglob("*.py"):
            assert "bus.cli" not in path.read_text().replace("boxbus.cli", ""), path
