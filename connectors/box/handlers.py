"""What a box connector writes against the inbox: handlers registered per event type, the
context each gets (:class:`Applied`, with the open transaction of the box's database), and the
two answers a handler may give besides success (:class:`Retry`, :class:`Rejected`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import asyncpg

from bus.envelope import Envelope
from bus.errors import BadEvent, BoxbusError
from bus.events import EventBase
from bus.record import KafkaRecord
from connectors.box.outbox import Outbox


class Retry(BoxbusError):
    """Raised by a handler: the effect could not be applied now (a lock, a remote service);
    the batch is retried later with backoff."""

    retriable = True


class Rejected(BoxbusError):
    """Raised by a handler: this event cannot be applied (a business rule refuses it); it goes
    to the dead-letter topic with the message as reason, and the next events are applied."""


class HandlerRejected(BadEvent):
    code = "rejected-by-handler"


class UnknownTypePolicy(StrEnum):
    SKIP = "skip"  # log it and go on
    DEAD_LETTER = "dead-letter"


@dataclass(frozen=True)
class Applied:
    """What a handler gets besides the event."""

    conn: asyncpg.Connection  # the open transaction of the box's database
    envelope: Envelope
    topic: str
    partition: int
    offset: int
    outbox: Outbox | None  # to publish follow-up events in the same transaction
    timestamp_ms: int = 0  # the record's Kafka timestamp (when the sender's relay sent it)
    box_id: str = ""  # the box applying it
    record: KafkaRecord | None = None  # the record itself: its headers and bytes as received


Handler = Callable[[Any, Applied], Awaitable[None]]
BatchHandler = Callable[[list[tuple[Any, Applied]]], Awaitable[None]]


@dataclass
class Handlers:
    """Handlers by event type: ``@handlers.on(OrderPlaced)`` for one event at a time, or
    ``@handlers.on_batch(StockLevelChanged)`` for consecutive events of a batch at once (in
    order; one ``executemany`` instead of a round trip per event). A batch handler that fails
    is called again with one event at a time, to isolate the event that fails."""

    by_type: dict[str, Handler] = field(default_factory=dict)
    batch_by_type: dict[str, BatchHandler] = field(default_factory=dict)

    def _claim(self, models: tuple[type[EventBase], ...]) -> None:
        for model in models:
            if model.TYPE in self.by_type or model.TYPE in self.batch_by_type:
                raise ValueError(f"a handler for {model.TYPE} is registered already")

    def on(self, *models: type[EventBase]) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self._claim(models)
            for model in models:
                self.by_type[model.TYPE] = handler
            return handler
        return register

    def on_batch(self, *models: type[EventBase]) -> Callable[[BatchHandler], BatchHandler]:
        def register(handler: BatchHandler) -> BatchHandler:
            self._claim(models)
            for model in models:
                self.batch_by_type[model.TYPE] = handler
            return handler
        return register

    def single(self, event_type: str) -> Handler | None:
        """The handler of one event (a batch handler called with a batch of one)."""
        if event_type in self.by_type:
            return self.by_type[event_type]
        batch = self.batch_by_type.get(event_type)
        if batch is None:
            return None

        async def one(event: Any, applied: Applied) -> None:
            await batch([(event, applied)])

        return one
