"""The box test kit: test a connector's handlers and what they publish without Kafka and without
a schema registry, and run the very same test against the real stack by a switch.

    from connectors.box.testing import BoxTest

    async def test_an_order_becomes_a_sales_order() -> None:
        async with BoxTest(handlers, box="mill") as box:
            outcome = await box.deliver(order_for_the_mill)
            assert outcome.status == "applied"
            assert [e.TYPE for e in box.published] == ["boxbus.orders.OrderConfirmed"]

Three ways to run, the test unchanged:

- **In memory** (the default): each event is encoded and checked as on the network (Avro,
  envelope, size: a schema registry in the process), then handed to its handler. The handlers
  get an ``Applied`` whose ``conn`` holds no database (a handler that queries one is told so)
  and whose outbox keeps what they publish; ``Retry`` and ``Rejected`` behave as in the inbox.
  For handlers whose effects are kept in memory, or pure ones.
- **On PostgreSQL** (``database=`` a DSN, or ``BOXBUS_TEST_DATABASE_URL``): the box's real
  inbox applies each event in one transaction of that database, with the SDK's tables
  (migrated on entry), deduplication and savepoints; published events are read back from the
  box's outbox table. Still no Kafka and no registry.
- **On the real stack** (``real=True``, or ``BOXBUS_TEST_REAL=1`` in the environment): the
  events are produced into the box's inbox topic on the running stack's Kafka (`boxbus dev
  up`, or ``BOXBUS_KAFKA_*`` and ``BOXBUS_SCHEMA_REGISTRY_URL``), encoded through its registry,
  and the inbox consumes them as in production; needs a database too.

An :class:`Outcome` says what became of each event: ``applied``, ``duplicate`` (its id was
applied before), ``rejected`` (by a handler, or no handler for its type: the reason says), or
``dead-lettered`` (not a valid event: the code says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast

import asyncpg
from aiokafka import TopicPartition

from bus import naming
from bus.catalog import EventSchema, SchemaCatalog
from bus.errors import BadEvent, ConfigError
from bus.events import EventBase
from bus.kafka import KafkaAccess
from bus.record import KafkaRecord, PlainRecord
from bus.registry import WriterSchema
from bus.serde import EncodedEvent, EventSerde
from bus.settings import Settings
from bus.validation import check_record
from connectors.box.handlers import Applied, Handlers, Rejected
from connectors.box.inbox import Inbox, _Part, _Retrying, _transient
from connectors.box.migrations import migrate
from connectors.box.outbox import Outbox

APPLIED, DUPLICATE, REJECTED, DEAD_LETTERED = "applied", "duplicate", "rejected", "dead-lettered"


@dataclass(frozen=True)
class Outcome:
    event_id: str
    type: str
    status: str
    reason: str | None = None  # why it was rejected or dead-lettered
    code: str | None = None  # the dead-letter code


class MemoryRegistry:
    """A schema registry in the process: ids handed out in order, one per schema text."""

    url = "memory://boxbus-test-kit"

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._writers: dict[int, WriterSchema] = {}

    async def register(self, subject: str, schema: EventSchema) -> int:
        if schema.text not in self._ids:
            schema_id = self._ids[schema.text] = len(self._ids) + 1
            self._writers[schema_id] = WriterSchema(schema_id, schema.fullname, schema.schema,
                                                    schema.parsed)
        return self._ids[schema.text]

    async def writer(self, schema_id: int) -> WriterSchema:
        return self._writers[schema_id]


class _NoDatabase:
    """The ``conn`` of a handler run in memory: transactions nest, queries are refused."""

    def __init__(self) -> None:
        self._depth = 0

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._transaction()

    def is_in_transaction(self) -> bool:
        return self._depth > 0

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(
            f"this BoxTest runs in memory, without a database: the handler called "
            f"conn.{name}(). Pass database=<a PostgreSQL DSN> to run it on PostgreSQL")


class _MemoryOutbox(Outbox):
    """Keeps what the handlers publish (encoded and checked as the real outbox does)."""

    def __init__(self, settings: Settings, serde: EventSerde) -> None:
        super().__init__(settings, serde)
        self.published: list[EventBase] = []

    async def publish(self, conn: asyncpg.Connection, event: EventBase,
                      topic: str | None = None,
                      headers: Sequence[tuple[str, bytes]] = ()) -> EncodedEvent:
        (encoded,) = await self.encode([event], topic, headers)
        self.published.append(event)
        return encoded

    async def publish_many(self, conn: asyncpg.Connection,
                           events: Sequence[EventBase] | Sequence[EncodedEvent],
                           topic: str | None = None) -> list[EncodedEvent]:
        models = [e for e in events if isinstance(e, EventBase)]
        encoded = await self.encode(models, topic)
        self.published += models
        return encoded


class _DeadLetters:
    """The inbox's dead-letter writer, in memory."""

    def __init__(self) -> None:
        self.letters: dict[tuple[int, int], BadEvent] = {}

    async def write(self, record: KafkaRecord, error: BadEvent) -> None:
        self.letters[(record.partition, record.offset)] = error


