"""The box SDK: what a box connector uses to publish inside its own transactions (outbox and
relay) and to apply incoming events exactly once (inbox)."""

from bus.naming import inbox_topic
from connectors.box.handlers import Applied, Handlers, Rejected, Retry, UnknownTypePolicy
from connectors.box.inbox import Inbox
from connectors.box.migrations import MIGRATIONS, migrate
from connectors.box.outbox import Outbox
from connectors.box.relay import Backlog, Relay, backlog, unpark

__all__ = [
    "MIGRATIONS",
    "Applied",
    "Backlog",
    "Handlers",
    "Inbox",
    "Outbox",
    "Rejected",
    "Relay",
    "Retry",
    "UnknownTypePolicy",
    "backlog",
    "inbox_topic",
    "migrate",
    "unpark",
]
