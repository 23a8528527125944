"""The layers import downwards only: the library (`bus`) knows nothing of the box SDK
(`connectors`), the processors (`processors`) or the command line (`boxbus`); the SDK and the
processors know nothing of the command line. A connector installs and imports the library
without the rest."""

from __future__ import annotations

import ast
import subprocess
import sys
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


def test_every_library_module_imports_on_its_own() -> None:
    """Each module of `bus` imports first in a fresh interpreter: no cycle that works only
    when another module happened to be imported before it (bus.security and bus.topology
    had one)."""
    modules = sorted(".".join(p.relative_to(REPO).with_suffix("").parts)
                     for p in (REPO / "bus").rglob("*.py") if p.name != "__init__.py")
    failed = {}
    for name in modules:
        run = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=REPO,
                             capture_output=True, text=True, timeout=60, check=False)
        if run.returncode:
            failed[name] = run.stderr.strip().splitlines()[-1]
    assert not failed, failed
