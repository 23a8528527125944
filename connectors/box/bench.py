"""Benchmarks of the box SDK on the events of the reference workload (../shared/WORKLOAD.md):
the relay beside a raw aiokafka producer, the inbox beside one transaction per event, and the
end-to-end latency from the outbox commit to the recipient's inbox at a fixed rate. Each pair
runs in the same run on the same stack, so their ratio means something on a noisy machine.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bus import create_database, heap, naming
from bus.db import drop_database
from bus.events import EventBase
from bus.events.models import CommentAdded, OrderConfirmed, OrderPlaced, StockLevelChanged
from bus.examples import example
from bus.kafka import KafkaAccess
from bus.naming import inbox_topic
from bus.serde import EncodedEvent, EventSerde
from bus.settings import Settings
from bus.topics import TopicSpec, ensure_topics
from bus.validation import check_record
from connectors.box.handlers import Applied, Handlers
from connectors.box.inbox import Inbox
from connectors.box.migrations import migrate
from connectors.box.outbox import Outbox, headers_json
from connectors.box.relay import Relay

BOX = "bench-supplier"

EFFECT_TABLE = """
    CREATE TABLE IF NOT EXISTS bench_orders (
        order_id    text PRIMARY KEY,
        status      text NOT NULL,
        total_minor bigint,
        events      int NOT NULL DEFAULT 1,
        updated_at  timestamptz NOT NULL DEFAULT clock_timestamp());
    CREATE TABLE IF NOT EXISTS bench_latency (
        event_id text PRIMARY KEY, applied_at float8, sent_at float8);
