"""The relay: moves committed outbox rows to Kafka, in order, and deletes them once the
brokers acknowledged them.

One relay is active per box database: it holds a PostgreSQL advisory lock for as long as its
session lives. A second relay for the same box waits as a standby and takes over when the
active one's connection ends (a crash, SIGKILL, a network cut), so the two never publish the
same rows at once and never reorder them.

Each round, step by step, and what happens on failure at each step:

1. Read up to ``batch_size`` committed rows in ``id`` order. Ids are taken at insert time; the
   transactions that write events of one aggregate serialise on that aggregate (its row lock
   in the box), so within an aggregate id order is commit order, and that is the order
   published. Events of different aggregates may interleave differently; nothing relies on
   that. Failure: nothing happened; retry after a backoff.
2. Send them with an idempotent producer (acks from all in-sync replicas); same key, same
   partition, in id order. Failure (broker down, timeout): nothing is deleted; the producer is
   recreated and the whole batch is sent again after a backoff. Rows already written before the
   failure are written twice: consumers deduplicate by event id.
3. Delete the rows the brokers acknowledged. Failure (database gone, process killed between 2
   and 3): the rows stay and are published again by the next round or the next relay —
   again a duplicate, never a loss.

A lost database session at any step (every way asyncpg reports one: ``bus.db.session_lost``)
ends the session, not the process: the producer is stopped, the connection dropped (and the
lock with it), and the relay reconnects after a pause and starts again at step 1.

It sleeps on ``LISTEN boxbus_outbox`` (the outbox notifies at commit) with a polling fallback.

A row whose topic does not exist (a region never applied, a typo in an explicit topic) would
block every later event of the box. When the brokers answer but do not know a topic, its rows
are *parked*: moved, in one statement, to ``boxbus_outbox_parked`` with the reason, and later
rows of that topic follow them there while the topic is missing (the brokers are asked again
before each parking), so that topic's order is kept while the others flow.
``unpark`` (``boxbus relay unpark``) puts them back in their original order, behind what the
outbox holds at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from opentelemetry.trace import Span

from bus import tracing
from bus.db import end_session, session_lost
from bus.kafka import KafkaAccess, start_or_close
from bus.log import get_logger
from bus.settings import Settings
from connectors.box.outbox import CHANNEL, headers_from_json

# Acknowledged rows leave the outbox; the tracked ones among them are marked sent (business
# receipts), in the same statement.
# The tracked rows are locked in event id order, as the inbox's receipts lock them: the two
# never wait on each other in a circle (a deadlock).
DELETE_SENT = """
    WITH gone AS (DELETE FROM boxbus_outbox WHERE id = ANY($1::bigint[]) RETURNING event_id),
    mine AS (SELECT event_id FROM boxbus_sent WHERE event_id IN (SELECT event_id FROM gone)
             AND sent_at IS NULL ORDER BY event_id FOR UPDATE)
    UPDATE boxbus_sent SET sent_at = clock_timestamp() FROM mine
    WHERE boxbus_sent.event_id = mine.event_id"""

log = get_logger(__name__)


def lock_key(box_id: str) -> int:
    """The advisory lock of one box's relay (a stable 31-bit number)."""
    return zlib.crc32(f"boxbus-relay:{box_id}".encode()) & 0x7FFFFFFF


@dataclass(frozen=True)
class Backlog:
    rows: int
    oldest: datetime | None
    age_seconds: float
    parked: int = 0  # rows set aside because their topic does not exist


async def backlog(conn: asyncpg.Connection) -> Backlog:
    row = await conn.fetchrow(
        "SELECT count(*) AS n, min(created_at) AS oldest, "
        "coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0) AS age, "
        "(SELECT count(*) FROM boxbus_outbox_parked) AS parked "
        "FROM boxbus_outbox")
    assert row is not None
    return Backlog(int(row["n"]), row["oldest"], float(row["age"]), int(row["parked"]))


