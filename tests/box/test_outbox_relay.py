"""The outbox and its relay against real PostgreSQL and Kafka: an event commits or rolls back
with the business change; every committed event reaches Kafka, in per-aggregate order, even
when the relay is killed with SIGKILL mid-stream, when two relays run for one box, and when
the broker is down for a while."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bus import Settings, TopicSpec, ensure_topics, naming
from bus.devstack import Component, LocalStack
from bus.devstack.procs import free_ports
from bus.envelope import header_text
from bus.errors import OversizeEvent
from bus.events import EventBase
from bus.examples import example
from bus.kafka import KafkaAccess
from bus.validation import MAX_EVENT_BYTES
from connectors.box import Outbox, Relay, backlog, migrate
from connectors.box.relay import lock_key
from tests.box.conftest import (
    RelayProcess,
    example_source,
    read_all,
    wait_backlog_empty,
    wait_metric,
)
from tests.conftest import boxbus_cli, stack_access

pytestmark = [pytest.mark.stack, pytest.mark.embedded]


def comment(order: str, seq: int) -> EventBase:
    """A small event of aggregate ``order``; ``seq`` is its place in that aggregate's story."""
    data = example("boxbus.collaboration.CommentAdded").model_dump()
    data["meta"] |= {"aggregate_key": order, "correlation_id": order, "region": "north"}
    data |= {"subject_id": order, "comment_id": f"{order}-{seq}", "text": str(seq)}
    return type(example("boxbus.collaboration.CommentAdded")).model_validate(data)


async def write(dsn: str, outbox: Outbox, events: list[EventBase],
                written: list[str] | None = None) -> None:
    """Each event in its own business transaction, as a box would."""
    conn = await asyncpg.connect(dsn)
    try:
        for event in events:
            async with conn.transaction():
                await conn.execute("SELECT 1")  # the business change would be here
                await outbox.publish(conn, event)
            if written is not None:
                written.append(event.meta.event_id)
    finally:
        await conn.close()


def ids_and_order(records: list[Any], events: list[EventBase]) -> None:
    """Every event arrived, and each aggregate's events arrived in the order written."""
    by_id = {e.meta.event_id: e for e in events}
    first_seen: list[str] = []
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        event_id = header_text(r.headers, "ce_id")
        if event_id is not None and event_id in by_id and event_id not in first_seen:
            first_seen.append(event_id)
    assert set(first_seen) == set(by_id), f"missing {len(set(by_id) - set(first_seen))}"
    for key in {e.meta.aggregate_key for e in events}:
        arrived = [by_id[i].comment_id for i in first_seen  # type: ignore[attr-defined]
                   if by_id[i].meta.aggregate_key == key]
        written = [e.comment_id for e in events  # type: ignore[attr-defined]
                   if e.meta.aggregate_key == key]
        assert arrived == written, key


async def test_migrations_are_versioned_and_idempotent(box_db: str) -> None:
    assert await migrate(box_db) == []  # the fixture applied them
    conn = await asyncpg.connect(box_db)
    try:
        versions = await conn.fetch("SELECT version, name FROM boxbus_migrations")
    finally:
        await conn.close()
    assert [(v["version"], v["name"]) for v in versions] == [
        (1, "outbox"), (2, "inbox"), (3, "outbox-notify-trigger"),
        (4, "outbox-parked"), (5, "rules"), (6, "business-receipts")]


async def test_an_event_commits_or_rolls_back_with_its_business_change(
    db_conn: asyncpg.Connection, outbox: Outbox,
) -> None:
    await db_conn.execute("CREATE TABLE orders (id text PRIMARY KEY)")
    with pytest.raises(RuntimeError, match="needs the caller's transaction"):
        await outbox.publish(db_conn, comment("o-1", 1))
    async def failing_business_transaction() -> None:
        async with db_conn.transaction():
            await db_conn.execute("INSERT INTO orders VALUES ('o-1')")
            await outbox.publish(db_conn, comment("o-1", 1))
            raise ZeroDivisionError("the business change fails after publishing")

    with pytest.raises(ZeroDivisionError):
        await failing_business_transaction()
    assert await db_conn.fetchval("SELECT count(*) FROM orders") == 0
    assert (await backlog(db_conn)).rows == 0
    async with db_conn.transaction():
        await db_conn.execute("INSERT INTO orders VALUES ('o-2')")
        event = comment("o-2", 1)
        await outbox.publish(db_conn, event)
        await outbox.publish(db_conn, event)  # publishing the same event twice: one row
    assert (await backlog(db_conn)).rows == 1


