"""The transactional outbox: an event is written into the box's own database in the same
transaction as the business change that caused it, so both commit or neither does. The relay
publishes committed rows later; a broker outage only delays delivery.

    async with conn.transaction():
        await conn.execute("INSERT INTO orders ...")
        await outbox.publish(conn, OrderPlaced(...))
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import replace

import asyncpg

from bus import naming, tracing
from bus.envelope import TRACK
from bus.errors import OversizeEvent
from bus.events import EventBase
from bus.events.models import DeliveryReceipt, EventsRouted
from bus.serde import EncodedEvent, EventSerde
from bus.settings import Settings
from bus.signing import HEADER, Signer
from bus.validation import MAX_EVENT_BYTES

INSERT = """INSERT INTO boxbus_outbox
                (event_id, event_type, topic, record_key, record_value, headers)
            VALUES ($1, $2, $3, $4, $5, $6::jsonb)
            ON CONFLICT (event_id) DO NOTHING"""
CHANNEL = "boxbus_outbox"  # NOTIFY channel: wakes the relay when a transaction commits
# The bus's own answers: never tracked, never answered, never held back by a box's rules.
BUS_ANSWERS = frozenset({DeliveryReceipt.TYPE, EventsRouted.TYPE})
RPC_PREFIX = "boxbus.rpc."  # questions and answers: never tracked, never answered by receipts


def headers_json(headers: list[tuple[str, bytes]]) -> str:
    return json.dumps([[k, base64.b64encode(v).decode()] for k, v in headers])


def headers_from_json(text: str) -> list[tuple[str, bytes]]:
    return [(k, base64.b64decode(v)) for k, v in json.loads(text)]


class Outbox:
    """``signer``: the box's signing key; events of ``signed_types`` are signed with it when
    they are encoded (the recipient refuses them unsigned). ``track``: keep the business
    receipts of what is published (:mod:`connectors.box.tracking`): each event is recorded in
    ``boxbus_sent`` with its business change, and marked for the router to report on."""

    def __init__(self, settings: Settings, serde: EventSerde, *, signer: Signer | None = None,
                 signed_types: Iterable[str] = (), track: bool = False) -> None:
        self.settings = settings
        self.serde = serde
        self.signer = signer
        self.signed_types = frozenset(signed_types)
        self.track = track

    async def publish(self, conn: asyncpg.Connection, event: EventBase,
                      topic: str | None = None,
                      headers: Sequence[tuple[str, bytes]] = ()) -> EncodedEvent:
        """Write ``event`` into the outbox inside the caller's transaction (which must be
        open: an event outside a transaction could commit without its business change).
        ``headers``: more record headers (an answer's reply partition)."""
        if not headers:
            return (await self.publish_many(conn, [event], topic))[0]
        encoded = await self.encode([event], topic, headers)
        return (await self.publish_many(conn, encoded))[0]

    async def encode(self, events: Sequence[EventBase], topic: str | None = None,
                     headers: Sequence[tuple[str, bytes]] = ()) -> list[EncodedEvent]:
        """Encode events for ``publish_many`` before the business transaction opens, so a
        first-time schema look-up at the registry never holds the transaction's row locks."""
        encoded_all = []
        for event in events:
            # A box writes its own ingress topic only; the router takes it from there.
            target = topic or naming.ingress_topic(
                self.settings.topic_namespace, event.meta.source_box)
            encoded = await self.serde.encode(event, target)
            if headers:
                encoded = replace(encoded, headers=[*encoded.headers, *headers])
            if (self.track and event.TYPE not in BUS_ANSWERS
                    and not event.TYPE.startswith(RPC_PREFIX)):  # questions have deadlines
                encoded = replace(encoded, headers=[*encoded.headers, (TRACK, b"1")])
            if tracing.enabled():
                # The trace starts here, or goes on from the caller's span (a handler's).
                span = tracing.start("boxbus.outbox", tracing.PRODUCER, None,
                                     **{"boxbus.event_id": encoded.envelope.id,
                                        "boxbus.type": encoded.envelope.type,
                                        "boxbus.correlation_id": encoded.envelope.correlation_id})
                encoded = replace(encoded, headers=tracing.with_span(encoded.headers, span))
                span.end()
            if self.signer is not None and encoded.envelope.type in self.signed_types:
                if encoded.envelope.source_box != self.signer.box:
                    raise ValueError(f"box {self.signer.box!r} cannot sign an event of box "
                                     f"{encoded.envelope.source_box!r}")
                material = self.signer.sign(dict(encoded.headers), encoded.value)
                encoded = replace(encoded, headers=[*encoded.headers, (HEADER, material)])
            encoded_all.append(encoded)
        return encoded_all

    async def publish_many(self, conn: asyncpg.Connection,
                           events: Sequence[EventBase] | Sequence[EncodedEvent],
                           topic: str | None = None) -> list[EncodedEvent]:
        """Write several events of one business transaction (an order and its stock changes)
        with one round trip to the database, in the order given. Events may come encoded
        already (``encode``); ``topic`` then comes from the encoding."""
        if not conn.is_in_transaction():
            raise RuntimeError("Outbox.publish needs the caller's transaction: call it inside "
                               "`async with conn.transaction():`")
        encoded_all = [e for e in events if isinstance(e, EncodedEvent)]
        if len(encoded_all) != len(events):
            if encoded_all:
                raise TypeError("publish_many takes events or encoded events, not a mix")
            encoded_all = await self.encode(events, topic)  # type: ignore[arg-type]
        for e in encoded_all:
            if len(e.value) > MAX_EVENT_BYTES:
                # Refused here, in the business transaction, rather than blocking the relay.
                raise OversizeEvent(
                    f"{e.envelope.type} {e.envelope.id} is {len(e.value)} bytes, over the "
                    f"{MAX_EVENT_BYTES}-byte limit for one event",
                    hint="send large documents by reference (DocumentAttached.content_ref)")
        rows = [(e.envelope.id, e.envelope.type, e.topic, e.key, e.value,
                 headers_json(e.headers)) for e in encoded_all]
        if len(rows) == 1:
            await conn.execute(INSERT, *rows[0])
        elif rows:
            await conn.executemany(INSERT, rows)
        await record_sent(conn, encoded_all)
        # The table's trigger NOTIFYs the relay (migration 3): no round trip here.
        return encoded_all


def tracked(encoded: EncodedEvent) -> bool:
    return any(name == TRACK for name, _ in encoded.headers)


async def record_sent(conn: asyncpg.Connection, encoded: Iterable[EncodedEvent]) -> None:
    """In the publishing transaction: the tracked events, as committed and not yet sent."""
    rows = [(e.envelope.id, e.envelope.type, e.envelope.partition_key, e.envelope.target_box)
            for e in encoded if tracked(e)]
    if rows:
        await conn.executemany(
            "INSERT INTO boxbus_sent (event_id, event_type, aggregate_key, target_box) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING", rows)
