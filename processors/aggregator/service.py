"""The aggregator: reads every region topic (whose sources the router has proven), decodes the
events and keeps the analytics aggregates in PostgreSQL, exactly once (the commit protocol is
:mod:`processors.aggregator.store`'s). Instances share one consumer group
(``<namespace>.aggregator``) and split the partitions; the region topics to read are named
after the regions of the boxes the control topics know, and followed when they change.

What is aggregated so far: sales (the store orders a box takes) by the hour of the order's
placement, region, box, store and currency: orders, revenue, units; amendments and
cancellations correct the bucket the order was counted in (a small state per order, kept in
the same transaction, which also makes a copy of an event change nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError

from bus import naming
from bus.deadletter import DeadLetterWriter
from bus.events.models import OrderAmended, OrderCancelled, OrderKind, OrderPlaced
from bus.kafka import KafkaAccess, LoginWatch, start_or_close
from bus.log import get_logger
from bus.pipeline import Pipeline
from bus.record import KafkaRecord
from bus.serde import EventSerde
from bus.settings import Settings
from bus.validation import Checked, check_record
from processors.aggregator import store
from processors.router.control import ControlFollower

log = get_logger(__name__)


@dataclass
class AggregatorStats:
    consumed: int = 0
    aggregated: int = 0  # events that changed an aggregate
    commits: int = 0
    fenced: int = 0  # batches refused because another instance claimed the partition

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _Claims(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self.aggregator._epochs.pop(tp, None)
            self.aggregator._positions.pop(tp, None)
        self.aggregator._pipeline.forget(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
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
        self._epochs: dict[TopicPartition, int] = {}
        # Next offset to apply per claimed partition: records before it (a fetch that began
        # before the claim's seek, or a position aiokafka reset) were counted already.
        self._positions: dict[TopicPartition, int] = {}
        self._subscribed: set[str] = set()
        self._pipeline: Pipeline[Checked] = Pipeline(self._check, self._dead_letter)

    async def run(self, stop: asyncio.Event) -> AggregatorStats:
        self._conn = await asyncpg.connect(self.dsn)
        await store.migrate(self._conn)
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
                        for tp, records in fetched.items():
                            await self._apply(tp, records)
        finally:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            with contextlib.suppress(Exception):
                await self._dead_letters.stop()
            await self.control.stop()
            await self._conn.close()
        return self.stats

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
                offset, epoch = await store.claim(conn, self.group_id, tp.topic, tp.partition,
                                                  starts[tp])
                self._epochs[tp] = epoch
                self._positions[tp] = offset
                with contextlib.suppress(IllegalStateError):
                    self._consumer.seek(tp, offset)
        finally:
            await conn.close()

    async def _apply(self, tp: TopicPartition, records: list[KafkaRecord]) -> None:
        if tp not in self._consumer.assignment():
            return
        if tp not in self._epochs:
            await self._claim([tp])  # records came before the listener placed it:
            return  # they come again from the stored position
        position = self._positions[tp]
        if records[0].offset < position:
            records = [r for r in records if r.offset >= position]
            if not records:
                return
        # (Records from a fetch made before the claim's seek never come: aiokafka drops a
        # fetch whose offset is not the partition's position. A gap after it is the log's.)
        checked = await self._pipeline.run(records)
        events = [(item.event, record.timestamp)
                  for record, item in zip(records, checked, strict=True) if item is not None
                  and isinstance(item.event, OrderPlaced | OrderAmended | OrderCancelled)]
        try:
            async with store.fenced(self._conn, self.group_id, tp.topic, tp.partition,
                                    self._epochs[tp], records[-1].offset + 1):
                # An order's events share its key, hence its partition: its state is this
                # instance's alone while it holds the partition.
                orders = await store.orders_of(self._conn, {e.order_id for e, _ in events})
                sales, changed = fold(events, orders)
                await store.add_sales(self._conn, sales)
                await store.save_orders(self._conn, changed)
        except store.Fenced as exc:
            self.stats.fenced += 1
            self._epochs.pop(tp, None)
            self._positions.pop(tp, None)
            log.warning("partition claimed by another instance; batch left to it",
                        error=str(exc))
            return
        self._positions[tp] = records[-1].offset + 1
        self.stats.consumed += len(records)
        self.stats.aggregated += len(events)
        self.stats.commits += 1

    async def _check(self, record: KafkaRecord) -> Checked:
        return await check_record(record, self.serde, self.namespace)

    async def _dead_letter(self, record: KafkaRecord, error: Any) -> None:
        await self._dead_letters.write(record, error)


LATE = timedelta(hours=1)  # an event that arrives this long after it happened is counted late


def fold(events: list[tuple[OrderPlaced | OrderAmended | OrderCancelled, int]],
         orders: dict[str, store.OrderState],
         ) -> tuple[dict[store.SalesKey, store.Sales], dict[str, store.OrderState]]:
    """A batch's events (each with its record's timestamp, when it reached the network), in
    order, as sales deltas and the order states they changed. Sales are the store orders a box
    takes (``STORE_ORDER``); an amendment or a cancellation corrects the bucket where its order
    was counted; a copy of an event changes nothing. An event that arrives an hour or more
    after it happened is applied all the same, to its own bucket, and counted there as late."""
    sales: dict[store.SalesKey, store.Sales] = defaultdict(store.Sales)
    changed: dict[str, store.OrderState] = {}
    for event, arrived_ms in events:
        late = (datetime.fromtimestamp(arrived_ms / 1000, UTC) - event.meta.occurred_at
                >= LATE)
        state = orders.get(event.order_id)
        if isinstance(event, OrderPlaced):
            if state is not None or event.kind is not OrderKind.STORE_ORDER:
                continue  # counted already (a copy), or a purchase, not a sale
            meta = event.meta
            state = store.OrderState(
                store.SalesKey(meta.occurred_at.replace(minute=0, second=0, microsecond=0),
                               meta.region, meta.source_box, event.store_id or "",
                               event.total.currency),
                event.total.amount_minor, _units(event))
            sales[state.key].add(1, state.revenue_minor, state.units, late=late)
        elif state is None or state.cancelled:
            continue  # not a sale this aggregator counted, or cancelled already
        elif isinstance(event, OrderAmended):
            revenue, units = event.total.amount_minor, _units(event)
            sales[state.key].add(0, revenue - state.revenue_minor, units - state.units,
                                 late=late)
            state = replace(state, revenue_minor=revenue, units=units)
        else:
            sales[state.key].add(-1, -state.revenue_minor, -state.units, late=late)
            state = replace(state, cancelled=True)
        orders[event.order_id] = changed[event.order_id] = state
    return sales, changed


def _units(order: OrderPlaced | OrderAmended) -> Decimal:
    return sum((line.quantity for line in order.lines), start=Decimal(0))
