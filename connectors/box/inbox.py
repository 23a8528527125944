"""The inbox: applies the events that reach a box exactly once, in order per aggregate.

Handlers are plain async functions registered per event type (:mod:`connectors.box.handlers`);
each gets the event and an ``Applied`` context whose ``conn`` is the open transaction of the
box's database, so the effect (a sales order created, goods marked in transit) commits together
with the progress. What the inbox knows of its partitions is :mod:`connectors.box.inbox_state`;
every record goes through :mod:`bus.pipeline` first.

The commit protocol, per partition and per fetched batch of it, step by step, with what
happens on failure at each step:

1. Check every record (headers, wire format, schema, body, and for the types the network
   signs, the sender's signature: :mod:`connectors.box.signatures`). A record that is not a
   valid event is written to the dead-letter topic now. Failure while writing it (Kafka down): the
   exception ends this round; nothing was committed in PostgreSQL; the batch is read again.
2. ``BEGIN`` a transaction in the box's PostgreSQL.
3. One ``INSERT INTO boxbus_inbox_events`` records the ids of every valid event of the batch;
   an id already there was applied before (a redelivery) and is skipped. The handlers run in
   offset order (consecutive events of a batch handler together). On this fast path there is
   no savepoint; if any handler fails, the transaction is rolled back and the batch applied
   again on the careful path, each handler inside a ``SAVEPOINT``:
   - success: keep the effect; with receipts on, write an ACCEPTED DeliveryReceipt into the
     box's own outbox (same transaction);
   - ``Rejected`` (or another non-retriable error, or a retriable one whose attempts are used
     up): roll back to the savepoint (no half effect), dead-letter the event with the reason,
     record it as dead-lettered, write a REJECTED receipt, go on with the next event;
   - ``Retry``, a retriable boxbus error, or a serialization failure / deadlock in
     PostgreSQL: roll the whole transaction back (step 6).
4. Upsert ``boxbus_inbox_offsets`` (consumer, topic, partition) to the next offset.
5. ``COMMIT``. The effect, the dedupe record and the offset become durable together, or none
   of them does. A crash anywhere before this point (SIGKILL, PostgreSQL gone) rolls back
   everything: the batch is read again from the stored offset and applied once.
6. On ``Retry``: rollback, seek the partition back to the batch's first offset, pause it for
   an exponential backoff with jitter, and go on with the other partitions; after
   ``max_attempts`` or ``max_retry_seconds`` the event is treated as rejected.

The box's database session lost at any step (PostgreSQL killed or restarting; every way
asyncpg reports it: ``bus.db.session_lost``) is the crash of step 5 without the crash: nothing
was committed, the connection is dropped and reopened, and the batch is read again from its
first offset after a pause. That holds inside a handler too: a handler that fails because the
session is gone has not failed, so its event is neither retried as ``Retry`` nor dead-lettered.

Kafka's own committed offsets are not relied on: on assignment the consumer seeks each partition
to the offset stored in PostgreSQL, or to the log's start where none is stored yet. The
stored positions are mirrored to the group's Kafka offsets about once a second, for lag tools
only.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from bus import tracing
from bus.db import end_session, session_lost
from bus.deadletter import DeadLetterWriter
from bus.envelope import Envelope
from bus.errors import BadEvent, BoxbusError, ConfigError, RegistryUnavailable, UnknownEventType
from bus.events import EventBase
from bus.events.models import DeliveryReceipt, EventMeta, ReceiptStatus
from bus.kafka import KafkaAccess, LoginWatch, start_or_close
from bus.log import get_logger
from bus.naming import inbox_topic
from bus.pipeline import HandBack, Once, Pipeline
from bus.record import KafkaRecord
from bus.serde import EventSerde
from bus.settings import Settings
from bus.validation import Checked, check_record
from connectors.box.handlers import (
    Applied,
    BatchHandler,
    Handler,
    HandlerRejected,
    Handlers,
    Rejected,
    UnknownTypePolicy,
)
from connectors.box.inbox_state import InboxState, RetryPolicy
from connectors.box.outbox import BUS_ANSWERS, RPC_PREFIX, Outbox
from connectors.box.signatures import SignatureCheck
from connectors.box.tracking import with_tracking

log = get_logger(__name__)

Identity = Callable[[KafkaRecord, Envelope], str]


def _event_id(record: KafkaRecord, envelope: Envelope) -> str:
    return envelope.id


_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization, deadlock, lock not available


def _transient(error: BaseException) -> bool:
    """Errors worth another try: Retry, a retriable boxbus error, a conflict in PostgreSQL."""
    if isinstance(error, BoxbusError):
        return error.retriable
    return getattr(error, "sqlstate", None) in _TRANSIENT_SQLSTATES


class _Careful(Exception):
    """A handler failed on the fast path: apply the batch again with savepoints."""


class _DatabaseLost(Exception):
    """A handler failed because the box's database session is gone: not the handler's fault;
    the batch is read again once the database answers."""


def _database_trouble(exc: BaseException) -> bool:
    """The box's database cannot do the inbox's own work now: its session is lost, or it
    refuses the inbox's statements (tables not migrated, no privilege). Nothing of the batch
    was committed; it is read again later."""
    return (isinstance(exc, _DatabaseLost) or session_lost(exc)
            or isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError))


def _raise_if_lost(exc: BaseException, conn: asyncpg.Connection) -> None:
    """Called with a handler's error: re-raised as _DatabaseLost when it is in fact the
    inbox's session that is gone, before the error is held against the event."""
    if session_lost(exc, conn):
        raise _DatabaseLost(repr(exc)) from exc


