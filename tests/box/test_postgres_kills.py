"""PostgreSQL SIGKILLed again and again under a busy relay and a busy inbox: both processes
ride it out (neither exits), nothing is lost, nothing is applied twice, nothing is
dead-lettered, and the outbox drains once the database stays up.

The box's PostgreSQL is a server of this test's own (as in the inbox's restart test), so the
kills never touch the suite's shared database."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from bus import Settings, TopicSpec, create_database, ensure_topics, naming
from bus.db import session_lost
from bus.devstack import Component, LocalStack, StackInfo, procs
from bus.devstack.state import StackState
from bus.events import EventBase
from bus.examples import example
from bus.kafka import KafkaAccess
from bus.serde import EventSerde
from bus.topics import read_topic
from connectors.box import Outbox, inbox_topic, migrate
from tests.box import handlers_effects
from tests.box.conftest import RelayProcess, wait_backlog_empty
from tests.conftest import REPO

pytestmark = [pytest.mark.stack, pytest.mark.embedded]

SENDER = "north-shop"
RECEIVER = "dairy-hub"
RATE = 250  # events per second, each in its own transaction
KILLS = 6
AGGREGATES = 16
TIME_LIMIT = 90  # seconds, from the first event to a drained outbox and inbox


def comment(order: str, seq: int) -> EventBase:
    """A CommentAdded of aggregate ``order`` for the receiving box; ``seq`` orders it."""
    data = example("boxbus.collaboration.CommentAdded").model_dump()
    data["meta"] |= {"aggregate_key": order, "correlation_id": order, "region": "north",
                     "source_box": SENDER, "target_box": RECEIVER}
    data |= {"subject_id": order, "comment_id": f"{order}-{seq}", "text": str(seq)}
    return type(example("boxbus.collaboration.CommentAdded")).model_validate(data)


@dataclass
class PrivatePostgres:
    """A PostgreSQL of this test's own, killed and restarted on its data directory."""

    stack: LocalStack
    run_dir: Path
    url: str
    kills: int = 0

    async def kill_and_restart(self) -> None:
        state = StackState.load(self.run_dir)
        assert state is not None
        procs.kill(state.processes["postgres"])
        self.kills += 1
        await self.stack.up()  # the same data directory and port, after crash recovery


@pytest.fixture
async def own_postgres(run_root: Path) -> AsyncIterator[PrivatePostgres]:
    settings = Settings(run_dir=run_root / f"pg-kills-{uuid.uuid4().hex[:6]}")
    stack = LocalStack(settings, components=frozenset({Component.POSTGRES}), base_port=0)
    info: StackInfo = await stack.up()
    try:
        assert info.database_url
        yield PrivatePostgres(stack, settings.run_dir, info.database_url)
    finally:
        stack.down()


@dataclass
class Writer:
    """A box's business code: one transaction per event, ``RATE`` a second; a transaction
    that meets a dead database is tried again (same event id) until it commits."""

    dsn: str
    outbox: Outbox
    topic: str
    written: list[EventBase] = field(default_factory=list)
    retries: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        conn: asyncpg.Connection | None = None
        due = time.monotonic()
        try:
            while not stop.is_set():
                event = comment(f"o-{len(self.written) % AGGREGATES}", len(self.written))
                conn = await self._commit(conn, event)
                self.written.append(event)
                # After an outage, go on at the rate rather than catch up in a burst.
                due = max(due + 1 / RATE, time.monotonic() - 0.05)
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        finally:
            if conn is not None:
                conn.terminate()

    async def _commit(self, conn: asyncpg.Connection | None,
                      event: EventBase) -> asyncpg.Connection:
        while True:
            try:
                if conn is None:
                    conn = await asyncpg.connect(self.dsn, timeout=2)
                async with conn.transaction():
                    await self.outbox.publish(conn, event, self.topic)
                return conn
            except Exception as exc:
                # A commit whose outcome is unknown is retried too: the outbox keeps one row
                # per event id, and the inbox drops a second copy of a published one.
                if not session_lost(exc):
                    raise
                self.retries += 1
                if conn is not None:
                    conn.terminate()
                conn = None
                await asyncio.sleep(0.05)


def start_inbox(dsn: str, kafka: KafkaAccess, stack: StackInfo, settings: Settings,
                log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BOXBUS_DATABASE_URL": dsn, **kafka.env(),
           "BOXBUS_SCHEMA_REGISTRY_URL": str(stack.schema_registry_url),
           "BOXBUS_TOPIC_NAMESPACE": settings.topic_namespace, "BOXBUS_LOG_LEVEL": "INFO",
           # Handlers that take a moment: kills land inside the inbox's transactions too.
           "HANDLER_DELAY": "0.001", "PYTHONPATH": str(REPO)}
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "boxbus.cli.main", "inbox", "run", "--box", RECEIVER,
             "--handlers", "tests.box.handlers_effects"],
            env=env, stdout=log, stderr=subprocess.STDOUT)


