"""What a running local stack remembers, in ``<run_dir>/state.json``, so that ``status`` and
``down`` work from any shell, and a second ``up`` finds what is already running."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from bus.devstack.procs import ProcessRecord
from bus.devstack.registry import RegistryStorage
from bus.errors import StackError


class Component(StrEnum):
    KAFKA = "kafka"
    POSTGRES = "postgres"
    REGISTRY = "registry"
    SMTP = "smtp"
    OBJECT_STORE = "objectstore"


ALL_COMPONENTS = frozenset(Component)


class KafkaPorts(BaseModel):
    model_config = ConfigDict(frozen=True)
    node_id: int
    port: int
    controller_port: int


class Ports(BaseModel):
    model_config = ConfigDict(frozen=True)
    kafka: list[KafkaPorts]
    postgres: int
    registry: int
    registry_management: int  # Quarkus health/metrics interface
    smtp: int
    # S3Proxy; None in the state of a stack set up before the object store was part of it.
    object_store: int | None = None


class StackState(BaseModel):
    run_dir: Path
    components: list[Component]
    registry_storage: RegistryStorage
    ports: Ports
    cluster_id: str
    # PostgreSQL's data lives outside the run directory when the server runs as another user.
    postgres_dir: Path | None = None
    processes: dict[str, ProcessRecord] = Field(default_factory=dict)
    boot_seconds: dict[str, float] = Field(default_factory=dict)

    @property
    def nodes(self) -> int:
        return len(self.ports.kafka)

    @staticmethod
    def path(run_dir: Path) -> Path:
        return run_dir / "state.json"

    @classmethod
    def load(cls, run_dir: Path) -> StackState | None:
        path = cls.path(run_dir)
        if not path.exists():
            return None
        try:
            return cls.model_validate_json(path.read_text())
        except (ValueError, OSError) as exc:
            raise StackError(
                f"the run state {path} cannot be read ({exc.__class__.__name__}); it was written "
                "by another boxbus version or damaged",
                hint=f"stop the processes it lists by hand (their pids are in the file), then "
                f"remove {run_dir}",
            ) from exc

    def save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path(self.run_dir).with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        os.replace(tmp, self.path(self.run_dir))


@contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """One `up` or `down` at a time per run directory, across processes. The lock file sits
    beside the run directory, so `down` can remove the whole directory while holding it."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f".{run_dir.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