async def test_several_events_of_one_transaction_in_one_round_trip(
    db_conn: asyncpg.Connection, outbox: Outbox,
) -> None:
    """publish_many keeps the given order, takes events encoded before the transaction, and
    refuses what publish refuses (no transaction, oversize, a mix of kinds)."""
    events = [comment("o-9", n) for n in range(4)]
    async with db_conn.transaction():
        await outbox.publish_many(db_conn, events[:2])
    encoded = await outbox.encode(events[2:])  # e.g. before the business transaction opens
    async with db_conn.transaction():
        await outbox.publish_many(db_conn, encoded)
    stored = await db_conn.fetch("SELECT event_id, topic FROM boxbus_outbox ORDER BY id")
    assert [r["event_id"] for r in stored] == [
        e.meta.event_id for e in events]
    assert {r["topic"] for r in stored} == {encoded[0].topic}
    with pytest.raises(RuntimeError, match="needs the caller's transaction"):
        await outbox.publish_many(db_conn, encoded)
    async with db_conn.transaction():
        with pytest.raises(TypeError, match="not a mix"):
            await outbox.publish_many(db_conn, [encoded[0], events[0]])  # type: ignore[arg-type]
    big = dataclasses.replace(encoded[0], value=b"\0" * (MAX_EVENT_BYTES + 1))
    async with db_conn.transaction():
        with pytest.raises(OversizeEvent, match="limit for one event"):
            await outbox.publish_many(db_conn, [big])
    assert (await backlog(db_conn)).rows == 4


async def test_relay_publishes_in_order_and_empties_the_outbox(
    box_db: str, outbox: Outbox, box_settings: Settings, kafka: KafkaAccess, ingress_topic: str,
) -> None:
    events = [comment(f"o-{n % 7}", n) for n in range(140)]
    await write(box_db, outbox, events)
    relay = Relay(box_settings, box_db, kafka, "north", poll_interval=0.2)
    task = asyncio.create_task(relay.run())
    try:
        await wait_backlog_empty(box_db)
    finally:
        relay.stop()
        await task
    assert relay.published == 140
    records = await read_all(kafka, ingress_topic, 140)
    assert len(records) == 140
    ids_and_order(records, events)
    # The records are exactly what the outbox held: key, wire format, CloudEvents headers.
    assert all(r.value[0] == 0 and header_text(r.headers, "ce_specversion") == "1.0"
               for r in records)


async def test_a_relay_killed_mid_stream_loses_nothing(
    box_db: str, outbox: Outbox, kafka: KafkaAccess, ingress_topic: str, relays: list[RelayProcess],
    tmp_path: Path,
) -> None:
    """SIGKILL while a writer keeps committing: after a restart every committed event arrives,
    each aggregate in order (duplicates allowed: the inbox deduplicates)."""
    events = [comment(f"o-{n % 11}", n) for n in range(1200)]
    relays.append(RelayProcess("north", box_db, kafka, tmp_path / "relay-1.log"))
    written: list[str] = []
    writer = asyncio.create_task(write(box_db, outbox, events, written))
    # Kill mid-stream: a third of the events committed (most of them relayed), more coming.
    async with asyncio.timeout(60):
        while len(written) < len(events) // 3:
            await asyncio.sleep(0.01)
    relays[0].kill()
    assert not writer.done()
    await writer
    relays.append(RelayProcess("north", box_db, kafka, tmp_path / "relay-2.log"))
    await wait_backlog_empty(box_db)
    records = await read_all(kafka, ingress_topic, len(events))
    ids_and_order(records, events)


async def test_two_relays_for_one_box_one_active_the_other_takes_over(
    box_db: str, outbox: Outbox, kafka: KafkaAccess, ingress_topic: str, relays: list[RelayProcess],
    tmp_path: Path,
) -> None:
    first = RelayProcess("north", box_db, kafka, tmp_path / "a.log")
    relays.append(first)
    await asyncio.sleep(1.5)
    second = RelayProcess("north", box_db, kafka, tmp_path / "b.log")
    relays.append(second)
    batch_1 = [comment(f"o-{n % 5}", n) for n in range(100)]
    await write(box_db, outbox, batch_1)
    await wait_backlog_empty(box_db)
    await asyncio.sleep(1)
    assert "standing by" in (tmp_path / "b.log").read_text()
    first.kill()
    batch_2 = [comment(f"o-{n % 5}", n) for n in range(100, 200)]
    await write(box_db, outbox, batch_2)
    await wait_backlog_empty(box_db, within=30)
    records = await read_all(kafka, ingress_topic, 200)
    ids_and_order(records, batch_1 + batch_2)
    assert "relay active" in (tmp_path / "b.log").read_text()


async def test_a_broker_outage_only_delays_delivery(
    box_db: str, outbox: Outbox, box_settings: Settings, run_root: Path, tmp_path: Path,
) -> None:
    """The broker is down while the box keeps writing: the outbox grows, nothing is lost, and
    it drains once the broker is back."""
    kafka_only = LocalStack(Settings(run_dir=run_root / f"outage-{uuid.uuid4().hex[:6]}"),
                            components=frozenset({Component.KAFKA}), base_port=0)
    info = await kafka_only.up()
    try:
        kafka = stack_access(info)
        topic = naming.ingress_topic(box_settings.topic_namespace, example_source())
        await ensure_topics(kafka, [TopicSpec(topic, 3)])
        relay = Relay(box_settings, box_db, kafka, "north", poll_interval=0.2,
                      max_backoff=1.0)
        task = asyncio.create_task(relay.run())
        before = [comment(f"o-{n % 3}", n) for n in range(30)]
        await write(box_db, outbox, before)
        await wait_backlog_empty(box_db)

        kafka_only.kill_node(1)
        during = [comment(f"o-{n % 3}", n) for n in range(30, 90)]
        await write(box_db, outbox, during)  # the box keeps working
        await asyncio.sleep(2)
        conn = await asyncpg.connect(box_db)
        try:
            waiting = await backlog(conn)
        finally:
            await conn.close()
        assert waiting.rows == 60 and waiting.age_seconds >= 1.5

        await kafka_only.start_node(1)
        await wait_backlog_empty(box_db, within=90)
        relay.stop()
        await task
        records = await read_all(kafka, topic, 90)
        ids_and_order(records, before + during)
    finally:
        kafka_only.down()


