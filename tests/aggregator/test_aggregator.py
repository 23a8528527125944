"""The aggregator on real Kafka and PostgreSQL: sales aggregates equal a recomputation from the
events after one instance is stopped mid-way and another takes over (each event counted once),
the stored positions equal the topics' ends, and an instance whose partition was claimed by
another cannot commit for it (fenced)."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from bus import Settings, naming
from bus.catalog import SchemaCatalog
from bus.credentials import CredentialStore
from bus.db import create_database
from bus.devstack import StackInfo
from bus.events.models import Money, OrderAmended, OrderCancelled, OrderKind, OrderPlaced
from bus.examples import example
from bus.kafka import KafkaAccess
from bus.producer import EventProducer
from bus.registry import SchemaRegistry
from bus.serde import EventSerde
from bus.topology import apply_plan, make_plan, parse_topology
from processors.aggregator import Aggregator, store
from processors.aggregator.fold import Changes, Sales, SalesKey
from processors.aggregator.progress import behind
from tests.conftest import boxbus_cli

pytestmark = pytest.mark.stack

NETWORK = """\
regions:
  north: {partitions: 3}
  south: {partitions: 2}
boxes:
  - {id: branch-n, region: north, company: chain}
  - {id: branch-s, region: south, company: chain}
"""


def orders(count: int) -> list[OrderPlaced]:
    base = example("boxbus.orders.OrderPlaced")
    assert isinstance(base, OrderPlaced)
    start = datetime(2026, 11, 23, 6, tzinfo=UTC)
    made = []
    rng = random.Random(7)
    for i in range(count):
        box, region = rng.choice([("branch-n", "north"), ("branch-s", "south")])
        order_id = f"{box}-so-{i:05d}"
        made.append(base.model_copy(update={
            "order_id": order_id, "buyer_box": box, "store_id": f"store-{rng.randint(1, 4)}",
            "kind": OrderKind.STORE_ORDER, "supplier_box": None,
            "total": Money(amount_minor=rng.randint(100, 50_000), currency="EUR"),
            "meta": base.meta.model_copy(update={
                "event_id": str(uuid.uuid4()), "source_box": box, "region": region,
                "aggregate_key": order_id, "correlation_id": order_id, "target_box": None,
                "occurred_at": start + timedelta(minutes=rng.randint(0, 60 * 48))})}))
    return made


def life(events: list[OrderPlaced], seed: int = 11
         ) -> tuple[list[OrderPlaced | OrderAmended | OrderCancelled], dict[str, Any]]:
    """The orders' lives: some amended (a new total), some cancelled, some placed twice (the
    network delivers at least once); the events in a publishable order, and each order's end."""
    rng = random.Random(seed)
    amend_base = example("boxbus.orders.OrderAmended")
    cancel_base = example("boxbus.orders.OrderCancelled")
    assert isinstance(amend_base, OrderAmended) and isinstance(cancel_base, OrderCancelled)
    stream: list[OrderPlaced | OrderAmended | OrderCancelled] = []
    final: dict[str, Any] = {}
    for order in events:
        stream.append(order)
        end = {"placed": order, "total": order.total.amount_minor, "cancelled": False}
        if rng.random() < 0.02:
            stream.append(order)  # a copy
        if rng.random() < 0.15:
            total = rng.randint(100, 50_000)
            stream.append(amend_base.model_copy(update={
                "order_id": order.order_id, "total": Money(amount_minor=total, currency="EUR"),
                "meta": order.meta.model_copy(update={"event_id": str(uuid.uuid4())})}))
            end["total"] = total
        if rng.random() < 0.08:
            stream.append(cancel_base.model_copy(update={
                "order_id": order.order_id,
                "meta": order.meta.model_copy(update={"event_id": str(uuid.uuid4())})}))
            end["cancelled"] = True
        final[order.order_id] = end
    return stream, final


def recomputed(final: dict[str, Any]) -> dict[tuple[str, str, str, str], tuple[int, int]]:
    orders_: Counter[tuple[str, str, str, str]] = Counter()
    revenue: Counter[tuple[str, str, str, str]] = Counter()
    for end in final.values():
        e = end["placed"]
        hour = e.meta.occurred_at.replace(minute=0, second=0, microsecond=0)
        key = (hour.isoformat(), e.meta.region, e.meta.source_box, e.store_id or "")
        orders_[key] += 0 if end["cancelled"] else 1
        revenue[key] += 0 if end["cancelled"] else end["total"]
    return {k: (orders_[k], revenue[k]) for k in orders_}