PARK = """
    WITH moved AS (DELETE FROM boxbus_outbox WHERE id = ANY($1::bigint[]) RETURNING *)
    INSERT INTO boxbus_outbox_parked (id, event_id, event_type, topic, record_key,
                                      record_value, headers, created_at, reason)
    SELECT id, event_id, event_type, topic, record_key, record_value, headers, created_at, $2
    FROM moved"""


async def unpark(conn: asyncpg.Connection, topic: str | None = None) -> int:
    """Put parked rows (of ``topic``, or all) back into the outbox in their original order;
    the relay publishes them after the rows waiting there now. Returns how many."""
    async with conn.transaction():
        moved = await conn.fetch(
            "DELETE FROM boxbus_outbox_parked WHERE $1::text IS NULL OR topic = $1 "
            "RETURNING id, event_id, event_type, topic, record_key, record_value, headers, "
            "created_at", topic)
        await conn.executemany(
            "INSERT INTO boxbus_outbox (event_id, event_type, topic, record_key, "
            "record_value, headers, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) "
            "ON CONFLICT (event_id) DO NOTHING",
            [(r["event_id"], r["event_type"], r["topic"], r["record_key"], r["record_value"],
              r["headers"], r["created_at"]) for r in sorted(moved, key=lambda r: r["id"])])
    return len(moved)


