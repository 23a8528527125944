"""The router on the real broker: it reads the boxes' ingress topics, proves each event's source
(a forged one is quarantined), keeps accepted events in their region topic, delivers to related
boxes and partners by mail, moves the partition on past bad records, commits after acks, takes
a subscription added at run time, and lets instances join and leave without losing events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from bus import Envelope, Settings, naming
from bus.kafka import KafkaAccess
from bus.topics import TopicSpec, ensure_topics, read_topic
from bus.topology import apply_plan, make_plan, parse_topology
from processors.router import Router
from processors.router.table import RoutingTable
from tests.box.conftest import wait_metric
from tests.conftest import boxbus_cli

pytestmark = pytest.mark.stack

NETWORK = """\
regions:
  north: {partitions: 3}
  south: {partitions: 2}
boxes:
  - {id: shop, region: north, company: shop}
  - {id: dairy, region: south, company: dairy}
  - {id: mill, region: north, company: mill, publishes: [OrderConfirmed]}
  - {id: stranger, region: north, company: other}
  - {id: farm, region: south, company: farm, kind: partner, email: orders@farm.example}
relationships:
  - {kind: trade, buyer: shop, supplier: dairy}
  - {kind: trade, buyer: shop, supplier: mill}
  - {kind: trade, buyer: shop, supplier: farm}
