"""The box SDK: what a box connector uses to publish inside its own transactions (outbox and
relay) and to apply incoming events exactly once (inbox)."""

from connectors.box.migrations import MIGRATIONS, migrate
from connectors.box.outbox import Outbox
from connectors.box.relay import Backlog, Relay, backlog

__all__ = ["MIGRATIONS", "Backlog", "Outbox", "Relay", "backlog", "migrate"]