class Relay:
    def __init__(
        self,
        settings: Settings,
        dsn: str,
        kafka: KafkaAccess,
        box_id: str,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        max_backoff: float = 10.0,
        **producer_options: Any,
    ) -> None:
        self.settings = settings
        self.dsn = dsn
        self.kafka = kafka
        self.box_id = box_id
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.producer_options = producer_options
        self._missing: set[str] = set()  # topics the brokers denied
        self.published = 0
        self.parked = 0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self.active = asyncio.Event()  # set while this relay holds the box's lock

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Run until ``stop()``: wait for the box's lock, then relay."""
        while not self._stop.is_set():
            try:
                await self._run_session()
            except _Stopped:
                return
            except Exception as exc:
                if session_lost(exc):
                    log.warning("relay lost its database; reconnecting", box=self.box_id,
                                error=repr(exc))
                elif isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
                    # The database answers but refuses (tables not migrated, no privilege):
                    # worth a loud retry, not an exit.
                    log.error("relay's database refused a statement; retrying",
                              box=self.box_id, error=repr(exc))
                else:
                    raise
                self.active.clear()
                await self._pause(1.0)

    async def _run_session(self) -> None:
        # Keepalives let the server notice a relay that vanished (a cut network) within
        # about half a minute, and release its lock to the standby.
        conn = await asyncpg.connect(self.dsn, server_settings={
            "tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5",
            "tcp_keepalives_count": "3"})
        try:
            await self._acquire(conn)
            if self._stop.is_set():
                return
            self.active.set()
            log.info("relay active", box=self.box_id)
            await conn.add_listener(CHANNEL, lambda *_: self._wake.set())
            await self._relay(conn)
        finally:
            self.active.clear()
            await end_session(conn)  # ends the session: the lock goes with it

    async def _acquire(self, conn: asyncpg.Connection) -> None:
        waiting_logged = False
        while not self._stop.is_set():
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(self.box_id)):
                return
            if not waiting_logged:
                log.info("another relay is active for this box; standing by", box=self.box_id)
                waiting_logged = True
            await self._pause(self.poll_interval)

    async def _relay(self, conn: asyncpg.Connection) -> None:
        backoff = 0.2
        producer = await self._producer()
        try:
            while not self._stop.is_set():
                self._wake.clear()
                rows = await conn.fetch(
                    "SELECT id, event_id, topic, record_key, record_value, headers "
                    "FROM boxbus_outbox ORDER BY id LIMIT $1", self.batch_size)
                if not rows:
                    await self._idle(self.poll_interval)
                    continue
                rows = await self._park_missing(conn, producer, rows)
                if not rows:
                    continue
                spans: list[Span] = []
                try:
                    futures = [await producer.send(
                        row["topic"], row["record_value"], key=row["record_key"],
                        headers=self._traced(row, spans)) for row in rows]
                    await asyncio.gather(*futures)
                except KafkaError as exc:
                    tracing.end(spans, exc)
                    if await self._note_missing(producer, rows):
                        continue  # the next round parks their rows; the others go on
                    log.warning("brokers did not acknowledge; the batch is sent again",
                                box=self.box_id, rows=len(rows), error=repr(exc),
                                retry_in=round(backoff, 2))
                    await producer.stop()
                    await self._pause(backoff * (0.5 + random.random()))
                    backoff = min(backoff * 2, self.max_backoff)
                    producer = await self._producer()
                    continue
                except BaseException as exc:  # stopped, or a bug: the spans end all the same
                    tracing.end(spans, exc)
                    raise
                tracing.end(spans)  # acknowledged by the brokers
                backoff = 0.2
                await conn.execute(DELETE_SENT, [row["id"] for row in rows])
                self.published += len(rows)
                log.debug("relayed", box=self.box_id, rows=len(rows),
                          last_event_id=rows[-1]["event_id"])
        finally:
            await producer.stop()

    def _traced(self, row: asyncpg.Record, spans: list[Span]) -> list[tuple[str, bytes]]:
        """The row's headers; with tracing on, a relay span becomes the event's context."""
        headers = headers_from_json(row["headers"])
        if not tracing.enabled():
            return headers
        span = tracing.start("boxbus.relay", tracing.PRODUCER, headers,
                             **{"boxbus.box": self.box_id, "boxbus.event_id": row["event_id"]})
        spans.append(span)
        return tracing.with_span(headers, span)

    async def _park_missing(self, conn: asyncpg.Connection, producer: AIOKafkaProducer,
                            rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
        """Park the rows of topics the brokers denied and still deny; the rows left to send."""
        if not self._missing & {row["topic"] for row in rows}:
            return rows
        await self._note_missing(producer, rows)  # it may exist by now (created, unparked)
        parked = [row for row in rows if row["topic"] in self._missing]
        if not parked:
            return rows
        await conn.execute(PARK, [row["id"] for row in parked],
                           "the topic does not exist, or this box may not write it (a box "
                           "publishes into its own ingress topic only)")
        self.parked += len(parked)
        for topic in sorted({row["topic"] for row in parked}):
            log.error("events parked: their topic does not exist", box=self.box_id, topic=topic,
                      rows=sum(row["topic"] == topic for row in parked),
                      hint="create the topic (boxbus topology apply), then "
                           f"`boxbus relay unpark --box {self.box_id} --topic {topic}`")
        return [row for row in rows if row["topic"] not in self._missing]

    async def _note_missing(self, producer: AIOKafkaProducer,
                            rows: list[asyncpg.Record]) -> bool:
        """After a failed send: did the brokers answer and deny some of the batch's topics?"""
        try:
            cluster = await producer.client.fetch_all_metadata()
        except KafkaError:
            return False  # the brokers do not answer: an outage, not a missing topic
        if not cluster.brokers():
            return False
        topics = {row["topic"] for row in rows}
        known = set(cluster.topics())
        self._missing = (self._missing - known) | (topics - known)
        return bool(topics - known)

    async def _producer(self) -> AIOKafkaProducer:
        options = {"linger_ms": 5, "request_timeout_ms": 10000, **self.producer_options}
        while True:
            producer = self.kafka.producer(acks="all", enable_idempotence=True, **options)
            try:
                await start_or_close(producer, self.kafka)
                return producer
            except KafkaError as exc:
                # (A refused login is not waited out: start_or_close raised it as
                # KafkaAccessDenied, which ends the relay with its reason.)
                log.warning("brokers unreachable; the outbox waits", box=self.box_id,
                            error=repr(exc))
                await self._pause(1.0)
                if self._stop.is_set():
                    raise _Stopped from exc

    async def _idle(self, seconds: float) -> None:
        """Wait for work: a NOTIFY (a transaction with events committed), stop(), or the
        polling interval."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def _pause(self, seconds: float) -> None:
        """A backoff: only stop() cuts it short (a NOTIFY must not, or an outage spins)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)


class _Stopped(Exception):
    """stop() was called while the relay waited for the brokers."""
