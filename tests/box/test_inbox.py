"""The inbox against real Kafka and PostgreSQL: each effect exactly once (redeliveries and a
SIGKILL mid-batch included), in per-aggregate order; a poison event goes to the dead-letter
topic while later events are applied; a handler's retry backs off without blocking other
partitions; receipts go out through the box's own outbox."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bus import Settings, TopicSpec, ensure_topics, naming
from bus.devstack import StackInfo
from bus.devstack.procs import free_ports
from bus.events import EventBase
from bus.examples import example
from bus.kafka import KafkaAccess
from bus.serde import EncodedEvent, EventSerde
from bus.topics import read_topic
from connectors.box import Inbox, UnknownTypePolicy, inbox_topic
from tests.box import handlers_effects
from tests.box.conftest import read_all, wait_metric
from tests.conftest import REPO

pytestmark = [pytest.mark.stack, pytest.mark.embedded]

BOX = "dairy-hub"


def comment(order: str, seq: int, text: str | None = None) -> EventBase:
    data = example("boxbus.collaboration.CommentAdded").model_dump()
    data["meta"] |= {"aggregate_key": order, "correlation_id": order, "region": "north",
                     "target_box": BOX}
    data |= {"subject_id": order, "comment_id": f"{order}-{seq}", "text": text or str(seq)}
    return type(example("boxbus.collaboration.CommentAdded")).model_validate(data)


@pytest.fixture
async def topic(box_settings: Settings, kafka: KafkaAccess) -> str:
    name = inbox_topic(box_settings.topic_namespace, BOX)
    await ensure_topics(kafka, [TopicSpec(name, 3)])
    return name


@pytest.fixture
async def effects_db(box_db: str) -> str:
    conn = await asyncpg.connect(box_db)
    try:
        await conn.execute(handlers_effects.SCHEMA)
    finally:
        await conn.close()
    return box_db


async def send(kafka: KafkaAccess, serde: EventSerde, topic: str, events: list[EventBase],
               ) -> list[EncodedEvent]:
    producer = kafka.producer(acks="all", linger_ms=5)
    await producer.start()
    encoded = [await serde.encode(e, topic) for e in events]
    try:
        for e in encoded:
            await producer.send(topic, e.value, key=e.key, headers=e.headers)
        await producer.flush()
    finally:
        await producer.stop()
    return encoded


async def effects(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch("SELECT * FROM effects ORDER BY applied_order"))
    finally:
        await conn.close()


async def wait_effects(dsn: str, count: int, within: float = 60) -> list[asyncpg.Record]:
    async with asyncio.timeout(within):
        while len(rows := await effects(dsn)) < count:
            await asyncio.sleep(0.1)
    return rows


async def wait_for_log(path: Path, text: str, within: float = 60) -> None:
    async with asyncio.timeout(within):
        while not path.exists() or text not in path.read_text():
            await asyncio.sleep(0.1)


def assert_once_and_in_order(rows: list[asyncpg.Record], events: list[EventBase]) -> None:
    assert all(r["times"] == 1 for r in rows), "an effect was applied twice"
    by_aggregate: dict[str, list[int]] = {}
    for r in rows:
        by_aggregate.setdefault(r["aggregate"], []).append(r["seq"])
    for aggregate, seqs in by_aggregate.items():
        assert seqs == sorted(seqs), f"{aggregate} applied out of order"
    assert {r["event_id"] for r in rows} == {
        e.meta.event_id for e in events}


def make_inbox(settings: Settings, dsn: str, kafka: KafkaAccess, serde: EventSerde,
               **options: Any) -> Inbox:
    return Inbox(settings, dsn, kafka, BOX, handlers_effects.handlers, serde,
                 base_delay=0.05, **options)


async def run_until(inbox: Inbox, condition: Any, within: float = 60) -> None:
    task = asyncio.create_task(inbox.run())
    try:
        try:
            async with asyncio.timeout(within):
                while not await condition():
                    assert not task.done(), task.exception()
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(f"inbox: applied {inbox.applied}, duplicates "
                                 f"{inbox.duplicates}, dead-lettered {inbox.dead_lettered}"
                                 ) from None
    finally:
        inbox.stop()
        await task


async def test_each_event_applied_once_even_when_delivered_twice(
    box_settings: Settings, effects_db: str, kafka: KafkaAccess, box_serde: EventSerde, topic: str,
) -> None:
    events = [comment(f"o-{n % 4}", n) for n in range(40)]
    await send(kafka, box_serde, topic, events)
    await send(kafka, box_serde, topic, events[:10])  # redelivered (a producer retry)
    inbox = make_inbox(box_settings, effects_db, kafka, box_serde)

    async def done() -> bool:
        return inbox.applied + inbox.duplicates >= 50

    await run_until(inbox, done)
    assert (inbox.applied, inbox.duplicates) == (40, 10)
    assert_once_and_in_order(await effects(effects_db), events)

    # A restart resumes from the offsets stored with the effects: nothing is applied again.
    again = make_inbox(box_settings, effects_db, kafka, box_serde)
    more = [comment("o-9", 100)]
    await send(kafka, box_serde, topic, more)

    async def one_more() -> bool:
        return again.applied >= 1

    await run_until(again, one_more)
    assert (again.applied, again.duplicates) == (1, 0)
    assert_once_and_in_order(await effects(effects_db), events + more)

    # The group's Kafka offsets mirror the stored positions (for lag tools), and the stored
    # positions are the end of each partition: everything consumed.
    conn = await asyncpg.connect(effects_db)
    try:
        stored = {r["partition"]: r["next_offset"] for r in await conn.fetch(
            "SELECT partition, next_offset FROM boxbus_inbox_offsets WHERE consumer = $1",
            again.group_id)}
    finally:
        await conn.close()
    admin = kafka.admin()
    await admin.start()
    try:
        mirrored = await admin.list_consumer_group_offsets(again.group_id)
    finally:
        await admin.close()
    # (a partition that never had an event is at the log's start, 0)
    assert {tp.partition: meta.offset for tp, meta in mirrored.items()} == {
        p: stored.get(p, 0) for p in range(3)}
    assert sum(stored.values()) == 51


async def test_an_inbox_killed_mid_batch_applies_each_effect_once(
    box_settings: Settings, effects_db: str, kafka: KafkaAccess, box_serde: EventSerde, topic: str,
    stack: StackInfo, tmp_path: Path,
) -> None:
    """`boxbus inbox run` is SIGKILLed while it applies a batch; after a restart every event
    has its effect exactly once, in per-aggregate order."""
    events = [comment(f"o-{n % 9}", n) for n in range(600)]
    await send(kafka, box_serde, topic, events)
    env = {**os.environ, "BOXBUS_DATABASE_URL": effects_db,
           **kafka.env(),
           "BOXBUS_SCHEMA_REGISTRY_URL": str(stack.schema_registry_url),
           "BOXBUS_TOPIC_NAMESPACE": box_settings.topic_namespace,
           "HANDLER_DELAY": "0.004", "PYTHONPATH": str(REPO)}
    # (Fetches smaller than the events: the kill lands between committed batches.)
    argv = [sys.executable, "-m", "boxbus.cli.main", "inbox", "run", "--box", BOX,
            "--handlers", "tests.box.handlers_effects", "--max-records", "200"]

    def start(name: str, *extra: str) -> subprocess.Popen[bytes]:
        with open(tmp_path / name, "wb") as log:
            return subprocess.Popen([*argv, *extra], env=env, stdout=log,
                                    stderr=subprocess.STDOUT)

    first = start("inbox-1.log")
    try:
        await wait_effects(effects_db, 150)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    partial = len(await effects(effects_db))
    assert partial < len(events), "killed too late to prove anything"
    port = free_ports(1)[0]
    second = start("inbox-2.log", "--metrics-port", str(port))
    try:
        rows = await wait_effects(effects_db, len(events), within=90)
        # Its metrics count what this process applied: exactly the rest, no duplicate (the
        # killed process's last batch never committed).
        samples = await wait_metric(port, "boxbus_inbox_applied_total",
                                    lambda v: v == len(events) - partial)
        assert samples["boxbus_inbox_duplicates_total"] == 0
    finally:
        second.send_signal(signal.SIGTERM)
        code = second.wait(timeout=30)
    assert_once_and_in_order(rows, events)
    assert code == 0  # SIGTERM: the batch in flight finished or was abandoned, cleanly
    assert "inbox stopped" in (tmp_path / "inbox-2.log").read_text()

    # A rebalance: a fourth member joins while the third works; still once and in order.
    # (Enough events that the third is still at work when the fourth has joined: 4 ms each.)
    more = [comment(f"o-{n % 9}", n) for n in range(600, 2400)]
    await send(kafka, box_serde, topic, more)
    third = start("inbox-3.log")
    try:
        await wait_effects(effects_db, len(events) + 100)
        fourth = start("inbox-4.log")
        try:
            await wait_for_log(tmp_path / "inbox-4.log", "partitions assigned")
            assert len(await effects(effects_db)) < len(events) + len(more), \
                "the third finished before the fourth joined: no rebalance under work"
            rows = await wait_effects(effects_db, len(events) + len(more), within=120)
        finally:
            fourth.send_signal(signal.SIGTERM)
            fourth_code = fourth.wait(timeout=30)
    finally:
        third.send_signal(signal.SIGTERM)
        third_code = third.wait(timeout=30)
    assert_once_and_in_order(rows, events + more)
    # Both members lived through the rebalance (neither crashed, leaving all to the other).
    assert (third_code, fourth_code) == (0, 0)
    assert "inbox stopped" in (tmp_path / "inbox-3.log").read_text()


async def test_a_poison_event_is_dead_lettered_and_later_events_applied(
    box_settings: Settings, effects_db: str, kafka: KafkaAccess, box_serde: EventSerde, topic: str,
) -> None:
    events = [comment("o-1", 1), comment("o-1", 2, "poison"), comment("o-1", 3),
              example("boxbus.orders.OrderCancelled").model_copy(update={
                  "meta": example("boxbus.orders.OrderCancelled").meta.model_copy(
                      update={"aggregate_key": "o-1", "region": "north"})}),
              # A subscriber's copy of a broadcast (no target) is applied, not answered.
              comment("o-2", 4).model_copy(update={"meta": comment("o-2", 4).meta.model_copy(
                  update={"target_box": None})})]
    await send(kafka, box_serde, topic, events)
    inbox = make_inbox(box_settings, effects_db, kafka, box_serde, receipts=True,
                       region="north")

    async def done() -> bool:
        return inbox.dead_lettered >= 2 and inbox.applied >= 3

    await run_until(inbox, done)
    rows = await effects(effects_db)
    assert [r["seq"] for r in rows] == [1, 3, 4]
    letters = await read_all(kafka, naming.dlq_topic(topic), 2)
    reasons = {dict(r.headers)["dlq_code"].decode(): dict(r.headers)["dlq_reason"].decode()
               for r in letters}
    assert "refused by the business rules" in reasons["rejected-by-handler"]
    assert "no handler for boxbus.orders.OrderCancelled" in reasons["unknown-event-type"]
    # Receipts: ACCEPTED for the applied ones, REJECTED with the reason for the poison one.
    conn = await asyncpg.connect(effects_db)
    try:
        receipts = await conn.fetch("SELECT event_type, topic FROM boxbus_outbox ORDER BY id")
        statuses = await conn.fetch(
            "SELECT status, count(*) AS n FROM boxbus_inbox_events GROUP BY status")
    finally:
        await conn.close()
    assert [r["event_type"] for r in receipts] == ["boxbus.network.DeliveryReceipt"] * 4
    assert {r["status"]: r["n"] for r in statuses} == {"applied": 3, "dead-lettered": 2}


async def test_an_unforeseen_error_in_a_check_dead_letters_the_record_and_goes_on(
    box_settings: Settings, effects_db: str, kafka: KafkaAccess, box_serde: EventSerde, topic: str,
) -> None:
    """The inbox runs on the same pipeline as every consumer: a check that fails in a way
    nobody foresaw dead-letters that record (with the exception) instead of ending the run."""
    await send(kafka, box_serde, topic, [comment("o-9", 1), comment("o-9", 2, "odd"),
                                         comment("o-9", 3)])
    inbox = make_inbox(box_settings, effects_db, kafka, box_serde)
    real = inbox._signatures.refused

    async def refused(record: Any, event_type: str) -> Any:
        if b"odd" in (record.value or b""):
            raise ZeroDivisionError("a bug in a check")
        return await real(record, event_type)

    inbox._signatures.refused = refused  # type: ignore[method-assign]

    async def done() -> bool:
        return inbox.dead_lettered >= 1 and inbox.applied >= 2

    await run_until(inbox, done)
    assert [r["seq"] for r in await effects(effects_db)] == [1, 3]
    (letter,) = await read_all(kafka, naming.dlq_topic(topic), 1)
    headers = dict(letter.headers)
    assert headers["dlq_code"] == b"unexpected-error"
    assert b"ZeroDivisionError" in headers["dlq_reason"]


async def test_unknown_types_can_be_skipped_by_policy(
    box_settings: Settings, effects_db: str, kafka: KafkaAccess, box_serde: EventSerde, topic: str,
) -> None:
    cancelled = example("boxbus.orders.OrderCancelled")
    await send(kafka, box_serde, topic, [cancelled, comment("o-2", 1)])
    inbox = make_inbox(box_settings, effects_db, kafka, box_serde,
                       unknown_types=UnknownTypePolicy.SKIP)

    async def done() -> bool:
        return inbox.applied >= 1

    await run_until(inbox, done)
    assert inbox.dead_lettered == 0
    conn = await asyncpg.connect(effects_db)
    try:
        status = await conn.fetchval("SELECT status FROM boxbus_inbox_events WHERE event_id = $1",
                                     cancelled.meta.event_id)
    finally:
        await conn.close()
    assert status == "skipped"


async def test_a_retry_backs_off_without_blocking_other_partitions(
    box_settings: Settings, effects_db: str, kafka: KafkaAccess, box_serde: EventSerde, topic: str,
) -> None:
    # Find two aggregates that land on different partitions.
    keys = [f"o-{uuid.uuid4().hex[:4]}" for _ in range(12)]
    encoded = await send(kafka, box_serde, topic, [comment(k, 0) for k in keys])
    records = await read_all(kafka, topic, len(keys))
    partition_of = {r.key.decode(): r.partition for r in records}
    slow = keys[0]
    fast = next(k for k in keys if partition_of[k] != partition_of[slow])
    assert encoded
    await send(kafka, box_serde, topic, [comment(slow, 1, "flaky:3"),
                                             comment(fast, 1), comment(fast, 2)])
    inbox = make_inbox(box_settings, effects_db, kafka, box_serde)
    inbox.state.retry.base_delay = 0.5  # long enough to see the other partition pass by

    async def done() -> bool:
        return inbox.applied >= len(keys) + 3

    await run_until(inbox, done)
    rows = await effects(effects_db)
    order = [(r["aggregate"], r["seq"]) for r in rows]
    # The fast aggregate's later events went through while the slow one was backing off.
    assert order.index((fast, 2)) < order.index((slow, 1))
    assert all(r["times"] == 1 for r in rows)


async def test_postgresql_restarted_under_the_inbox(
    box_settings: Settings, kafka: KafkaAccess, box_serde: EventSerde, topic: str, run_root: Path,
) -> None:
    """The box's PostgreSQL dies (SIGKILL) while the inbox applies events and comes back on
    its data: the inbox reconnects and every effect is there exactly once."""
    from bus import create_database
    from bus.devstack import Component, LocalStack, procs
    from bus.devstack.state import StackState
    from connectors.box import migrate

    pg_settings = Settings(run_dir=run_root / f"pg-{uuid.uuid4().hex[:6]}")
    pg_stack = LocalStack(pg_settings, components=frozenset({Component.POSTGRES}), base_port=0)
    info = await pg_stack.up()
    try:
        assert info.database_url
        dsn = await create_database(info.database_url, "box_restart")
        await migrate(dsn)
        conn = await asyncpg.connect(dsn)
        await conn.execute(handlers_effects.SCHEMA)
        await conn.close()
        events = [comment(f"o-{n % 5}", n) for n in range(300)]
        await send(kafka, box_serde, topic, events)
        os.environ["HANDLER_DELAY"] = "0.003"
        inbox = make_inbox(box_settings, dsn, kafka, box_serde)
        task = asyncio.create_task(inbox.run())
        try:
            await wait_effects(dsn, 60)
            state = StackState.load(pg_settings.run_dir)
            assert state is not None
            procs.kill(state.processes["postgres"])
            await asyncio.sleep(1)
            await pg_stack.up()  # the same data directory, after crash recovery
            rows = await wait_effects(dsn, len(events), within=90)
        finally:
            os.environ.pop("HANDLER_DELAY", None)
            inbox.stop()
            await task
        assert_once_and_in_order(rows, events)
    finally:
        pg_stack.down()


async def test_a_retry_that_never_succeeds_ends_in_the_dead_letter_topic(
    box_settings: Settings, effects_db: str, kafka: KafkaAccess, box_serde: EventSerde, topic: str,
) -> None:
    """Retries are bounded for a single handler and for a batch handler alike: the event is
    dead-lettered with the reason and the partition goes on."""
    from connectors.box import Applied, Handlers, Retry

    batch_handlers = Handlers()

    @batch_handlers.on_batch(type(comment("x", 0)))
    async def apply(batch: list[tuple[Any, Applied]]) -> None:
        for event, applied in batch:
            if event.text.startswith("flaky"):
                raise Retry("the warehouse system is busy")
            await applied.conn.execute(
                "INSERT INTO effects (event_id, aggregate, seq) VALUES ($1, $2, $3)",
                event.meta.event_id, event.subject_id, int(event.comment_id.rsplit("-", 1)[1]))

    events = [comment("o-7", 1), comment("o-7", 2, "flaky:99"), comment("o-7", 3)]
    await send(kafka, box_serde, topic, events)
    for registry in (handlers_effects.handlers, batch_handlers):
        inbox = Inbox(box_settings, effects_db, kafka, BOX, registry, box_serde,
                      max_attempts=3, base_delay=0.05)
        conn = await asyncpg.connect(effects_db)
        await conn.execute("TRUNCATE effects, boxbus_inbox_events, boxbus_inbox_offsets")
        await conn.close()

        async def done(inbox: Inbox = inbox) -> bool:
            return inbox.applied >= 2 and inbox.dead_lettered >= 1

        await run_until(inbox, done, within=30)
        assert [r["seq"] for r in await effects(effects_db)] == [1, 3]
    # The same event, dead-lettered once by each run.
    letters = await read_topic(kafka, naming.dlq_topic(topic))
    assert len(letters) == 2
    assert all("gave up after 3 attempts" in dict(r.headers)["dlq_reason"].decode()
               for r in letters)