"""
ORDER = "boxbus.orders.OrderPlaced"


def headers(source: str, region: str, key: str, *, kind: str = ORDER, target: str | None = None,
            event_id: str | None = None) -> list[tuple[str, bytes]]:
    return Envelope(id=event_id or str(uuid.uuid4()), source_box=source, type=kind,
                    time=datetime.now(UTC), region=region, partition_key=key,
                    target_box=target, correlation_id=key).to_headers()


async def apply(settings: Settings, kafka: KafkaAccess, text: str) -> None:
    plan = await make_plan(settings, kafka, parse_topology(text))
    await apply_plan(kafka, plan)


@contextlib.asynccontextmanager
async def running(settings: Settings, kafka: KafkaAccess, **options: object
                  ) -> AsyncIterator[Router]:
    router = Router(settings, kafka, **options)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(router.run(stop, progress_every=3600))
    try:
        yield router
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def produce(kafka: KafkaAccess, records: list[tuple[str, str, list[tuple[str, bytes]]]]
                  ) -> None:
    producer = kafka.producer(acks="all")
    await producer.start()
    try:
        for topic, key, hdrs in records:
            await producer.send_and_wait(topic, f"body of {key}".encode(), key=key.encode(),
                                         headers=hdrs)
    finally:
        await producer.stop()


async def wait_for(settings: Settings, kafka: KafkaAccess, topic: str, count: int,
                   timeout: float = 30) -> list[Any]:
    async with asyncio.timeout(timeout):
        while len(records := await read_topic(kafka, topic)) < count:
            await asyncio.sleep(0.2)
    return records


def header(record: object, name: str) -> str | None:
    return next((v.decode() for k, v in record.headers if k == name), None)  # type: ignore[attr-defined]


async def test_delivers_to_related_boxes_and_quarantines_the_rest(
    ns_settings: Settings, kafka: KafkaAccess,
) -> None:
    ns = ns_settings.topic_namespace
    await apply(ns_settings, kafka, NETWORK)
    north, south = naming.region_topic(ns, "north"), naming.region_topic(ns, "south")

    def ingress(box: str) -> str:
        return naming.ingress_topic(ns, box)

    # A topic named like an ingress whose owner the network does not know (an operator's slip):
    # the router follows the network's boxes by name, so it does not even read it.
    ghost = ingress("ghost")
    await ensure_topics(kafka, [TopicSpec(t) for t in (
        ghost, naming.quarantine_topic(ghost), naming.dlq_topic(ghost))])
    key = "ord-1"
    await produce(kafka, [
        (ingress("shop"), key, headers("shop", "north", key, target="dairy")),
        (ingress("shop"), key, headers("dairy", "south", key, target="shop")),  # forged
        (ingress("dairy"), key, headers("dairy", "north", key, target="shop")),  # region forged
        (ghost, key, headers("ghost", "north", key, target="dairy")),  # unknown owner
        (ingress("stranger"), key, headers("stranger", "north", key, target="shop")),
        (ingress("mill"), key, headers("mill", "north", key, target="shop")),  # may not publish
        (ingress("shop"), key, [("ce_type", ORDER.encode())]),  # no envelope: dead letter
        (ingress("shop"), key, [*headers("shop", "north", key, target="mill"),
                                ("ce_source", b"/boxes/dairy")]),  # which source counts?
        (ingress("shop"), key, headers("shop", "north", key, target="farm")),  # partner: mail
        (ingress("shop"), key, headers("shop", "north", key, target="mill", event_id="last")),
    ])
    async with running(ns_settings, kafka) as router:
        mill = await wait_for(ns_settings, kafka, naming.inbox_topic(ns, "mill"), 1)
        assert [header(r, "ce_id") for r in mill] == ["last"]  # the partition moved on
        dairy = await read_topic(kafka, naming.inbox_topic(ns, "dairy"))
        assert len(dairy) == 1 and dairy[0].key == key.encode()
        assert dairy[0].value == f"body of {key}".encode()  # unchanged bytes
        mail = await read_topic(kafka, naming.mail_topic(ns))
        assert [header(r, "boxbus_recipient") for r in mail] == ["farm"]
        for box in ("shop", "stranger"):
            assert await read_topic(kafka, naming.inbox_topic(ns, box)) == []
        # The region topic holds the accepted events of its boxes, nothing else.
        kept = await read_topic(kafka, north)
        assert [header(r, "ce_source") for r in kept] == ["/boxes/shop"] * 3
        assert await read_topic(kafka, south) == []

        codes = {}
        for box in ("shop", "dairy", "ghost", "stranger", "mill"):
            quarantined = await read_topic(kafka, naming.quarantine_topic(ingress(box)))
            codes[box] = sorted(header(r, "quarantine_code") or "" for r in quarantined)
            assert all(header(r, "dlq_reason") and header(r, "dlq_offset") for r in quarantined)
        assert codes == {"shop": ["duplicate-header", "forged-source"],
                         "dairy": ["forged-source"],
                         "ghost": [], "stranger": ["unrelated-target"],
                         "mill": ["type-not-allowed"]}
        dead = await read_topic(kafka, naming.dlq_topic(ingress("shop")))
        assert [header(r, "dlq_code") for r in dead] == ["invalid-envelope"]
        assert "ce_source" in (header(dead[0], "dlq_reason") or "")
        assert router.stats.quarantined == 5 and router.stats.dead_lettered == 1
        assert ghost not in router._consumer.subscription()
        assert router._consumer.subscription() == {
            ingress(b) for b in ("shop", "dairy", "mill", "stranger", "farm")}
        assert router.stats.kept == 3
        listed = subprocess.run(
            [*boxbus_cli(), "dlq", "list", naming.quarantine_topic(ingress("shop")), "--json"],
            env={**os.environ, **kafka.env(),
                 "BOXBUS_SCHEMA_REGISTRY_URL": "http://127.0.0.1:9/unused"},
            capture_output=True, text=True, timeout=60, check=True)
        assert sorted(letter["code"] for letter in json.loads(listed.stdout)) == [
            "duplicate-header", "forged-source"]

    # Committed after the outputs were acknowledged: the group's offsets are at the end.
    consumer = kafka.consumer(group_id=f"{ns}.router", enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(ingress("shop"), p) for p in range(3)]
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            assert (await consumer.committed(tp) or 0) == ends[tp]
    finally:
        await consumer.stop()


async def test_subscription_and_box_added_at_run_time(
    ns_settings: Settings, kafka: KafkaAccess,
) -> None:
    ns = ns_settings.topic_namespace
    await apply(ns_settings, kafka, NETWORK)
    mill = naming.ingress_topic(ns, "mill")
    price = "boxbus.network.PriceListSent"
    async with running(ns_settings, kafka) as router:
        await produce(kafka, [(mill, "p-1", headers("mill", "north", "p-1", kind=price))])
        await wait_for(ns_settings, kafka, naming.quarantine_topic(mill), 1)
        # mill may not publish price lists, and nobody subscribes: quarantined, not delivered.
        changes = router.control.changes
        grown = NETWORK.replace(
            "publishes: [OrderConfirmed]", "publishes: [OrderConfirmed, PriceListSent]").replace(
            "relationships:\n", "  - {id: newshop, region: north, company: new}\n"
            "relationships:\n  - {kind: trade, buyer: newshop, supplier: mill}\n") + (
            "subscriptions:\n  - {box: shop, types: [PriceListSent], name: prices}\n"
            "  - {box: newshop, types: [PriceListSent], name: prices}\n")
        await apply(ns_settings, kafka, grown)
        async with asyncio.timeout(15):
            while router.control.changes == changes or "newshop" not in router.table.boxes:
                await asyncio.sleep(0.1)
        await produce(kafka, [(mill, "p-2", headers("mill", "north", "p-2", kind=price))])
        for box in ("shop", "newshop"):
            got = await wait_for(ns_settings, kafka, naming.inbox_topic(ns, box), 1)
            assert [r.key for r in got] == [b"p-2"]


async def test_instances_join_and_leave_without_losing_or_reordering(
    ns_settings: Settings, kafka: KafkaAccess,
) -> None:
    ns = ns_settings.topic_namespace
    await apply(ns_settings, kafka, NETWORK)
    shop = naming.ingress_topic(ns, "shop")
    orders = [f"ord-{i}" for i in range(12)]
    steps = 40  # per order: placed, then amendments, the last one a cancellation

    async def publish(start: int, stop: int) -> None:
        await produce(kafka, [
            (shop, key, headers("shop", "north", key, target="dairy",
                                 event_id=f"{key}/{step:03d}"))
            for step in range(start, stop) for key in orders])

    async with running(ns_settings, kafka, max_records=50):
        await publish(0, 10)
        async with running(ns_settings, kafka, max_records=50):  # a second instance joins
            await publish(10, 25)
        await publish(25, 40)  # ... and leaves: the first takes its partitions back
    async with running(ns_settings, kafka):  # the first left too: a new one finishes
        got = await wait_for(ns_settings, kafka, naming.inbox_topic(ns, "dairy"),
                             len(orders) * steps)
    ids = [header(r, "ce_id") or "" for r in got]
    assert set(ids) == {f"{k}/{s:03d}" for k in orders for s in range(steps)}  # none lost
    for key in orders:  # per order, in order (a copy after a hand-over repeats, never jumps)
        seen = [int(i.split("/")[1]) for i in ids if i.startswith(key + "/")]
        first = list(dict.fromkeys(seen))
        assert first == list(range(steps)), key


async def test_router_command_serves_metrics_and_stops_cleanly(
    ns_settings: Settings, kafka: KafkaAccess, tmp_path: Any,
) -> None:
    ns = ns_settings.topic_namespace
    await apply(ns_settings, kafka, NETWORK)
    shop = naming.ingress_topic(ns, "shop")
    await produce(kafka, [(shop, "o-1", headers("shop", "north", "o-1", target="mill")),
                          (shop, "o-2", headers("ghost", "north", "o-2"))])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = tmp_path / "router.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*boxbus_cli(), "router", "run", "--metrics-port", str(port), "--json"],
            env={**os.environ, **kafka.env(), "BOXBUS_TOPIC_NAMESPACE": ns},
            stdout=subprocess.PIPE, stderr=log)
    try:
        samples = await wait_metric(port, "boxbus_router_quarantined_total", lambda v: v >= 1)
        assert samples["boxbus_router_forwarded_total"] >= 1
        assert samples["boxbus_router_consumed_total"] == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, log_path.read_text()[-2000:]
    totals = json.loads(out)
    assert (totals["consumed"], totals["forwarded"], totals["quarantined"]) == (2, 1, 1)


async def test_a_delivery_refused_for_good_is_quarantined_and_the_rest_flows(
    ns_settings: Settings, kafka: KafkaAccess,
) -> None:
    ns = ns_settings.topic_namespace
    await apply(ns_settings, kafka, NETWORK)
    shop, inbox = naming.ingress_topic(ns, "shop"), naming.inbox_topic(ns, "dairy")
    admin = kafka.admin()
    await admin.start()
    try:
        # dairy's inbox refuses records this large; mill's takes them.
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, inbox,
                                                  configs={"max.message.bytes": "2000"})])
    finally:
        await admin.close()
    async with running(ns_settings, kafka) as router:
        # The router's producer writes to dairy's inbox first: after the refused record its
        # sequence there must not turn the next records into "out of order" refusals.
        await produce(kafka, [(shop, "ord-9", headers("shop", "north", "ord-9",
                                                      target="dairy", event_id="e-pre"))])
        await wait_for(ns_settings, kafka, inbox, 1)
        producer = kafka.producer(acks="all")
        await producer.start()
        try:
            for n, (size, target) in enumerate(((5000, "dairy"), (10, "dairy"), (5000, "mill"),
                                                (5000, "dairy"), (10, "dairy"))):
                await producer.send_and_wait(shop, b"x" * size, key=b"ord-9", headers=headers(
                    "shop", "north", "ord-9", target=target, event_id=f"e-{n}"))
        finally:
            await producer.stop()
        dairy = await wait_for(ns_settings, kafka, inbox, 3)
        refused = await wait_for(ns_settings, kafka, naming.quarantine_topic(shop), 2)
        mill = await wait_for(ns_settings, kafka, naming.inbox_topic(ns, "mill"), 1)
        assert [header(r, "ce_id") for r in dairy] == ["e-pre", "e-1", "e-4"]
        # mill's copy went out with each failed round: the inbox drops the copies by id.
        assert {header(r, "ce_id") for r in mill} == {"e-2"}
        assert [header(r, "ce_id") for r in refused] == ["e-0", "e-3"]
        for record in refused:
            assert header(record, "quarantine_code") == "undeliverable"
            assert "dairy" in (header(record, "dlq_reason") or "")
            assert "MessageSizeTooLarge" in (header(record, "dlq_reason") or "")
        assert router.stats.failed_rounds >= 3  # tried whole rounds first, with pauses
        assert router.stats.forwarded == 4


async def test_a_flooding_box_backlog_does_not_hold_back_a_quiet_box(
    ns_settings: Settings, kafka: KafkaAccess,
) -> None:
    """Fairness between boxes: one box queued a large backlog (the router was away, or it
    floods); while the router works through it, another box sends a few orders. They go out
    within a few rounds, not behind the backlog the router has already fetched (the region
    topic, one partition here, shows the order the router wrote)."""
    ns = ns_settings.topic_namespace
    await apply(ns_settings, kafka, """\
