"""An ACL as boxbus plans and applies it: one ALLOW rule for one Kafka user, from any host.

Kept apart from the topology (which derives the rules: :mod:`bus.topology.principals`) and
from the cluster client (which applies them: :mod:`bus.security`), so that each can import it
without importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

CLUSTER = "kafka-cluster"  # the name of Kafka's one cluster resource


class Resource(StrEnum):
    TOPIC = "topic"
    GROUP = "group"
    CLUSTER = "cluster"


class Pattern(StrEnum):
    LITERAL = "literal"
    PREFIXED = "prefixed"


class Operation(StrEnum):
    READ = "read"
    WRITE = "write"
    IDEMPOTENT_WRITE = "idempotent_write"


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW rule for one user, from any host."""

    user: str
    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation

    @property
    def principal(self) -> str:
        return f"User:{self.user}"

    def describe(self) -> str:
        star = "*" if self.pattern is Pattern.PREFIXED else ""
        return f"{self.user}: {self.operation.value} {self.resource.value} {self.name}{star}"