async def test_the_backlog_and_the_relay_are_visible_as_metrics(
    box_db: str, outbox: Outbox, kafka: KafkaAccess, ingress_topic: str, relays: list[RelayProcess],
    tmp_path: Path, db_conn: asyncpg.Connection,
) -> None:
    """An operator sees a box that cannot get its events out: while another session holds the
    box's relay lock, the backlog grows and ages; once the relay runs, it drains to zero."""
    await db_conn.execute("SELECT pg_advisory_lock($1)", lock_key("north"))  # "another relay"
    port = free_ports(1)[0]
    relays.append(RelayProcess("north", box_db, kafka, tmp_path / "relay.log",
                               "--metrics-port", str(port)))
    await write(box_db, outbox, [comment("o-1", n) for n in range(20)])
    waiting = await wait_metric(port, "boxbus_outbox_backlog_age_seconds", lambda v: v > 1)
    assert waiting["boxbus_outbox_backlog_rows"] == 20
    assert waiting["boxbus_relay_active"] == 0
    assert waiting["boxbus_relay_published_total"] == 0

    await db_conn.execute("SELECT pg_advisory_unlock($1)", lock_key("north"))
    drained = await wait_metric(port, "boxbus_relay_published_total", lambda v: v == 20)
    drained = await wait_metric(port, "boxbus_outbox_backlog_rows", lambda v: v == 0)
    assert drained["boxbus_relay_active"] == 1
    assert drained["boxbus_outbox_backlog_age_seconds"] == 0
    assert len(await read_all(kafka, ingress_topic, 20)) == 20


async def test_events_for_a_missing_topic_are_parked_and_the_rest_flows(
    box_db: str, outbox: Outbox, box_settings: Settings, kafka: KafkaAccess, ingress_topic: str,
    db_conn: asyncpg.Connection, env_for_cli: dict[str, str],
) -> None:
    """A row whose topic does not exist must not block the box: it is parked with the reason,
    later rows of that topic follow it (that topic's order kept), the other topics flow; once
    the topic exists, `boxbus relay unpark` puts them back and they are published in order."""
    missing = f"{box_settings.topic_namespace}.region.nowhere"
    lost = [comment("o-5", n) for n in range(3)]
    flowing = [comment("o-6", n) for n in range(10)]
    async with db_conn.transaction():
        await outbox.publish(db_conn, lost[0], missing)
        await outbox.publish_many(db_conn, flowing[:5])
    relay = Relay(box_settings, box_db, kafka, "north", poll_interval=0.1,
                  request_timeout_ms=3000)
    task = asyncio.create_task(relay.run())
    try:
        async with asyncio.timeout(60):
            while relay.parked < 1 or relay.published < 5:
                assert not task.done(), task.exception()
                await asyncio.sleep(0.1)
        async with db_conn.transaction():  # while the topic is still missing
            await outbox.publish_many(db_conn, lost[1:], missing)
            await outbox.publish_many(db_conn, flowing[5:])
        await wait_backlog_empty(box_db)
        assert relay.parked == 3 and relay.published == 10
        assert len(await read_all(kafka, ingress_topic, 10)) == 10
        reasons = await db_conn.fetch("SELECT event_id, reason FROM boxbus_outbox_parked "
                                      "ORDER BY id")
        assert [r["event_id"] for r in reasons] == [
            e.meta.event_id for e in lost]
        assert {r["reason"] for r in reasons} == {
            "the topic does not exist, or this box may not write it (a box publishes into its "
            "own ingress topic only)"}
        status = subprocess.run(
            [*boxbus_cli(), "relay", "status", "--box", "north", "--json"],
            env={**env_for_cli, "BOXBUS_DATABASE_URL": box_db}, capture_output=True,
            text=True, timeout=60, check=True)
        assert json.loads(status.stdout)["parked_rows"] == 3

        await ensure_topics(kafka, [TopicSpec(missing, 1)])
        unparked = subprocess.run(
            [*boxbus_cli(), "relay", "unpark", "--box", "north", "--topic", missing, "--json"],
            env={**env_for_cli, "BOXBUS_DATABASE_URL": box_db}, capture_output=True,
            text=True, timeout=60, check=True)
        assert json.loads(unparked.stdout)["unparked"] == 3
        await wait_backlog_empty(box_db)
    finally:
        relay.stop()
        await task
    ids_and_order(await read_all(kafka, missing, 3), lost)
    assert (await backlog(db_conn)).parked == 0