"""
UPSERT = """
    INSERT INTO bench_orders (order_id, status, total_minor) VALUES ($1, $2, $3)
    ON CONFLICT (order_id) DO UPDATE SET status = excluded.status,
        total_minor = coalesce(excluded.total_minor, bench_orders.total_minor),
        events = bench_orders.events + 1, updated_at = clock_timestamp()"""


def workload_events(count: int, region: str = "north") -> list[EventBase]:
    """The mix of a store order's life in the reference week: placed (5 lines, the median),
    confirmed, a comment in half of them, stock changes; keyed by order id."""
    placed, confirmed = example(OrderPlaced.TYPE), example(OrderConfirmed.TYPE)
    commented, stock = example(CommentAdded.TYPE), example(StockLevelChanged.TYPE)
    lines = [line.model_copy(update={"line_no": n, "sku": f"SKU-{n}"})
             for n, line in enumerate(list(placed.lines) * 2, 1)][:5]  # type: ignore[attr-defined]
    templates: list[EventBase] = [placed.model_copy(update={"lines": tuple(lines)}), confirmed,
                                  commented, stock]
    events = []
    for n in range(count):
        template = templates[n % len(templates)]
        order = f"so-{region}-{n // len(templates):07d}"
        data = template.model_dump()
        data["meta"] |= {"event_id": str(uuid.uuid4()), "aggregate_key": order,
                         "correlation_id": order, "region": region, "target_box": BOX}
        if "order_id" in data:
            data["order_id"] = order
        events.append(type(template).model_validate(data))
    return events


@dataclass
class Bench:
    settings: Settings
    kafka: KafkaAccess
    server_dsn: str
    serde: EventSerde
    progress: Callable[[str], None]
    results: dict[str, Any] = field(default_factory=dict)
    databases: list[str] = field(default_factory=list)

    async def drop_databases(self) -> None:
        """The databases this bench made, dropped (a bench leaves nothing behind)."""
        for name in self.databases:
            await drop_database(self.server_dsn, name)
        self.databases.clear()

    async def box_database(self) -> str:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        self.databases.append(name)
        dsn = await create_database(self.server_dsn, name)
        await migrate(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(EFFECT_TABLE)
        finally:
            await conn.close()
        return dsn

    async def relay_vs_raw(self, count: int) -> None:
        """The relay publishing ``count`` outbox rows, beside a raw idempotent producer
        sending the same records (same settings: acks=all, linger 5 ms)."""
        topic = naming.region_topic(self.settings.topic_namespace, "north")
        await ensure_topics(self.kafka, [TopicSpec(topic, 3)])
        encoded = [await self.serde.encode(e, topic) for e in workload_events(count)]
        dsn = await self.box_database()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.executemany(
                "INSERT INTO boxbus_outbox (event_id, event_type, topic, record_key, "
                "record_value, headers) VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
                [(e.envelope.id, e.envelope.type, topic, e.key, e.value, headers_json(e.headers))
                 for e in encoded])
        finally:
            await conn.close()

        self.progress(f"raw aiokafka producer: {count} records")
        producer = self.kafka.producer(acks="all", enable_idempotence=True, linger_ms=5)
        await producer.start()
        _settle_heap()
        began = time.perf_counter()
        try:
            futures = [await producer.send(topic, e.value, key=e.key, headers=e.headers)
                       for e in encoded]
            await asyncio.gather(*futures)
        finally:
            raw_seconds = time.perf_counter() - began
            await producer.stop()
        del encoded, futures

        self.progress(f"relay: {count} outbox rows")
        relay = Relay(self.settings, dsn, self.kafka, BOX, batch_size=1000,
                      poll_interval=0.05)
        _settle_heap()
        task = asyncio.create_task(relay.run())
        await relay.active.wait()
        began = time.perf_counter()
        while relay.published < count:
            if task.done():
                task.result()  # the relay died: its error, not a hang
            await asyncio.sleep(0.01)
        relay_seconds = time.perf_counter() - began
        relay.stop()
        await task
        self.results |= {
            "relay_events_per_s": round(count / relay_seconds),
            "raw_produce_events_per_s": round(count / raw_seconds),
            "relay_vs_raw_ratio": round(raw_seconds / relay_seconds, 2),
            "relay_events": count,
        }

    async def inbox_vs_per_event(self, count: int, per_event_count: int) -> None:
        """The inbox applying ``count`` events exactly once (dedupe + an order upsert +
        offsets, a transaction per partition batch), beside one transaction per event."""
        topic = inbox_topic(self.settings.topic_namespace, BOX)
        await ensure_topics(self.kafka, [TopicSpec(topic, 3)])
        events = workload_events(count)
        encoded = [await self.serde.encode(e, topic) for e in events]
        await self._produce(topic, encoded)
        del events, encoded  # the inbox reads them from Kafka
        dsn = await self.box_database()
        _settle_heap()

        self.progress(f"inbox: {count} events")
        inbox = Inbox(self.settings, dsn, self.kafka, BOX, bench_handlers(), self.serde,
                      topics=[topic])
        task = asyncio.create_task(inbox.run())
        began: float | None = None
        while inbox.applied < count:
            if task.done():
                task.result()  # the inbox died: its error, not a hang
            if inbox.dead_lettered:
                inbox.stop()
                await task
                raise RuntimeError(f"the inbox dead-lettered {inbox.dead_lettered} of the "
                                   "bench's events (its log says why): no figure")
            if began is None and inbox.state.ready:
                began = time.perf_counter()  # from its partitions placed: group join excluded
            # (A short sleep until then; the bench shares the inbox's event loop after.)
            await asyncio.sleep(0.001 if began is None else 0.01)
        inbox_seconds = time.perf_counter() - (began or time.perf_counter())
        inbox.stop()
        await task

        self.progress(f"one transaction per event: {per_event_count} events")
        per_event_seconds = await self._per_event(topic, dsn, per_event_count)
        inbox_rate = count / max(inbox_seconds, 1e-3)
        per_event_rate = per_event_count / per_event_seconds
        self.results |= {
            "inbox_events_per_s": round(inbox_rate),
            "per_event_txn_events_per_s": round(per_event_rate),
            "inbox_vs_per_event_ratio": round(inbox_rate / per_event_rate, 2),
            "inbox_events": count,
        }

    async def _per_event(self, topic: str, dsn: str, count: int) -> float:
        """The same work, the common way: for each event BEGIN; dedupe; upsert; offset;
        COMMIT."""
        consumer = self.kafka.consumer(topic,
                                       group_id=f"bench-per-event-{uuid.uuid4().hex[:6]}",
                                       auto_offset_reset="earliest", enable_auto_commit=False)
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_seen (event_id text PRIMARY KEY)")
        await consumer.start()
        done = 0
        began = None
        try:
            while done < count:
                for records in (await consumer.getmany(timeout_ms=500,
                                                       max_records=500)).values():
                    for record in records:
                        if done >= count:
                            break
                        began = began or time.perf_counter()
                        checked = await check_record(record, self.serde,
                                                     self.settings.topic_namespace)
                        async with conn.transaction():
                            fresh = await conn.fetchval(
                                "INSERT INTO bench_seen VALUES ($1) ON CONFLICT DO NOTHING "
                                "RETURNING event_id", checked.envelope.id)
                            if fresh:
                                await _effect(conn, checked.event)
                            await conn.execute(
                                "INSERT INTO boxbus_inbox_offsets (consumer, topic, partition,"
                                " next_offset) VALUES ('bench', $1, $2, $3) ON CONFLICT "
                                "(consumer, topic, partition) DO UPDATE SET next_offset = "
                                "excluded.next_offset", record.topic, record.partition,
                                record.offset + 1)
                        done += 1
        finally:
            await consumer.stop()
            await conn.close()
        return time.perf_counter() - (began or time.perf_counter())

    async def end_to_end(self, rates: list[int], seconds: float, tmp: Path,
                         per_transaction: int = 4) -> None:
        """Boxes write at each of ``rates`` events/s in turn for ``seconds``,
        ``per_transaction`` events per business transaction (a store order's events: placed,
        stock changes); a relay process and an inbox process of the recipient deliver them;
        latency is from the writer's COMMIT to the inbox handler inside the recipient's
        transaction. The same two processes serve every rate, after one warm-up."""
        ns = self.settings.topic_namespace
        topic = inbox_topic(ns, BOX) + ".e2e"
        await ensure_topics(self.kafka, [TopicSpec(topic, 3)])
        sender, recipient = await self.box_database(), await self.box_database()
        env = {**os.environ, **self.kafka.env(),
               "BOXBUS_SCHEMA_REGISTRY_URL": self.serde.registry.url,
               "BOXBUS_TOPIC_NAMESPACE": ns, "BOXBUS_LOG_LEVEL": "WARNING"}
        relay = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "boxbus.cli.main", "relay", "--box", "bench-sender",
            env={**env, "BOXBUS_DATABASE_URL": sender},
            stdout=open(tmp / "relay.log", "wb"), stderr=asyncio.subprocess.STDOUT)
        inbox = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "boxbus.cli.main", "inbox", "run", "--box", BOX,
            "--handlers", "connectors.box.bench", "--topic", topic,
            env={**env, "BOXBUS_DATABASE_URL": recipient},
            stdout=open(tmp / "inbox.log", "wb"), stderr=asyncio.subprocess.STDOUT)
        by_rate: list[dict[str, Any]] = []
        try:
            await asyncio.sleep(4)  # both join; the inbox's group settles
            # Warm-up, not measured: the first events of a fresh process pay for schema
            # look-ups, first connections and cold JVM paths (~400 ms here, once).
            warmup = workload_events(min(int(rates[0] * seconds), rates[0]))
            self.progress(f"end to end: warm-up, {len(warmup)} events")
            warm_latencies, _ = await self._deliver(sender, recipient, warmup, topic,
                                                    rates[0], per_transaction)
            for rate in rates:
                total = int(rate * seconds)
                self.progress(f"end to end: {total} events at {rate}/s")
                measured = workload_events(total)
                busy_before = _cpu_times()
                latencies, parts = await self._deliver(sender, recipient, measured, topic,
                                                       rate, per_transaction)
                busy_after = _cpu_times()
                by_rate.append({
                    "rate": rate, "events": total,
                    "achieved_rate": round(parts["achieved_rate"]),
                    "p50_ms": round(statistics.median(latencies), 1),
                    "p99_ms": round(_p99(latencies), 1),
                    "max_ms": round(latencies[-1], 1),
                    "relay_p50_ms": round(statistics.median(parts["relay"]), 1),
                    "relay_p99_ms": round(_p99(parts["relay"]), 1),
                    "delivery_p50_ms": round(statistics.median(parts["delivery"]), 1),
                    "delivery_p99_ms": round(_p99(parts["delivery"]), 1),
                    # The whole machine's CPU while measured (writers, relay, inbox, Kafka,
                    # PostgreSQL share it): near 100, latency is queueing for a core.
                    "machine_cpu_busy_pct": _busy_pct(busy_before, busy_after),
                })
        finally:
            for process in (relay, inbox):
                if process.returncode is None:
                    process.terminate()
                    await process.wait()
        # The top-level figures are those of the highest rate (the goal's).
        top = max(by_rate, key=lambda r: r["rate"])
        self.results |= {
            "e2e_p50_ms": top["p50_ms"], "e2e_p99_ms": top["p99_ms"],
            "e2e_max_ms": top["max_ms"],
            "e2e_relay_p50_ms": top["relay_p50_ms"], "e2e_relay_p99_ms": top["relay_p99_ms"],
            "e2e_delivery_p50_ms": top["delivery_p50_ms"],
            "e2e_delivery_p99_ms": top["delivery_p99_ms"],
            "e2e_warmup_max_ms": round(warm_latencies[-1], 1),
            "e2e_machine_cpu_busy_pct": top["machine_cpu_busy_pct"],
            "e2e_events": top["events"], "e2e_target_rate": top["rate"],
            "e2e_achieved_rate": top["achieved_rate"],
            "e2e_events_per_transaction": per_transaction,
            "e2e_by_rate": by_rate,
        }

    async def _deliver(self, sender: str, recipient: str, events: list[EventBase], topic: str,
                       rate: int, per_transaction: int,
                       ) -> tuple[list[float], dict[str, Any]]:
        """Write ``events`` at ``rate`` into the sender's outbox and wait until the recipient
        applied them all; the latencies (ms, sorted) and where the time went."""
        committed = await self._write_paced(sender, events, topic, rate, per_transaction)
        conn = await asyncpg.connect(recipient)
        try:
            async with asyncio.timeout(120):
                while (await conn.fetchval("SELECT count(*) FROM bench_latency")) < len(events):
                    await asyncio.sleep(0.05)
            rows = await conn.fetch("SELECT event_id, applied_at, sent_at FROM bench_latency")
            await conn.execute("TRUNCATE bench_latency")
        finally:
            await conn.close()
        latencies = sorted((r["applied_at"] - committed[r["event_id"]]) * 1000 for r in rows)
        # Where the time goes: commit -> the relay's send (the record's timestamp), and
        # send -> applied in the recipient's transaction.
        parts: dict[str, Any] = {
            "relay": sorted((r["sent_at"] - committed[r["event_id"]]) * 1000 for r in rows),
            "delivery": sorted((r["applied_at"] - r["sent_at"]) * 1000 for r in rows),
            "achieved_rate": len(events) / max(1e-3, max(committed.values())
                                               - min(committed.values())),
        }
        return latencies, parts

    async def _write_paced(self, dsn: str, events: list[EventBase], topic: str,
                           rate: int, per_transaction: int) -> dict[str, float]:
        """Writers that commit business transactions with their outbox events at ``rate``
        events per second."""
        outbox = Outbox(self.settings, self.serde)
        # Encoded before the clock starts: the writers stand for boxes on their own machines;
        # here they share two cores with everything else and must not eat them.
        encoded = await outbox.encode(events, topic)
        committed: dict[str, float] = {}
        writers = 16
        start = time.perf_counter() + 0.2

        async def writer(index: int) -> None:
            conn = await asyncpg.connect(dsn)
            try:
                for first in range(index * per_transaction, len(events),
                                   writers * per_transaction):
                    due = start + first / rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    group = encoded[first:first + per_transaction]
                    async with conn.transaction():
                        await outbox.publish_many(conn, group)
                    now = time.time()
                    for event in group:
                        committed[event.envelope.id] = now
            finally:
                await conn.close()

        await asyncio.gather(*(writer(i) for i in range(writers)))
        return committed

    async def _produce(self, topic: str, encoded: list[EncodedEvent]) -> None:
        producer = self.kafka.producer(acks="all", linger_ms=5)
        await producer.start()
        try:
            futures = [await producer.send(topic, e.value, key=e.key, headers=e.headers)
                       for e in encoded]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()


def _settle_heap() -> None:
    """Before a measured part: collect the garbage of the set-up, and keep what the bench
    itself holds out of later full collections (:mod:`bus.heap`, as every boxbus service
    does once started). Each part stands for a process of its own (a relay, an inbox) whose
    heap is small; without this, the bench's own lists of events made every full collection
    of the measured part slower (about 30 % of the inbox's run at 40,000 events)."""
    heap.settle()


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat (Linux)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(f) for f in stat.readline().split()[1:]]
    except OSError:
        return (0, 0)
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields) - idle, sum(fields))


