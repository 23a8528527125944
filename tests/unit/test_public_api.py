"""The public surface of `bus` is explicit: `__all__` lists exactly what the package exports."""

from __future__ import annotations

import importlib
import subprocess
import sys

import bus


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(bus) if not name.startswith("_")}
    # Submodules appear as attributes once imported; they are not API names.
    modules = {name for name in public if type(getattr(bus, name)).__name__ == "module"}
    assert set(bus.__all__) - {"__version__"} == public - modules
    for name in bus.__all__:
        assert getattr(bus, name) is not None


def test_importing_bus_starts_nothing_and_configures_nothing() -> None:
    code = (
        "import logging, threading, bus, bus.devstack, boxbus.cli.main;"
        "assert threading.active_count() == 1, threading.enumerate();"
        "assert logging.getLogger().handlers == [], logging.getLogger().handlers"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_error_tree_has_one_root() -> None:
    errors = importlib.import_module("bus.errors")
    for name in ("ConfigError", "StackError", "PrerequisiteError", "PortInUseError",
                 "ComponentFailed"):
        assert issubclass(getattr(errors, name), bus.BoxbusError)