class _Retrying(Exception):
    """A handler asked to retry the record at ``offset`` of ``tp`` (or failed for a reason
    worth another try): that partition is rolled back and paused, the others go on."""

    def __init__(self, tp: TopicPartition, offset: int, first_offset: int,
                 cause: BaseException) -> None:
        super().__init__(str(cause))
        self.tp = tp
        self.offset = offset
        self.first_offset = first_offset
        self.cause = cause


@dataclass(frozen=True)
class _Part:
    """A partition's share of a fetch: its records and what the checks made of each."""

    tp: TopicPartition
    records: list[KafkaRecord]
    checked: list[Checked | None]

    @property
    def first_offset(self) -> int:
        return self.records[0].offset

    @property
    def next_offset(self) -> int:
        return self.records[-1].offset + 1


class Inbox:
    def __init__(
        self,
        settings: Settings,
        dsn: str,
        kafka: KafkaAccess,
        box_id: str,
        handlers: Handlers,
        serde: EventSerde,
        *,
        topics: list[str] | None = None,
        unknown_types: UnknownTypePolicy = UnknownTypePolicy.DEAD_LETTER,
        receipts: bool = False,
        region: str | None = None,
        outbox: Outbox | None = None,
        max_attempts: int = 5,
        max_retry_seconds: float = 60.0,
        base_delay: float = 0.2,
        max_records: int = 1000,
        fetch_max_wait_ms: int = 20,
        login_check_every: float = 30.0,
        group_id: str | None = None,
        identity: Identity | None = None,
        track: bool = False,
    ) -> None:
        self.settings = settings
        self.dsn = dsn
        self.box_id = box_id
        # With ``track``, the router's reports and the recipients' receipts of what this box
        # sent update its business receipts (connectors.box.tracking) before its own handlers.
        self.handlers = with_tracking(handlers) if track else handlers
        self.serde = serde
        self.topics = topics or [inbox_topic(settings.topic_namespace, box_id)]
        self.group_id = group_id or f"{settings.topic_namespace}.box.{box_id}.inbox"
        # What makes a record a duplicate of one applied before: its event id, unless the
        # consumer says otherwise (the mailer: the event id and the partner it is for).
        self.identity: Identity = identity or _event_id
        self.unknown_types = unknown_types
        if receipts and region is None:
            # A receipt is this box's event: it must carry this box's region, or the router
            # takes it for a forged one.
            raise ConfigError("delivery receipts need the box's region",
                              hint="pass region= (`boxbus inbox run --receipts --region R`)")
        self.receipts = receipts
        self.region = region
        self._signatures = SignatureCheck(kafka, settings.topic_namespace)
        self.outbox = outbox or Outbox(settings, serde)
        # Positions, readiness and attempts of each partition: plain data, changed only
        # through its transitions (the listener's and the loop's).
        self.state = InboxState(RetryPolicy(max_attempts, max_retry_seconds, base_delay))
        self.max_records = max_records
        # How long the broker may hold a fetch to fill it: the floor of the inbox's latency
        # when traffic is light (aiokafka's default is 500 ms).
        self.fetch_max_wait_ms = fetch_max_wait_ms
        # Quiet seconds after which the inbox asks the brokers whether its login still holds.
        self.login_check_every = login_check_every
        self.applied = 0
        self.duplicates = 0
        self.kafka = kafka
        self._stop = asyncio.Event()
        self._pipeline: Pipeline[Checked] = Pipeline(self._check, self._dead_letter)
        self._rejections = Once()  # events the handlers rejected, dead-lettered once
        self._rejected = 0
        self._conn: asyncpg.Connection | None = None
        self._applying: asyncio.Task[dict[TopicPartition, int]] | None = None

    def stop(self) -> None:
        """Finish the partition batch being applied, then stop."""
        self._stop.set()

    async def run(self) -> None:
        # Kafka clients belong to the running event loop: made here, not in __init__.
        self._consumer = self.kafka.consumer(
            group_id=self.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed", fetch_max_wait_ms=self.fetch_max_wait_ms)
        self._dead_letters = DeadLetterWriter(self.kafka, self.group_id)
        self._login = LoginWatch(self.kafka, self.login_check_every)
        await self._signatures.load()
        await self._dead_letters.start(self.topics)
        self._consumer.subscribe(self.topics, listener=_SeekToStoredOffsets(self))
        try:
            await start_or_close(self._consumer, self.kafka)
        except BaseException:
            await self._dead_letters.stop()
            raise
        try:
            # A refused login (a rotated password) ends the inbox with KafkaAccessDenied
            # rather than a wait without end (LoginWatch); a batch it interrupts is rolled
            # back, and applied from its stored offset next time.
            async with self._login.running():
                while not self._stop.is_set():
                    async with self._login.guard():
                        fetched = await self._consumer.getmany(
                            timeout_ms=500, max_records=self.max_records)
                        if fetched:
                            self._login.records_arrived()
                        # The checks of this fetch run while the previous one commits.
                        parts, pause = await self._check_fetch(fetched)
                        set_back = await self._applied()
                        # A partition the batch before set back: what this fetch holds of it
                        # is not applied now, and it is sought back again (this fetch may
                        # have moved it past the offset the batch set it back to).
                        parts = [p for p in parts if p.tp not in set_back]
                        for tp, offset in set_back.items():
                            self.state.set_back(tp)
                            self._seek(tp, offset)
                        # Not a partition revoked while the batch before was applied.
                        owned = self._consumer.assignment()
                        parts = [p for p in parts
                                 if p.tp in owned and self.state.is_ready(p.tp)]
                        for part in parts:
                            self.state.taken(part.tp, part.next_offset)
                        if parts:
                            self._applying = asyncio.create_task(self._apply_fetch(parts))
                        if pause:
                            await asyncio.sleep(
                                self.state.retry.base_delay * (2 + random.random()))
                        await self._mirror_offsets()
                async with self._login.guard():
                    await self._applied()  # the batch in flight ends before the inbox stops
        finally:
            if self._applying is not None:
                # An error ended the loop: the batch in flight is rolled back (nothing of it
                # is stored; it is read again from the stored offsets).
                self._applying.cancel()
                try:
                    await self._applied()
                except (Exception, asyncio.CancelledError) as exc:  # the loop's error goes up
                    if not isinstance(exc, asyncio.CancelledError):
                        log.warning("the batch in flight failed as the inbox stopped",
                                    box=self.box_id, error=repr(exc))
            with contextlib.suppress(Exception):
                await self._mirror_offsets(force=True)
            await self._consumer.stop()
            await self._dead_letters.stop()
            if self._conn is not None:
                await end_session(self._conn)

    async def _mirror_offsets(self, *, force: bool = False) -> None:
        """Copy the stored positions to Kafka's group offsets, at most once a second, so
        consumer-lag tools (kafka-consumer-groups, exporters) see the inbox's progress. Only a
        mirror: PostgreSQL stays the truth, and a failed copy is retried next time. It never
        runs ahead of PostgreSQL: a position is taken only once its COMMIT returned (a batch
        whose commit a lost session left in doubt is read again first, its ids skipped)."""
        offsets = self.state.to_mirror(self._consumer.assignment(), time.monotonic(),
                                       force=force)
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (KafkaError, IllegalStateError) as exc:
            log.debug("group offsets not mirrored this time", box=self.box_id, error=repr(exc))
            return
        self.state.mirrored(offsets)

    async def _db(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.dsn)
        return self._conn

    async def stored_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        # Its own connection: the rebalance listener runs in aiokafka's coordinator task,
        # possibly while the main task is using the batch connection.
        # A short connect timeout: a rebalance waits for the listener.
        conn = await asyncpg.connect(self.dsn, timeout=5)
        try:
            rows = await conn.fetch(
                "SELECT topic, partition, next_offset FROM boxbus_inbox_offsets "
                "WHERE consumer = $1", self.group_id)
        finally:
            await end_session(conn)
        stored = {TopicPartition(r["topic"], r["partition"]): r["next_offset"] for r in rows}
        return {tp: stored[tp] for tp in tps if tp in stored}

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        # A partition taken away by a rebalance meanwhile is its new owner's business.
        with contextlib.suppress(IllegalStateError):
            self._consumer.seek(tp, offset)

    async def start_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Where each partition resumes: its offset stored in PostgreSQL, or the start of the
        log where none is stored (a new box). Never Kafka's committed offsets: they are only
        a mirror, and a box database restored or recreated must not skip what it lacks."""
        stored = await self.stored_offsets(tps)
        missing = [tp for tp in tps if tp not in stored]
        if missing:
            stored |= await self._consumer.beginning_offsets(missing)
        return stored

    async def _place(self, tp: TopicPartition, fallback: int) -> bool:
        """Place a partition at its start offset if the rebalance listener could not (records
        of a new assignment can arrive before it ran, or it failed to read PostgreSQL)."""
        try:
            start = (await self.start_offsets([tp]))[tp]
        except Exception as exc:
            if not (isinstance(exc, KafkaError) or _database_trouble(exc)):
                raise
            log.warning("cannot read the stored offset yet; the partition waits",
                        box=self.box_id, error=repr(exc), topic=tp.topic,
                        partition=tp.partition)
            self._seek(tp, fallback)
            await asyncio.sleep(self.state.retry.base_delay)
            return False
        self.state.placed(tp, start)
        self._seek(tp, start)
        return start == fallback

    async def _ready(self, tp: TopicPartition, records: list[KafkaRecord]
                     ) -> list[KafkaRecord]:
        """The records of a partition that are this inbox's to apply now (none if it was
        revoked, or placed elsewhere, meanwhile)."""
        if tp not in self._consumer.assignment():
            return []  # revoked while this fetch was taken apart
        if not self.state.is_ready(tp) and not await self._place(tp, records[0].offset):
            return []  # placed elsewhere: the records come again from there
        known = self.state.resume_at(tp, records[0].offset)
        if known is not None:
            # The consumer fetched from before the stored position (aiokafka may reset a
            # position after the rebalance listener's seek): seek again, apply nothing twice.
            self._seek(tp, known)
            records = [r for r in records if r.offset >= known]
        return records

    async def _check_fetch(self, fetched: dict[TopicPartition, list[KafkaRecord]]
                           ) -> tuple[list[_Part], bool]:
        """Check every partition of a fetch: the batches to apply, and whether a dependency of
        the checks was away (those partitions are read again after a pause)."""
        parts: list[_Part] = []
        pause = False
        for tp, records in fetched.items():
            if self._stop.is_set():
                # Abandon the rest of the fetch: it was not applied, and the next owner
                # starts from the stored offsets.
                break
            records = await self._ready(tp, records) if records else []
            if not records:
                continue
            try:
                parts.append(_Part(tp, records, await self._pipeline.run(records)))
            except (HandBack, RegistryUnavailable, KafkaError) as exc:
                # The registry (decoding) or Kafka (dead letters) is away: this partition is
                # read again after a pause; the others go on.
                self._away(tp, records[0].offset, exc)
                pause = True
        return parts, pause

    async def _applied(self) -> dict[TopicPartition, int]:
        """Wait for the fetch being applied; the partitions it sought back (to retry them, or
        because the database or the registry was away) and the offsets it sought them to:
        the records of those fetched since come again and are not applied now."""
        applying, self._applying = self._applying, None
        return await applying if applying is not None else {}

    async def _apply_fetch(self, parts: list[_Part]) -> dict[TopicPartition, int]:
        """Apply the checked batches of a fetch in one transaction. A partition whose handler
        asks to retry is rolled back, sought back and paused on its own; the transaction is
        made again without it, so the others go on. Returns the partitions sought back."""
        set_back: dict[TopicPartition, int] = {}
        assigned = self._consumer.assignment()
        for part in [p for p in parts if p.tp not in assigned]:
            # Revoked since the check: its next owner applies it. Reported as set back too:
            # should the partition come back to this inbox before the main loop looks, the
            # records of the fetch checked meanwhile follow this part and must not be applied
            # past it (seeking an unassigned partition is a no-op).
            self.state.set_back(part.tp)
            set_back[part.tp] = part.first_offset
        parts = [p for p in parts if p.tp in assigned]
        while parts:
            try:
                await self._apply(parts)
                break
            except _Retrying as retrying:
                await self._back_off(retrying)
                set_back[retrying.tp] = retrying.first_offset
                parts = [p for p in parts if p.tp != retrying.tp]
            except (HandBack, RegistryUnavailable, KafkaError) as exc:
                # The registry (receipts) or Kafka (dead letters) is away: nothing was
                # committed; the fetch is read again after a pause.
                for part in parts:
                    self._away(part.tp, part.first_offset, exc)
                set_back.update((p.tp, p.first_offset) for p in parts)
                await asyncio.sleep(self.state.retry.base_delay * (2 + random.random()))
                break
            except Exception as exc:
                if not _database_trouble(exc):
                    raise
                set_back.update((p.tp, p.first_offset) for p in parts)
                await self._database_away(parts, exc)
                break
        return set_back

    def _away(self, tp: TopicPartition, first_offset: int, exc: BaseException) -> None:
        log.warning("registry or Kafka unavailable; the batch is read again", box=self.box_id,
                    error=repr(exc), topic=tp.topic, partition=tp.partition)
        self._seek(tp, first_offset)

    async def _database_away(self, parts: list[_Part], exc: Exception) -> None:
        """The database went away mid-batch (or refused it): nothing of it was committed.
        A fresh connection reads it again once the database answers."""
        where = [f"{p.tp.topic}[{p.tp.partition}]@{p.first_offset}" for p in parts]
        if isinstance(exc, _DatabaseLost) or session_lost(exc):
            log.warning("box database unavailable; the batch is read again", box=self.box_id,
                        error=repr(exc), partitions=where)
        else:
            log.error("box database refused the batch; it is read again", box=self.box_id,
                      error=repr(exc), partitions=where)
        if self._conn is not None and not self._conn.is_closed():
            self._conn.terminate()  # open but maybe stuck: a new session starts clean
        self._conn = None
        for part in parts:
            self._seek(part.tp, part.first_offset)
        await asyncio.sleep(self.state.retry.base_delay * (1 + random.random()))

    async def _check(self, record: KafkaRecord) -> Checked | None:
        """The checked event; raises the BadEvent that sends the record to the dead-letter
        topic (through the pipeline), or None for an unknown type the box skips."""
        try:
            checked = await check_record(record, self.serde, self.settings.topic_namespace)
        except UnknownEventType as exc:
            if self.unknown_types is not UnknownTypePolicy.SKIP:
                raise
            log.info("unknown event type skipped", reason=exc.message, topic=record.topic,
                     partition=record.partition, offset=record.offset)
            return None
        refused = await self._signatures.refused(record, checked.envelope.type)
        if refused is not None:
            raise refused
        return checked

    async def _dead_letter(self, record: KafkaRecord, error: BadEvent) -> None:
        await self._dead_letters.write(record, error)

    async def _reject_once(self, record: KafkaRecord, error: BadEvent) -> None:
        """A batch applied again rejects the same events: each is dead-lettered once."""
        if self._rejections.is_new(record):
            await self._dead_letters.write(record, error)
            self._rejections.done(record)
            self._rejected += 1

    @property
    def dead_lettered(self) -> int:
        """Records dead-lettered: invalid ones and those the handlers rejected."""
        return self._pipeline.dead_lettered + self._rejected

    async def _apply(self, parts: list[_Part]) -> None:
        """Fast path first: the partitions' batches in one transaction without savepoints. If
        a handler fails, the transaction is rolled back and the batches applied again with a
        savepoint around each handler, which isolates the failing event."""
        try:
            await self._apply_batch(parts, careful=False)
        except (_Careful, asyncpg.InFailedSQLTransactionError):
            # (A handler that swallowed a database error aborts the transaction too.)
            await self._apply_batch(parts, careful=True)

    async def _apply_batch(self, parts: list[_Part], *, careful: bool) -> None:
        conn = await self._db()
        rejected: list[tuple[Any, BadEvent]] = []
        applied = duplicates = 0
        # Partition after partition, each in offset order: the order per aggregate holds.
        valid = [(record, item) for part in parts
                 for record, item in zip(part.records, part.checked, strict=True)
                 if item is not None]
        first_offsets = {(p.tp.topic, p.tp.partition): p.first_offset for p in parts}
        async with conn.transaction():
            # One statement records every id of the batch; ids already there are redeliveries.
            ids = [self.identity(r, i.envelope) for r, i in valid]
            fresh = {row["event_id"] for row in await conn.fetch(
                "INSERT INTO boxbus_inbox_events "
                "(event_id, event_type, topic, partition, record_offset, status) "
                "SELECT *, 'applied' FROM unnest($1::text[], $2::text[], $3::text[], "
                "$4::int[], $5::bigint[]) ON CONFLICT (event_id) DO NOTHING "
                "RETURNING event_id",
                ids, [i.envelope.type for _, i in valid],
                [r.topic for r, _ in valid], [r.partition for r, _ in valid],
                [r.offset for r, _ in valid])}
            # Consecutive events of one batch handler, applied together on the fast path.
            run: list[tuple[Any, Applied]] = []
            run_handler: BatchHandler | None = None
            run_headers: Sequence[tuple[str, bytes]] = ()

            async def flush() -> None:
                nonlocal applied, run, run_handler
                if run_handler is not None and run:
                    try:
                        with tracing.stage("boxbus.inbox", tracing.CONSUMER, run_headers,
                                           **{"boxbus.box": self.box_id,
                                              "boxbus.events": len(run)}):
                            await run_handler(run)
                    except Exception as exc:
                        _raise_if_lost(exc, conn)
                        first = run[0][1]
                        if _transient(exc) and self._attempts_left(first.topic,
                                                                   first.partition,
                                                                   first.offset):
                            raise self._retrying(first.topic, first.partition, first.offset,
                                                 first_offsets, exc) from exc
                        raise _Careful from exc
                    applied += len(run)
                    if self.receipts:
                        for _, done in run:
                            await self._receipt(conn, done.envelope, ReceiptStatus.ACCEPTED,
                                                None)
                run, run_handler = [], None

            for (record, item), identity in zip(valid, ids, strict=True):
                event, envelope = item.event, item.envelope
                if identity not in fresh:
                    duplicates += 1
                    continue
                fresh.discard(identity)  # twice in one batch: the second is a duplicate
                batch_handler = self.handlers.batch_by_type.get(envelope.type)
                if batch_handler is not None and not careful:
                    if batch_handler is not run_handler or (run and (
                            run[0][1].topic, run[0][1].partition) != (record.topic,
                                                                        record.partition)):
                        # A run holds one partition's events: a failure in it is that
                        # partition's, retried and paused alone.
                        await flush()
                        run_handler = batch_handler
                    if not run:
                        run_headers = record.headers  # the run's trace: its first event's
                    run.append((event, Applied(conn, envelope, record.topic, record.partition,
                                               record.offset, self.outbox, record.timestamp,
                                               self.box_id, record)))
                    continue
                await flush()
                handler = self.handlers.single(envelope.type)
                if handler is None:
                    if self.unknown_types is UnknownTypePolicy.SKIP:
                        await self._mark(conn, identity, "skipped")
                        continue
                    error: BadEvent = UnknownEventType(
                        f"box {self.box_id} has no handler for {envelope.type}")
                    rejected.append((record, error))
                    await self._mark(conn, identity, "dead-lettered")
                    if self.receipts:
                        await self._receipt(conn, envelope, ReceiptStatus.REJECTED,
                                            error.message)
                    continue
                outcome = await self._run_handler(conn, handler, event, envelope, record,
                                                  first_offsets, careful=careful)
                if outcome is not None:
                    rejected.append((record, outcome))
                    await self._mark(conn, identity, "dead-lettered")
                    if self.receipts:
                        await self._receipt(conn, envelope, ReceiptStatus.REJECTED,
                                            _for_the_sender(outcome))
                else:
                    applied += 1
                    if self.receipts:
                        await self._receipt(conn, envelope, ReceiptStatus.ACCEPTED, None)
            await flush()
            # Dead letters before the commit: a crash after them re-applies the batch and
            # writes them again (a duplicate dead letter, never a lost one).
            for record, error in rejected:
                await self._reject_once(record, error)
            await conn.execute(
                "INSERT INTO boxbus_inbox_offsets (consumer, topic, partition, next_offset) "
                "SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[]) "
                "ON CONFLICT (consumer, topic, partition) DO UPDATE "
                "SET next_offset = excluded.next_offset, updated_at = clock_timestamp()",
                self.group_id, [p.tp.topic for p in parts], [p.tp.partition for p in parts],
                [p.next_offset for p in parts])
        for part in parts:
            self.state.committed(part.tp, part.next_offset, (r.offset for r in part.records))
        self.applied += applied
        self.duplicates += duplicates

    async def _run_handler(self, conn: asyncpg.Connection, handler: Handler, event: EventBase,
                           envelope: Envelope, record: KafkaRecord,
                           first_offsets: dict[tuple[str, int], int], *, careful: bool,
                           ) -> BadEvent | None:
        """None if applied; the reason if rejected. Raises _Retrying to retry the batch, and
        on the fast path _Careful to apply the batch again event by event."""
        applied = Applied(conn, envelope, record.topic, record.partition, record.offset,
                          self.outbox, record.timestamp, self.box_id, record)
        if not careful:
            try:
                with tracing.stage("boxbus.inbox", tracing.CONSUMER, record.headers,
                                   **_span_attributes(envelope, self.box_id)):
                    await handler(event, applied)
            except Exception as exc:
                _raise_if_lost(exc, conn)
                if _transient(exc) and self._attempts_left(record.topic, record.partition,
                                                           record.offset):
                    raise self._retrying(record.topic, record.partition, record.offset,
                                     first_offsets, exc) from exc
                raise _Careful from exc
            return None
        savepoint = conn.transaction()
        await savepoint.start()
        try:
            with tracing.stage("boxbus.inbox", tracing.CONSUMER, record.headers,
                               **_span_attributes(envelope, self.box_id)):
                await handler(event, applied)
        except Rejected as exc:
            _raise_if_lost(exc, conn)  # refused for want of a database: not a refusal
            await savepoint.rollback()
            return HandlerRejected(exc.message)
        except Exception as exc:
            _raise_if_lost(exc, conn)
            await savepoint.rollback()
            if _transient(exc):
                if self._attempts_left(record.topic, record.partition, record.offset):
                    raise self._retrying(record.topic, record.partition, record.offset,
                                     first_offsets, exc) from exc
                retry = self.state.retry
                return HandlerRejected(f"gave up after {retry.max_attempts} attempts or "
                                       f"{retry.max_seconds:.0f} s: {exc}")
            log.exception("handler failed", event_id=envelope.id, type=envelope.type,
                          correlation_id=envelope.correlation_id)
            return HandlerRejected(f"handler raised {exc.__class__.__name__}: {exc}")
        try:
            await savepoint.commit()
        except asyncpg.InFailedSQLTransactionError:
            # The handler caught a database error and returned: its part of the transaction
            # is unusable. Undo it and refuse the event rather than retry forever.
            await savepoint.rollback()
            return HandlerRejected("the handler swallowed a database error; its transaction "
                                   "was aborted")
        return None

    def _attempts_left(self, topic: str, partition: int, offset: int) -> bool:
        """Count one more attempt at this record; whether another one is allowed."""
        return self.state.attempt((topic, partition, offset), time.monotonic())

    @staticmethod
    def _retrying(topic: str, partition: int, offset: int,
                  first_offsets: dict[tuple[str, int], int], cause: BaseException) -> _Retrying:
        return _Retrying(TopicPartition(topic, partition), offset,
                         first_offsets[(topic, partition)], cause)

    async def _back_off(self, retrying: _Retrying) -> None:
        """Seek the partition back to its batch's first offset and pause it for a while."""
        tp, first_offset = retrying.tp, retrying.first_offset
        key = (tp.topic, tp.partition, retrying.offset)
        delay = self.state.retry_delay(key)
        log.warning("handler asked to retry; partition paused", topic=tp.topic,
                    partition=tp.partition, offset=retrying.offset,
                    attempt=self.state.attempts_of(key), retry_in=round(delay, 2),
                    reason=str(retrying.cause))
        self._seek(tp, first_offset)
        with contextlib.suppress(IllegalStateError):
            self._consumer.pause(tp)
            asyncio.get_running_loop().call_later(delay, self._resume, tp)

    def _resume(self, tp: TopicPartition) -> None:
        with contextlib.suppress(IllegalStateError):
            if tp in self._consumer.assignment():
                self._consumer.resume(tp)

    @staticmethod
    async def _mark(conn: asyncpg.Connection, event_id: str, status: str) -> None:
        await conn.execute("UPDATE boxbus_inbox_events SET status = $2 WHERE event_id = $1",
                           event_id, status)

    async def _receipt(self, conn: asyncpg.Connection, envelope: Envelope,
                       status: ReceiptStatus, reason: str | None) -> None:
        """The answer to an event addressed to this box (a subscriber's copy of a broadcast
        is not answered, nor is an answer)."""
        if (envelope.target_box != self.box_id or envelope.type in BUS_ANSWERS
                or envelope.type.startswith(RPC_PREFIX)):
            return
        now = datetime.now(UTC)
        receipt = DeliveryReceipt(
            meta=EventMeta(
                event_id=str(uuid.uuid4()), source_box=self.box_id,
                region=self.region,  # receipts need it: checked when made
                aggregate_key=envelope.partition_key, occurred_at=now,
                target_box=envelope.source_box, correlation_id=envelope.correlation_id,
                causation_id=envelope.id),
            receipt_for_event_id=envelope.id, receipt_for_type=envelope.type,
            status=status, reason=reason, processed_at=now)
        await self.outbox.publish(conn, receipt)  # into this box's ingress topic