def _busy_pct(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / total, 1) if total else None


def _p99(ordered: list[float]) -> float:
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


_STATUS = {kind.TYPE: kind.TYPE.rsplit(".", 1)[1]
           for kind in (OrderPlaced, OrderConfirmed, CommentAdded, StockLevelChanged)}


def _effect_args(event: EventBase) -> tuple[str, str, int | None]:
    # (isinstance, not getattr with a default: a pydantic model answers a missing attribute
    # by raising inside __getattr__, slow enough to show in the inbox's profile)
    total = event.total.amount_minor if isinstance(event, OrderPlaced) else None
    return event.meta.aggregate_key, _STATUS[event.TYPE], total


async def _effect(conn: asyncpg.Connection, event: EventBase) -> None:
    """A realistic effect: the sales order row of the event's order, created or updated."""
    await conn.execute(UPSERT, *_effect_args(event))


def bench_handlers() -> Handlers:
    registry = Handlers()

    @registry.on_batch(OrderPlaced, OrderConfirmed, CommentAdded, StockLevelChanged)
    async def apply(batch: list[tuple[EventBase, Applied]]) -> None:
        await batch[0][1].conn.executemany(UPSERT, [_effect_args(e) for e, _ in batch])

    return registry


# `boxbus inbox run --handlers connectors.box.bench` (the end-to-end run): the same effect,
# and the moment each event is applied, inside the recipient's transaction.
handlers = Handlers()


@handlers.on_batch(OrderPlaced, OrderConfirmed, CommentAdded, StockLevelChanged)
async def _apply_and_time(batch: list[tuple[EventBase, Applied]]) -> None:
    conn = batch[0][1].conn
    await conn.executemany(UPSERT, [_effect_args(e) for e, _ in batch])
    now = time.time()
    await conn.executemany("INSERT INTO bench_latency VALUES ($1, $2, $3)",
                           [(a.envelope.id, now, a.timestamp_ms / 1000) for _, a in batch])
