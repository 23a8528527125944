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

import asyncpg

from bus import naming
from bus.errors import OversizeEvent
from bus.events import EventBase
from bus.serde import EncodedEvent, EventSerde
from bus.settings import Settings
from bus.validation import MAX_EVENT_BYTES

CHANNEL = "boxbus_outbox"  # NOTIFY channel: wakes the relay when a transaction commits


def headers_json(headers: list[tuple[str, bytes]]) -> str:
    return json.dumps([[k, base64.b64encode(v).decode()] for k, v in headers])


def headers_from_json(text: str) -> list[tuple[str, bytes]]:
    return [(k, base64.b64decode(v)) for k, v in json.loads(text)]


class Outbox:
    def __init__(self, settings: Settings, serde: EventSerde) -> None:
        self.settings = settings
        self.serde = serde

    async def publish(self, conn: asyncpg.Connection, event: EventBase,
                      topic: str | None = None) -> EncodedEvent:
        """Write ``event`` into the outbox inside the caller's transaction (which must be
        open: an event outside a transaction could commit without its business change)."""
        if not conn.is_in_transaction():
            raise RuntimeError("Outbox.publish needs the caller's transaction: call it inside "
                               "`async with conn.transaction():`")
        target = topic or naming.region_topic(self.settings.topic_namespace,
                                              event.meta.region)  # type: ignore[attr-defined]
        encoded = await self.serde.encode(event, target)
        if len(encoded.value) > MAX_EVENT_BYTES:
            # Refused here, in the business transaction, rather than blocking the relay later.
            raise OversizeEvent(
                f"{encoded.envelope.type} {encoded.envelope.id} is {len(encoded.value)} bytes, "
                f"over the {MAX_EVENT_BYTES}-byte limit for one event",
                hint="send large documents by reference (DocumentAttached.content_ref)")
        await conn.execute(
            """INSERT INTO boxbus_outbox
                   (event_id, event_type, topic, record_key, record_value, headers)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb)
               ON CONFLICT (event_id) DO NOTHING""",
            encoded.envelope.id, encoded.envelope.type, target, encoded.key, encoded.value,
            headers_json(encoded.headers))
        # The table's trigger NOTIFYs the relay (migration 3): no round trip here.
        return encoded