@dataclass
class BoxTest:
    handlers: Handlers
    box: str = "test-box"
    region: str = "north"
    database: str | None = None
    real: bool | None = None
    settings: Settings | None = None
    max_attempts: int = 3
    published: list[EventBase] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    async def __aenter__(self) -> BoxTest:
        if self.real is None:
            self.real = os.environ.get("BOXBUS_TEST_REAL", "") not in ("", "0")
        if self.database is None:
            self.database = os.environ.get("BOXBUS_TEST_DATABASE_URL") or None
        self.settings = self.settings or Settings()
        self._topic = naming.inbox_topic(self.settings.topic_namespace, self.box)
        self._offset = 0
        self._outbox_mark = 0
        self._task: asyncio.Task[None] | None = None
        catalog = SchemaCatalog.load(self.settings.schemas_dir)
        if self.real:
            await self._enter_real(catalog)
            return self
        self._serde = EventSerde(MemoryRegistry(), catalog)
        self._letters = _DeadLetters()
        if self.database is None:
            self._memory_outbox = _MemoryOutbox(self.settings, self._serde)
            self._seen: set[str] = set()
            return self
        await migrate(self.database)
        self._outbox_mark = await self._outbox_top()
        self._inbox = self._make_inbox(KafkaAccess("in-process:0"))
        self._inbox._dead_letters = self._letters  # type: ignore[assignment]
        # Its positions are made up: kept apart from the box's real inbox, which a later run on
        # the real stack (or production) resumes from.
        self._inbox.group_id += ".boxtest"
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._task is not None:
            self._inbox.stop()
            await asyncio.wait_for(self._task, 30)

    def _make_inbox(self, kafka: KafkaAccess) -> Inbox:
        assert self.settings is not None and self.database is not None
        return Inbox(self.settings, self.database, kafka, self.box, self.handlers, self._serde,
                     max_attempts=self.max_attempts, base_delay=0.01, max_retry_seconds=30)

    # -- delivering ---------------------------------------------------------------------------

    async def deliver(self, *events: EventBase) -> Outcome:
        """Deliver ``events`` to the box in this order; the outcome of the last one (all of
        them are in :attr:`outcomes`)."""
        if not events:
            raise ValueError("deliver() needs at least one event")
        encoded = [await self._serde.encode(e, self._topic) for e in events]
        if self.real:
            found = await self._deliver_real(encoded)
        elif self.database is None:
            found = [await self._deliver_in_memory(e) for e in encoded]
        else:
            found = await self._deliver_on_postgres(encoded)
        self.outcomes += found
        await self._collect_published()
        return found[-1]

    def _records(self, encoded: list[EncodedEvent]) -> list[KafkaRecord]:
        records: list[KafkaRecord] = []
        for e in encoded:
            records.append(PlainRecord(self._topic, 0, self._offset, int(time.time() * 1000),
                                   e.key, e.value, list(e.headers)))
            self._offset += 1
        return records

    async def _deliver_in_memory(self, encoded: EncodedEvent) -> Outcome:
        assert self.settings is not None
        (record,) = self._records([encoded])
        envelope = encoded.envelope
        try:
            checked = await check_record(record, self._serde, self.settings.topic_namespace)
        except BadEvent as exc:
            return Outcome(envelope.id, envelope.type, DEAD_LETTERED, exc.message, exc.code)
        if envelope.id in self._seen:
            return Outcome(envelope.id, envelope.type, DUPLICATE)
        self._seen.add(envelope.id)
        handler = self.handlers.single(envelope.type)
        if handler is None:
            return Outcome(envelope.id, envelope.type, REJECTED,
                           f"box {self.box} has no handler for {envelope.type}")
        applied = Applied(cast(asyncpg.Connection, _NoDatabase()), envelope, record.topic,
                          record.partition, record.offset, self._memory_outbox,
                          record.timestamp, self.box)
        for attempt in range(1, self.max_attempts + 1):
            kept = len(self._memory_outbox.published)
            try:
                async with applied.conn.transaction():
                    await handler(checked.event, applied)
            except Rejected as exc:
                del self._memory_outbox.published[kept:]
                return Outcome(envelope.id, envelope.type, REJECTED, exc.message)
            except Exception as exc:
                del self._memory_outbox.published[kept:]  # rolled back with the effect
                if _transient(exc) and attempt < self.max_attempts:
                    continue
                reason = (f"gave up after {attempt} attempts: {exc}" if _transient(exc)
                          else f"handler raised {exc.__class__.__name__}: {exc}")
                return Outcome(envelope.id, envelope.type, REJECTED, reason)
            return Outcome(envelope.id, envelope.type, APPLIED)
        raise AssertionError("unreachable")

    async def _deliver_on_postgres(self, encoded: list[EncodedEvent]) -> list[Outcome]:
        records = self._records(encoded)
        tp = TopicPartition(self._topic, 0)
        before = await self._statuses([e.envelope.id for e in encoded])
        while True:
            try:
                checked = await self._inbox._pipeline.run(records)
                await self._inbox._apply([_Part(tp, records, checked)])
                break
            except _Retrying:
                await asyncio.sleep(0.01)  # the inbox counts the attempts, then rejects
        return await self._outcomes(encoded, before)

    async def _outcomes(self, encoded: list[EncodedEvent], before: dict[str, str]
                        ) -> list[Outcome]:
        after = await self._statuses([e.envelope.id for e in encoded])
        found = []
        for offset, e in zip(range(self._offset - len(encoded), self._offset), encoded,
                             strict=True):
            env, letter = e.envelope, self._letters.letters.get((0, offset))
            if letter is not None and env.id not in after:
                found.append(Outcome(env.id, env.type, DEAD_LETTERED, letter.message,
                                     letter.code))
            elif env.id in before:
                found.append(Outcome(env.id, env.type, DUPLICATE))
            elif after.get(env.id) == "applied":
                found.append(Outcome(env.id, env.type, APPLIED))
            else:
                found.append(Outcome(env.id, env.type, REJECTED,
                                     letter.message if letter else after.get(env.id)))
        return found

    # -- the real stack -----------------------------------------------------------------------

    async def _enter_real(self, catalog: SchemaCatalog) -> None:
        from bus.devstack import LocalStack
        from bus.registry import SchemaRegistry
        from bus.topics import TopicSpec, ensure_topics

        assert self.settings is not None
        if self.database is None:
            raise ConfigError("BoxTest(real=True) needs database=: the inbox of the real stack "
                              "applies events in the box's PostgreSQL")
        info = None if self.settings.kafka_bootstrap_servers else LocalStack(
            self.settings).status()
        if self.settings.kafka_bootstrap_servers:
            kafka = KafkaAccess.from_settings(self.settings)
            registry_url = self.settings.schema_registry_url
        elif info is not None and info.kafka_bootstrap:
            kafka, registry_url = info.kafka_access(self.settings), info.schema_registry_url
        else:
            raise ConfigError("BoxTest(real=True) finds no stack",
                              hint="`boxbus dev up`, or set BOXBUS_KAFKA_BOOTSTRAP_SERVERS "
                              "and BOXBUS_SCHEMA_REGISTRY_URL")
        if registry_url is None:
            raise ConfigError("BoxTest(real=True) finds no schema registry",
                              hint="set BOXBUS_SCHEMA_REGISTRY_URL")
        self._kafka = kafka
        self._serde = EventSerde(SchemaRegistry(registry_url), catalog)
        self._letters = _DeadLetters()
        await ensure_topics(kafka, [TopicSpec(self._topic, 1)])
        await migrate(self.database)
        self._outbox_mark = await self._outbox_top()
        self._inbox = self._make_inbox(kafka)
        await self._start_at_the_end(kafka)
        self._task = asyncio.create_task(self._inbox.run())

    async def _start_at_the_end(self, kafka: KafkaAccess) -> None:
        """The inbox topic outlives a test: this one's inbox starts after what earlier runs
        left there, so it sees only what this test delivers."""
        from bus.topics import partitions_of

        consumer = kafka.consumer(enable_auto_commit=False)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(await partitions_of(kafka, self._topic))
        finally:
            await consumer.stop()
        conn = await asyncpg.connect(self.database)
        try:
            await conn.executemany(
                "INSERT INTO boxbus_inbox_offsets (consumer, topic, partition, next_offset) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (consumer, topic, partition) DO UPDATE "
                "SET next_offset = excluded.next_offset",
                [(self._inbox.group_id, tp.topic, tp.partition, end)
                 for tp, end in ends.items()])
        finally:
            await conn.close()

    async def _deliver_real(self, encoded: list[EncodedEvent]) -> list[Outcome]:
        from bus.deadletter import DeadLetter
        from bus.topics import read_topic

        before = await self._statuses([e.envelope.id for e in encoded])
        producer = self._kafka.producer(acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for e in encoded:
                await producer.send_and_wait(self._topic, e.value, key=e.key,
                                             headers=list(e.headers))
        finally:
            await producer.stop()
        ids = {e.envelope.id for e in encoded}
        async with asyncio.timeout(60):
            while True:
                assert self._task is not None
                if self._task.done():
                    self._task.result()  # the inbox stopped: say why
                done = await self._statuses(sorted(ids))
                letters = await read_topic(self._kafka, naming.dlq_topic(self._topic))
                lettered = {}
                for r in letters:
                    letter = DeadLetter.from_record(r)
                    lettered[dict(letter.headers).get("ce_id", b"").decode()] = letter
                if all(i in done or i in lettered for i in ids):
                    break
                await asyncio.sleep(0.1)
        self._offset += len(encoded)
        for offset, e in zip(range(self._offset - len(encoded), self._offset), encoded,
                             strict=True):
            found = lettered.get(e.envelope.id)
            if found is not None:
                error = BadEvent(found.reason)
                error.code = found.code
                self._letters.letters[(0, offset)] = error
        return await self._outcomes(encoded, before)

    # -- the box's database -------------------------------------------------------------------

    async def _statuses(self, ids: list[str]) -> dict[str, str]:
        conn = await asyncpg.connect(self.database)
        try:
            rows = await conn.fetch("SELECT event_id, status FROM boxbus_inbox_events "
                                    "WHERE event_id = ANY($1::text[])", ids)
        finally:
            await conn.close()
        return {r["event_id"]: r["status"] for r in rows}

    async def _outbox_top(self) -> int:
        conn = await asyncpg.connect(self.database)
        try:
            return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM boxbus_outbox"))
        finally:
            await conn.close()

    async def _collect_published(self) -> None:
        if self.database is None and not self.real:
            self.published = list(self._memory_outbox.published)
            return
        conn = await asyncpg.connect(self.database)
        try:
            rows = await conn.fetch("SELECT id, record_value FROM boxbus_outbox WHERE id > $1 "
                                    "ORDER BY id", self._outbox_mark)
        finally:
            await conn.close()
        for row in rows:
            self.published.append(await self._serde.decode(row["record_value"]))
            self._outbox_mark = row["id"]