regions:
  north: {partitions: 1}
boxes:
  - {id: flood, region: north, company: flood}
  - {id: quiet, region: north, company: quiet}
  - {id: hub, region: north, company: hub}
relationships:
  - {kind: trade, buyer: flood, supplier: hub}
  - {kind: trade, buyer: quiet, supplier: hub}
""")
    backlog, budget = 30_000, 100
    producer = kafka.producer(acks="all", linger_ms=20)
    await producer.start()
    try:
        flood = naming.ingress_topic(ns, "flood")
        for i in range(backlog):
            key = f"f-{i % 97}"
            await producer.send(flood, b"x" * 100, key=key.encode(),
                                headers=headers("flood", "north", key, target="hub"))
        await producer.flush()
        async with running(ns_settings, kafka, max_records=budget) as router:
            async with asyncio.timeout(60):
                while router.stats.consumed < 2000:
                    await asyncio.sleep(0.01)
            for i in range(5):
                key = f"q-{i}"
                await producer.send(naming.ingress_topic(ns, "quiet"), b"y", key=key.encode(),
                                    headers=headers("quiet", "north", key, target="hub"))
            await producer.flush()
            sent_at = router.stats.consumed  # the backlog routed when the orders were in
            got = await wait_for(ns_settings, kafka, naming.region_topic(ns, "north"),
                                 backlog + 5, timeout=120)
            assert router.stats.failed_rounds == 0
    finally:
        await producer.stop()
    assert len(got) == backlog + 5  # none lost, none twice
    assert len({header(r, "ce_id") for r in got}) == backlog + 5
    sources = [header(r, "ce_source") for r in got]
    last_quiet = max(i for i, s in enumerate(sources) if s and s.endswith("/quiet"))
    assert sent_at < backlog / 2  # the measurement ran while most of the backlog waited
    # Taken in the rounds right after they were fetched, not after the backlog's fetch.
    behind = last_quiet - sent_at
    assert behind < 10 * budget, f"{behind} backlog records went out before the quiet box's"


async def test_an_unforeseen_error_dead_letters_the_record_and_the_partition_goes_on(
    ns_settings: Settings, kafka: KafkaAccess, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The router follows the pipeline's policy: a record whose routing fails in a way nobody
    foresaw is dead-lettered with the exception; the records behind it are routed."""
    ns = ns_settings.topic_namespace
    await apply(ns_settings, kafka, NETWORK)
    real = RoutingTable.decide

    def decide(self: RoutingTable, found: Any, owner: str) -> Any:
        if found.get("ce_id") == b"odd":
            raise ZeroDivisionError("a bug in the routing table")
        return real(self, found, owner)

    monkeypatch.setattr(RoutingTable, "decide", decide)
    shop = naming.ingress_topic(ns, "shop")
    await produce(kafka, [(shop, "o-1", headers("shop", "north", "o-1", target="dairy",
                                                event_id=i)) for i in ("a", "odd", "b")])
    async with running(ns_settings, kafka) as router:
        got = await wait_for(ns_settings, kafka, naming.inbox_topic(ns, "dairy"), 2)
        (letter,) = await wait_for(ns_settings, kafka, naming.dlq_topic(shop), 1)
        assert router.stats.dead_lettered == 1
    assert [header(r, "ce_id") for r in got] == ["a", "b"]
    assert header(letter, "dlq_code") == "unexpected-error"
    assert "ZeroDivisionError" in (header(letter, "dlq_reason") or "")


async def test_a_router_started_before_any_box_follows_the_first_ones(
    ns_settings: Settings, kafka: KafkaAccess,
) -> None:
    """The router names its ingress topics after the control topics: with no box yet it reads
    nothing (and does not fail), and the boxes that join are read from then on."""
    ns = ns_settings.topic_namespace
    await apply(ns_settings, kafka, "regions:\n  north: {partitions: 1}\n")
    async with running(ns_settings, kafka) as router:
        await asyncio.sleep(1.0)
        assert router._consumer.subscription() == set()
        await apply(ns_settings, kafka, NETWORK)
        shop = naming.ingress_topic(ns, "shop")
        await produce(kafka, [(shop, "o-7", headers("shop", "north", "o-7", target="dairy"))])
        got = await wait_for(ns_settings, kafka, naming.inbox_topic(ns, "dairy"), 1, timeout=60)
        assert [r.key for r in got] == [b"o-7"]
        assert shop in router._consumer.subscription()
