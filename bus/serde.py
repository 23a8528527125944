"""Encoding events to Kafka records and decoding them back.

Encoding: the event's schema is registered (once) under ``<topic>-<record full name>``
(TopicRecordNameStrategy), the body is Avro binary in the Confluent wire format, the envelope
goes into CloudEvents headers, the key is the aggregate key.

Decoding resolves the *writer's* schema (by the id in the record) to the *reader's* schema (this
process's catalog), so a consumer built on an older or newer schema version reads what a
compatible producer wrote.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Protocol

import fastavro
from fastavro.read import SchemaResolutionError
from pydantic import ValidationError

from bus import naming, wire
from bus.catalog import EventSchema, SchemaCatalog
from bus.envelope import Envelope
from bus.errors import InvalidEventData, UndecodableEvent, UnknownEventType
from bus.events import EVENT_TYPES, EventBase
from bus.registry import WriterSchema


@dataclass(frozen=True)
class EncodedEvent:
    """A record ready for a producer."""

    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    envelope: Envelope
    schema_id: int


class Registry(Protocol):
    """What the serde needs of a schema registry: :class:`bus.registry.SchemaRegistry` (the
    Confluent API), or the in-process one of the box test kit."""

    @property
    def url(self) -> str: ...

    async def register(self, subject: str, schema: EventSchema) -> int: ...

    async def writer(self, schema_id: int) -> WriterSchema: ...


class EventSerde:
    def __init__(
        self,
        registry: Registry,
        catalog: SchemaCatalog,
        models: dict[str, type[EventBase]] = EVENT_TYPES,
    ) -> None:
        self.registry = registry
        self.catalog = catalog
        self.models = models
        # Per writer schema id: the schemas to read its bodies with. When the writer's schema
        # is the reader's (the common case) no resolution is needed, and fastavro reads about
        # twice as fast without it. They are compared parsed: a registry may return the text
        # in another form (Apicurio drops a nested type's namespace when it is the
        # enclosing one's), which parses to the same schema.
        self._plans: dict[int, tuple[Any, Any]] = {}

    async def encode(self, event: EventBase, topic: str) -> EncodedEvent:
        schema = self.catalog[event.TYPE]
        schema_id = await self.registry.register(naming.subject(topic, schema.fullname), schema)
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema.parsed, event.to_avro())
        envelope = Envelope.of(event, dataschema=f"{self.registry.url}/schemas/ids/{schema_id}")
        return EncodedEvent(
            topic=topic, key=envelope.partition_key.encode(),
            value=wire.frame(schema_id, buffer.getvalue()),
            headers=envelope.to_headers(), envelope=envelope, schema_id=schema_id,
        )

    async def decode(self, value: bytes | None) -> EventBase:
        """The event in a record value; a BadEvent subclass says why it is not one."""
        schema_id, body = wire.unframe(value)
        writer = await self.registry.writer(schema_id)
        if writer.fullname not in self.catalog or writer.fullname not in self.models:
            raise UnknownEventType(
                f"schema id {schema_id} is {writer.fullname!r}, an event type this consumer "
                "does not know",
                hint="upgrade the consumer's schemas (a newer boxbus), or replay the record "
                "from the dead-letter topic once it does",
            )
        plan = self._plans.get(schema_id)
        if plan is None:
            reader = self.catalog[writer.fullname]
            same = writer.parsed == reader.parsed
            plan = self._plans[schema_id] = (reader.parsed if same else writer.parsed,
                                             None if same else reader.parsed)
        data = _read(bytes(body), plan[0], plan[1], schema_id, writer.fullname)
        try:
            return self.models[writer.fullname].model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidEventData(
                f"{writer.fullname} field {where}: {first['msg']}",
                hint="fix the producer; the record is kept in the dead-letter topic",
            ) from exc


def _read(body: bytes, writer: Any, reader: Any, schema_id: int, fullname: str) -> Any:
    stream = io.BytesIO(body)
    try:
        data = fastavro.schemaless_reader(stream, writer, reader)
    except SchemaResolutionError as exc:
        raise UndecodableEvent(
            f"{fullname} written with schema id {schema_id} cannot be read with this "
            f"consumer's schema: {exc}",
            hint="the schemas are incompatible; `boxbus schemas check` explains why",
        ) from exc
    except (EOFError, StopIteration, ValueError, IndexError, TypeError, OverflowError,
            UnicodeDecodeError) as exc:
        raise UndecodableEvent(
            f"the Avro body ({len(body)} bytes, schema id {schema_id}, {fullname}) is "
            f"truncated or corrupt: {exc.__class__.__name__}: {exc}",
            hint="the producer wrote something else than its schema says",
        ) from exc
    if stream.tell() != len(body):
        raise UndecodableEvent(
            f"the Avro body has {len(body) - stream.tell()} byte(s) left over after a whole "
            f"{fullname}: it was written with another schema than id {schema_id}",
        )
    return data
