"""Files boxbus ships beside its code, found the same way in a checkout and in an installed
wheel: the event schemas (the repository's ``schemas/``, package ``bus.schemas``) and the
deployment files (``deploy/``, package ``bus.deploy``: the Maven descriptors of the JVM
services, the demo topology, the benchmark peers' constraints). ``pyproject.toml`` maps the two
folders to those packages, so nothing reaches into a source tree by its path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _folder(package: str) -> Path:
    found = resources.files(package)
    # Both a checkout (an editable install) and a wheel keep them as plain folders on disk.
    return Path(str(found))


def schemas_dir() -> Path:
    return _folder("bus.schemas")


def deploy_dir() -> Path:
    return _folder("bus.deploy")
