"""The aggregator: reads every region topic (whose sources the router has proven), decodes the
events and keeps the analytics aggregates in PostgreSQL, exactly once (the commit protocol is
:mod:`processors.aggregator.store`'s). Instances share one consumer group
(``<namespace>.aggregator``) and split the partitions; the region topics to read are named
after the regions of the boxes the control topics know, and followed when they change.

Built on aiokafka and PostgreSQL, not faust-streaming: the same fold in faust tables with
exactly-once processing ran 8.6 times slower over the same records (``boxbus bench week
--compare-faust``), too slow for the week's replay.

What each event changes is :mod:`processors.aggregator.fold`'s; lateness is judged against
the watermarks of each partition (per source box, the newest event time applied from it),
kept with its position.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field, fields
from typing import Any

import asyncpg
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError

from bus import naming
from bus.deadletter import DeadLetterWriter
from bus.events.models import OrderAmended, OrderCancelled, OrderConfirmed, OrderPlaced
from bus.kafka import KafkaAccess, LoginWatch, start_or_close
from bus.log import get_logger
from bus.pipeline import HandBack, Pipeline
from bus.record import KafkaRecord
from bus.serde import EventSerde
from bus.settings import Settings
from bus.validation import Checked, check_record
from processors.aggregator import store
from processors.aggregator.fold import LATE, Fold
from processors.router.control import ControlFollower

log = get_logger(__name__)


@dataclass
class AggregatorStats:
    consumed: int = 0
    aggregated: int = 0  # valid events folded into the aggregates
    commits: int = 0
    fenced: int = 0  # partitions' batches refused because another instance claimed them
    retried: int = 0  # transactions PostgreSQL rolled back (a deadlock), tried again
    first_fetch_at: float | None = None  # epoch seconds: the first records fetched
    first_commit_at: float | None = None
    last_commit_at: float | None = None
    latency: Latency = field(default_factory=lambda: Latency())

    def as_dict(self) -> dict[str, Any]:
        found = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "latency"}
        return {**found, **self.latency.percentiles()}


class Latency:
    """End-to-end latency of the aggregated records: from their record timestamp (set when
    the source's relay produced them; the router keeps it) to the commit that applied them.
    A systematic sample: every record until 200,000 are kept, then every second one, ..."""

    LIMIT = 200_000

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.stride = 1
        self._seen = 0

    def add(self, committed_ms: float, timestamps: list[int]) -> None:
        for ts in timestamps:
            self._seen += 1
            if self._seen % self.stride == 0:
                self.samples.append(committed_ms - ts)
        if len(self.samples) > self.LIMIT:
            self.samples = self.samples[1::2]
            self.stride *= 2

    def percentiles(self) -> dict[str, float | None]:
        ordered = sorted(self.samples)

        def at(share: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 1) \
                if ordered else None

        return {"latency_p50_ms": at(0.5), "latency_p99_ms": at(0.99)}


class _Claims(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator

    async def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("aggregator partitions revoked", partitions=len(revoked))
        for tp in revoked:
            self.aggregator._claims.pop(tp, None)
            self.aggregator._fenced.discard(tp)
        self.aggregator._pipeline.forget(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("aggregator partitions assigned", partitions=len(assigned))
        for tp in assigned:
            if tp in self.aggregator._fenced:
                self.aggregator._fenced.discard(tp)
                with contextlib.suppress(IllegalStateError):
                    self.aggregator._consumer.resume(tp)
        try:
            await self.aggregator._claim(list(assigned))
        except Exception:  # aiokafka only logs it: the loop claims them itself
            log.exception("claiming the assigned partitions failed; claimed on first records")


class Aggregator:
    def __init__(self, settings: Settings, kafka: KafkaAccess, dsn: str, serde: EventSerde,
                 *, namespace: str | None = None, group_id: str | None = None,
                 max_records: int = 5000) -> None:
        self.settings = settings
        self.kafka = kafka
        self.dsn = dsn
        self.serde = serde
        self.namespace = namespace or settings.topic_namespace
        self.group_id = group_id or f"{self.namespace}.aggregator"
        self.max_records = max_records
        self.stats = AggregatorStats()
        self.control = ControlFollower(kafka, self.namespace)
        # Per claimed partition: its epoch, the next offset to apply (records before it were
        # counted already) and its watermarks.
        self._claims: dict[TopicPartition, store.Claim] = {}
        # Partitions another instance claimed while this one still had them assigned: paused
        # until the group assigns them again.
        self._fenced: set[TopicPartition] = set()
        self._subscribed: set[str] = set()
        self._pipeline: Pipeline[Checked] = Pipeline(self._check, self._dead_letter)

    async def run(self, stop: asyncio.Event) -> AggregatorStats:
        self._conn = await asyncpg.connect(self.dsn)
        try:
            await store.migrate(self._conn)
        except BaseException:
            await self._conn.close()
            raise
        self._consumer = self.kafka.consumer(
            group_id=self.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed")
        self._dead_letters = DeadLetterWriter(self.kafka, self.group_id)
        login = LoginWatch(self.kafka)
        try:
            await self.control.start()
            # (The region topics' dead-letter topics are the topology's: made by apply.)
            await self._dead_letters.start([])
            await start_or_close(self._consumer, self.kafka)
            async with login.running():
                while not stop.is_set():
                    self._follow_the_regions()
                    if not self._subscribed:
                        await asyncio.sleep(0.2)
                        continue
                    async with login.guard():
                        fetched = await self._consumer.getmany(timeout_ms=200,
                                                               max_records=self.max_records)
                        if fetched:
                            login.records_arrived()
                            self.stats.first_fetch_at = self.stats.first_fetch_at or time.time()
                        await self._apply(fetched)
        finally:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            with contextlib.suppress(Exception):
                await self._dead_letters.stop()
            await self.control.stop()
            await self._conn.close()
        return self.stats

    @property
    def claimed(self) -> frozenset[TopicPartition]:
        """The partitions this instance has claimed (and may commit for) right now."""
        return frozenset(self._claims)

    def _follow_the_regions(self) -> None:
        wanted = {naming.region_topic(self.namespace, box.region)
                  for box in self.control.table.boxes.values()}
        if wanted and wanted != self._subscribed:
            self._consumer.subscribe(topics=sorted(wanted), listener=_Claims(self))
            log.info("aggregator follows the region topics", topics=sorted(wanted))
            self._subscribed = wanted

    async def _claim(self, tps: list[TopicPartition]) -> None:
        """Claim partitions in the analytics database (a new epoch each) and seek to their
        stored positions: from now on, an instance that held them before cannot commit."""
        starts = await self._consumer.beginning_offsets(tps)
        conn = await asyncpg.connect(self.dsn)  # the listener runs beside the main loop
        try:
            for tp in tps:
                self._claims[tp] = claim = await store.claim(
                    conn, self.group_id, tp.topic, tp.partition, starts[tp])
                with contextlib.suppress(IllegalStateError):
                    self._consumer.seek(tp, claim.next_offset)
        finally:
            await conn.close()

    async def _apply(self, fetched: dict[TopicPartition, list[KafkaRecord]]) -> None:
        """One fetch, all its partitions, in one fenced transaction (see
        :mod:`processors.aggregator.store`)."""
        # One snapshot of the claims for the whole batch: the rebalance listener may change
        # them at any await below, and the batch is filtered, folded and fenced against the
        # claims it was read under (the fence also checks the stored position is still the
        # batch's start, so a batch can only continue exactly where the last commit ended).
        claims: dict[TopicPartition, store.Claim] = {}
        batches: dict[TopicPartition, list[KafkaRecord]] = {}
        for tp, records in fetched.items():
            if tp not in self._consumer.assignment() or tp in self._fenced:
                continue
            claim = self._claims.get(tp)
            if claim is None:
                await self._claim([tp])  # records came before the listener placed it:
                continue  # they come again from the stored position
            records = [r for r in records if r.offset >= claim.next_offset]
            # (Records from before a claimed position: a fetch made before the claim's seek.)
            if records:
                claims[tp], batches[tp] = claim, records
        try:
            checked = {tp: await self._pipeline.run(records)
                       for tp, records in batches.items()}
        except HandBack as exc:  # the registry or Kafka stayed away: read the batch again
            log.warning("aggregator batch handed back; reading it again", error=str(exc))
            for tp, claim in claims.items():
                with contextlib.suppress(IllegalStateError):
                    self._consumer.seek(tp, claim.next_offset)
            return
        while batches:
            try:
                moved = await self._commit(batches, checked, claims)
            except store.Fenced as exc:
                tp = TopicPartition(exc.topic, exc.partition)
                self.stats.fenced += 1
                batches.pop(tp, None)
                claims.pop(tp, None)
                if self._claims.get(tp) is not None:
                    # Another instance claimed it; this one stops reading it until the group
                    # gives it back (the listener resumes it): claiming it again here would
                    # fence the rightful owner in turn.
                    self._claims.pop(tp, None)
                    self._fenced.add(tp)
                    with contextlib.suppress(IllegalStateError):
                        self._consumer.pause(tp)
                log.warning("partition claimed by another instance; its batch left to it",
                            error=str(exc))
                continue
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as exc:
                self.stats.retried += 1
                log.info("analytics transaction rolled back by PostgreSQL; trying again",
                         error=str(exc))
                continue
            for tp, claim in moved.items():
                if self._claims.get(tp) is claims[tp]:  # not re-claimed or revoked meanwhile
                    self._claims[tp] = claim
            now = time.time()
            self.stats.first_commit_at = self.stats.first_commit_at or now
            self.stats.last_commit_at = now
            self.stats.latency.add(now * 1000, [r.timestamp for records in batches.values()
                                                for r in records])
            self.stats.consumed += sum(len(records) for records in batches.values())
            self.stats.commits += 1
            return

    async def _commit(self, batches: dict[TopicPartition, list[KafkaRecord]],
                      checked: dict[TopicPartition, list[Checked | None]],
                      claims: dict[TopicPartition, store.Claim],
                      ) -> dict[TopicPartition, store.Claim]:
        """Fold and write the batches in one transaction; the claims they leave behind."""
        events = [item.event for tp in batches for item in checked[tp] if item is not None]
        ids = {e.order_id for e in events
               if isinstance(e, OrderPlaced | OrderAmended | OrderCancelled | OrderConfirmed)}
        # An order's events share its key, hence its partition: its state is this instance's
        # alone while it holds the partition (if it no longer does, the fence refuses).
        folding = Fold(await store.orders_of(self._conn, ids),
                       await store.purchases_of(self._conn, ids))
        moved: dict[TopicPartition, store.Claim] = {}
        for tp, records in batches.items():
            claim = claims[tp]
            marks = dict(claim.watermarks)
            for item in checked[tp]:
                if item is None:
                    continue
                meta = item.event.meta
                mark = marks.get(meta.source_box)
                folding.add(item.event, late=mark is not None and mark - meta.occurred_at >= LATE)
                if mark is None or meta.occurred_at > mark:
                    marks[meta.source_box] = meta.occurred_at
            moved[tp] = store.Claim(records[-1].offset + 1, claim.epoch, marks)
        positions = [store.Position(tp.topic, tp.partition, c.epoch, claims[tp].next_offset,
                                    c.next_offset, c.watermarks) for tp, c in moved.items()]
        async with store.fenced(self._conn, self.group_id, positions):
            await store.write(self._conn, folding.changes)
        self.stats.aggregated += folding.changes.aggregated
        return moved

    async def _check(self, record: KafkaRecord) -> Checked:
        return await check_record(record, self.serde, self.namespace)

    async def _dead_letter(self, record: KafkaRecord, error: Any) -> None:
        await self._dead_letters.write(record, error)
