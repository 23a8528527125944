"""pyproject.toml lists its packages (schemas/ and deploy/ are shipped under other names), so a
package folder added later must be listed too, or the wheel would lack it."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_in_the_wheel() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapped = config["package-dir"]
    found = {".".join(p.parent.relative_to(REPO).parts)
             for top in ("bus", "connectors", "processors", "boxbus")
             for p in (REPO / top).rglob("__init__.py")}
    assert found <= listed, f"not in pyproject.toml's packages: {sorted(found - listed)}"
    assert mapped == {"bus.schemas": "schemas", "bus.deploy": "deploy"}
    assert set(mapped) <= listed