async def fetch(dsn: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def wait_effects(dsn: str, count: int, alive: list[subprocess.Popen[bytes]],
                       within: float) -> None:
    async with asyncio.timeout(within):
        while (await fetch(dsn, "SELECT count(*) AS n FROM effects"))[0]["n"] < count:
            assert all(p.poll() is None for p in alive), "a process exited"
            await asyncio.sleep(0.1)


async def test_relay_and_inbox_survive_postgresql_killed_repeatedly(
    own_postgres: PrivatePostgres, box_settings: Settings, box_serde: EventSerde,
    kafka: KafkaAccess, stack: StackInfo, relays: list[RelayProcess], tmp_path: Path,
) -> None:
    sender_db = await create_database(own_postgres.url, "sender")
    receiver_db = await create_database(own_postgres.url, "receiver")
    for dsn in (sender_db, receiver_db):
        await migrate(dsn)
    conn = await asyncpg.connect(receiver_db)
    await conn.execute(handlers_effects.SCHEMA)
    await conn.close()
    topic = inbox_topic(box_settings.topic_namespace, RECEIVER)
    await ensure_topics(kafka, [TopicSpec(topic, 3)])

    relays.append(RelayProcess(SENDER, sender_db, kafka, tmp_path / "relay.log"))
    relay = relays[-1].proc
    inbox = start_inbox(receiver_db, kafka, stack, box_settings, tmp_path / "inbox.log")
    writer = Writer(sender_db, Outbox(box_settings, box_serde), topic)
    stop_writing = asyncio.Event()
    writing = asyncio.create_task(writer.run(stop_writing))

    def logs() -> str:
        return "\n".join(f"--- {name}:\n{procs.tail(tmp_path / name, 40)}"
                         for name in ("relay.log", "inbox.log"))

    try:
        async with asyncio.timeout(TIME_LIMIT):
            # Both busy before the first kill: events flow end to end.
            await wait_effects(receiver_db, 200, [relay, inbox], within=30)
            for _ in range(KILLS):
                await asyncio.sleep(random.uniform(1.0, 2.0))
                assert not writing.done(), writing.exception()
                await own_postgres.kill_and_restart()
                assert relay.poll() is None, f"the relay exited ({relay.returncode})"
                assert inbox.poll() is None, f"the inbox exited ({inbox.returncode})"
            await asyncio.sleep(1.0)  # a last stretch of writing on a database that stays up
            stop_writing.set()
            await writing

            await wait_backlog_empty(sender_db, within=30)
            await wait_effects(receiver_db, len(writer.written), [relay, inbox], within=30)
            assert relay.poll() is None, f"the relay exited ({relay.returncode})"
            assert inbox.poll() is None, f"the inbox exited ({inbox.returncode})"
    except (AssertionError, TimeoutError) as exc:
        raise AssertionError(f"{exc!r}: kills {own_postgres.kills}, written "
                             f"{len(writer.written)}\n{logs()}") from exc
    finally:
        stop_writing.set()
        await asyncio.gather(writing, return_exceptions=True)
        inbox.terminate()
        try:
            inbox.wait(timeout=30)
        except subprocess.TimeoutExpired:
            inbox.kill()
            inbox.wait()

    assert own_postgres.kills >= 5
    assert len(writer.written) > 1000, "too few events written to prove anything"
    # The kills reached the relay (it lost its session and came back), not only the writer.
    assert "lost its database" in (tmp_path / "relay.log").read_text()

    # Every event written was applied exactly once, each aggregate in the order written.
    rows = await fetch(receiver_db, "SELECT * FROM effects ORDER BY applied_order")
    assert all(r["times"] == 1 for r in rows), "an effect was applied twice"
    assert sorted(r["event_id"] for r in rows) == sorted(
        e.meta.event_id for e in writer.written)
    for aggregate in {r["aggregate"] for r in rows}:
        seqs = [r["seq"] for r in rows if r["aggregate"] == aggregate]
        assert seqs == sorted(seqs), f"{aggregate} applied out of order"
    # Nothing was dead-lettered: no event marked so, and no record in the dead-letter topic.
    statuses = await fetch(receiver_db, "SELECT DISTINCT status FROM boxbus_inbox_events")
    assert [r["status"] for r in statuses] == ["applied"]
    assert await read_topic(kafka, naming.dlq_topic(topic)) == []