def _for_the_sender(problem: BadEvent) -> str:
    """What the sender's receipt says of a refusal: a business rule's reason in full; for an
    error on this box's side, only that (the details stay in this box's dead letters and log,
    not with a partner)."""
    if problem.code in ("rejected-by-handler", "unknown-event-type", "bad-signature"):
        return problem.message
    return (f"the receiving box could not apply it ({problem.code}); its operators have the "
            "details")


def _span_attributes(envelope: Envelope, box: str) -> dict[str, str | None]:
    return {"boxbus.box": box, "boxbus.event_id": envelope.id, "boxbus.type": envelope.type,
            "boxbus.correlation_id": envelope.correlation_id}


class _SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, each partition resumes from the offset stored in PostgreSQL with the
    effects (or the log's start); Kafka's committed offsets are not the source of truth."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Nothing to commit: applied batches are committed in PostgreSQL already, and a
        # batch in flight is not (the new owner applies it).
        self.inbox.state.revoked(revoked)
        self.inbox._pipeline.forget(revoked)
        self.inbox._rejections.forget(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        try:
            start = await self.inbox.start_offsets(list(assigned))
        except Exception as exc:
            # aiokafka only logs a listener's error. The partitions stay "not ready": the
            # main loop places them itself before applying anything (Inbox._place).
            if isinstance(exc, KafkaError) or _database_trouble(exc):
                log.warning("stored offsets not readable now; placing the partitions later",
                            box=self.inbox.box_id, error=repr(exc))
            else:
                log.exception("reading the stored offsets failed; placing the partitions "
                              "later", box=self.inbox.box_id)
            return
        for tp in assigned:
            if self.inbox.state.assigned(tp, start[tp]):
                self.inbox._seek(tp, start[tp])
        log.info("partitions assigned", box=self.inbox.box_id,
                 partitions=[f"{tp.topic}[{tp.partition}]@{start[tp]}" for tp in assigned])