async def stored(dsn: str) -> dict[tuple[str, str, str, str], tuple[int, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT * FROM agg_sales_hourly")
    finally:
        await conn.close()
    return {(r["bucket"].astimezone(UTC).isoformat(), r["region"], r["box"], r["store"]):
            (r["orders"], r["revenue_minor"]) for r in rows}


async def published(ns_settings: Settings, kafka: KafkaAccess, stack: StackInfo, count: int
                    ) -> tuple[str, EventSerde, dict[str, Any], int]:
    """The network applied, an analytics database of its own, and ``count`` orders' lives
    published into the region topics; (database URL, serde, each order's end, records)."""
    assert stack.database_url and stack.schema_registry_url
    ns = ns_settings.topic_namespace
    await apply_plan(kafka, await make_plan(ns_settings, kafka, parse_topology(NETWORK)))
    dsn = await create_database(stack.database_url, f"{ns}_analytics")
    serde = EventSerde(SchemaRegistry(stack.schema_registry_url), SchemaCatalog.load())
    stream, final = life(orders(count))
    async with EventProducer(ns_settings, kafka, serde) as producer:
        for event in stream:
            await producer.publish(event, naming.region_topic(ns, event.meta.region))
    return dsn, serde, final, len(stream)


async def test_every_order_counts_once_across_a_stop_and_a_takeover(
    ns_settings: Settings, kafka: KafkaAccess, stack: StackInfo,
) -> None:
    ns = ns_settings.topic_namespace
    dsn, serde, final, records = await published(ns_settings, kafka, stack, 3000)

    # The aggregator connects as its own user, with the ACLs the topology gives it.
    own = CredentialStore.of(ns_settings).access(naming.service_principal(ns, "aggregator"),
                                                 kafka)
    assert own is not None and own.principal == f"User:{ns}.aggregator"

    async def run(until: int | None) -> Aggregator:
        aggregator = Aggregator(ns_settings, own, dsn, serde, max_records=200)
        stop = asyncio.Event()
        task = asyncio.create_task(aggregator.run(stop))
        async with asyncio.timeout(90):
            while (aggregator.stats.consumed < until if until is not None
                   else await behind(kafka, dsn, ns, ["north", "south"]) > 0):
                assert not task.done(), task
                await asyncio.sleep(0.05)
        if until is not None:
            task.cancel()  # stopped mid-stream, between or inside a batch's transaction
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            stop.set()
            await asyncio.wait_for(task, 30)
        return aggregator

    first = await run(until=600)
    assert 0 < first.stats.consumed < records
    await run(until=None)  # a new instance takes the partitions and finishes
    assert await stored(dsn) == recomputed(final)
    assert await behind(kafka, dsn, ns, ["north", "south"]) == 0


async def test_an_instance_whose_partition_was_claimed_cannot_commit(
    ns_settings: Settings, stack: StackInfo,
) -> None:
    assert stack.database_url
    dsn = await create_database(stack.database_url, f"{ns_settings.topic_namespace}_fence")
    conn = await asyncpg.connect(dsn)
    try:
        await store.migrate(conn)
        old = (await store.claim(conn, "g", "t", 0, 0)).epoch
        new = (await store.claim(conn, "g", "t", 0, 0)).epoch  # another instance took over
        assert new == old + 1
        key = SalesKey(datetime(2026, 11, 23, 6, tzinfo=UTC), "north", "b", "", "EUR")
        changes = Changes()
        changes.sales[key] = Sales(1, 500, Decimal(2))

        async def commit(epoch: int) -> None:
            async with store.fenced(conn, "g", [store.Position("t", 0, epoch, 0, 10, {})]):
                await store.write(conn, changes)

        with pytest.raises(store.Fenced):
            await commit(old)
        assert await conn.fetchval("SELECT count(*) FROM agg_sales_hourly") == 0
        await commit(new)
        assert await conn.fetchval("SELECT next_offset FROM agg_positions") == 10
        assert await conn.fetchval("SELECT orders FROM agg_sales_daily") == 1
    finally:
        await conn.close()


async def test_the_aggregator_command_runs_as_its_user_and_stops_cleanly(
    ns_settings: Settings, kafka: KafkaAccess, stack: StackInfo, env_for_cli: dict[str, str],
) -> None:
    ns = ns_settings.topic_namespace
    dsn, _, final, records = await published(ns_settings, kafka, stack, 50)
    proc = subprocess.Popen(
        [*boxbus_cli(), "aggregator", "run", "--database-url", dsn, "--json"],
        env={**env_for_cli, "BOXBUS_TOPIC_NAMESPACE": ns}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        async with asyncio.timeout(60):
            while await behind(kafka, dsn, ns, ["north", "south"]) > 0:
                assert proc.poll() is None, proc.communicate()
                await asyncio.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out)["consumed"] == records
    assert await stored(dsn) == recomputed(final)


LATE_NETWORK = """\
regions:
  east: {partitions: 1}
boxes:
  - {id: branch-e, region: east, company: chain}
"""


async def test_an_amendment_three_days_late_corrects_its_orders_bucket_and_counts_late(
    ns_settings: Settings, kafka: KafkaAccess, stack: StackInfo,
) -> None:
    """One partition: an order placed on Monday, another on Thursday, then the Monday order's
    amendment, made on Monday but reaching the network only now (its box was offline): it
    corrects Monday's bucket and is counted there as late; Thursday's bucket is untouched."""
    assert stack.database_url and stack.schema_registry_url
    ns = ns_settings.topic_namespace
    await apply_plan(kafka, await make_plan(ns_settings, kafka, parse_topology(LATE_NETWORK)))
    dsn = await create_database(stack.database_url, f"{ns}_analytics")
    serde = EventSerde(SchemaRegistry(stack.schema_registry_url), SchemaCatalog.load())
    monday = datetime(2026, 11, 23, 10, 15, tzinfo=UTC)
    thursday = monday + timedelta(days=3, hours=2)
    base = example("boxbus.orders.OrderPlaced")
    amend = example("boxbus.orders.OrderAmended")
    assert isinstance(base, OrderPlaced) and isinstance(amend, OrderAmended)

    def placed(order_id: str, at: datetime, amount: int) -> OrderPlaced:
        return base.model_copy(update={
            "order_id": order_id, "buyer_box": "branch-e", "store_id": "store-1",
            "kind": OrderKind.STORE_ORDER, "supplier_box": None,
            "total": Money(amount_minor=amount, currency="EUR"),
            "meta": base.meta.model_copy(update={
                "event_id": str(uuid.uuid4()), "source_box": "branch-e", "region": "east",
                "aggregate_key": order_id, "correlation_id": order_id, "target_box": None,
                "occurred_at": at})})

    first, second = placed("so-mon", monday, 1000), placed("so-thu", thursday, 700)
    late = amend.model_copy(update={
        "order_id": "so-mon", "revision": 1, "total": Money(amount_minor=1600, currency="EUR"),
        "meta": first.meta.model_copy(update={"event_id": str(uuid.uuid4()),
                                               "occurred_at": monday + timedelta(minutes=30)})})
    async with EventProducer(ns_settings, kafka, serde) as producer:
        for event in (first, second, late):
            await producer.publish(event, naming.region_topic(ns, "east"))
    aggregator = Aggregator(ns_settings, kafka, dsn, serde)
    stop = asyncio.Event()
    task = asyncio.create_task(aggregator.run(stop))
    async with asyncio.timeout(60):
        while aggregator.stats.consumed < 3:
            assert not task.done(), task
            await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 30)
    conn = await asyncpg.connect(dsn)
    try:
        hours = {r["bucket"]: (r["orders"], r["revenue_minor"], r["late_events"])
                 for r in await conn.fetch("SELECT * FROM agg_sales_hourly")}
        amended = await conn.fetchrow(
            "SELECT records, late FROM agg_events_hourly WHERE type = 'OrderAmended'")
    finally:
        await conn.close()
    assert hours == {monday.replace(minute=0): (1, 1600, 1),
                     thursday.replace(minute=0): (1, 700, 0)}
    assert amended is not None and (amended["records"], amended["late"]) == (1, 1)
