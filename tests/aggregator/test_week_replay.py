"""The issue's replay test: a small reference week through the real router and aggregator
processes, while the aggregator is SIGKILLed twice and a second instance joins and leaves.
Afterwards every aggregate equals an independent recomputation from the region topics, and
the stored positions equal the topics' end offsets: each event counted exactly once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from aiokafka import TopicPartition

from bus import Settings, naming
from bus.catalog import SchemaCatalog
from bus.db import create_database
from bus.devstack import StackInfo
from bus.kafka import KafkaAccess
from bus.registry import SchemaRegistry
from bus.topics import partitions_of
from bus.topology import apply_plan, make_plan
from processors.aggregator.bench import Publisher
from processors.aggregator.verify import differences, recompute
from processors.aggregator.week import REGIONS, Week
from processors.router.bench import workload_topology
from tests.conftest import boxbus_cli

pytestmark = pytest.mark.stack


async def test_kills_and_a_second_instance_change_nothing(
    ns_settings: Settings, kafka: KafkaAccess, stack: StackInfo, env_for_cli: dict[str, str],
    tmp_path: Path,
) -> None:
    assert stack.database_url and stack.schema_registry_url
    ns = ns_settings.topic_namespace
    topology = workload_topology(ns)
    await apply_plan(kafka, await make_plan(ns_settings, kafka, topology))
    dsn = await create_database(stack.database_url, f"{ns}_analytics")
    registry = SchemaRegistry(stack.schema_registry_url)
    publisher = Publisher(kafka, registry, SchemaCatalog.load(), ns)
    scratch = tempfile.TemporaryDirectory()
    path = Path(scratch.name) / "week"
    events = await publisher.build(Week(topology, 0.004,
                                        start=datetime(2026, 11, 16, tzinfo=UTC)), path)
    env = {**env_for_cli, "BOXBUS_TOPIC_NAMESPACE": ns, "BOXBUS_LOG_LEVEL": "INFO"}

    def start(*args: str) -> subprocess.Popen[str]:
        with (tmp_path / f"process-{len(running)}.log").open("w") as log:
            return subprocess.Popen([*boxbus_cli(), *args], env=env,
                                    stdout=subprocess.DEVNULL, stderr=log, text=True)

    def told(proc: subprocess.Popen[str]) -> str:
        """What a process logged (its file is named after its place in ``running``)."""
        return (tmp_path / f"process-{running.index(proc)}.log").read_text()[-3000:]

    def aggregator() -> subprocess.Popen[str]:
        return start("aggregator", "run", "--database-url", dsn, "--max-records", "100")

    regions = [tp for r in (*REGIONS, "central")
               for tp in await partitions_of(kafka, naming.region_topic(ns, r))]
    quarter = events // 4
    published = 0

    async def publish(upto: int) -> None:
        """Publish the week's records up to ``upto`` into the boxes' ingress topics."""
        nonlocal published
        await publisher.publish(path, first=published, last=upto)
        published = upto

    async def routed() -> int:
        """The region records once the router has routed everything published."""
        return sum((await settled_ends(kafka, regions, published)).values())

    async def moving(since: int, *alive: subprocess.Popen[str]) -> int:
        """Wait until the aggregates move past ``since`` (a commit); where they are."""
        async with asyncio.timeout(60):
            while (now := await aggregated(dsn, ns)) <= since:
                for proc in alive:
                    assert proc.poll() is None, told(proc)
                await asyncio.sleep(0.02)
        return now

    async def claimed(before: int) -> None:
        """Wait until partitions are claimed again (an instance joined or took over)."""
        async with asyncio.timeout(60):
            while await epochs(dsn) == before:
                await asyncio.sleep(0.05)

    running: list[subprocess.Popen[str]] = []
    router = start("router", "run")
    running.append(router)
    try:
        await publish(quarter)
        total = await routed()
        first = aggregator()
        running.append(first)
        at = await moving(0, first)
        first.kill()  # the first SIGKILL, with records left to aggregate
        first.wait(10)
        assert at < total, "no backlog left when the first instance was killed"
        second = aggregator()
        running.append(second)
        await moving(at, second)
        joined = await epochs(dsn)
        third = aggregator()  # a second instance joins: the partitions are split ...
        running.append(third)
        await claimed(joined)
        at = await aggregated(dsn, ns)
        await publish(2 * quarter)
        await moving(at, second, third)
        third.send_signal(signal.SIGTERM)  # ... and leaves
        assert third.wait(30) == 0, told(third)
        at = await aggregated(dsn, ns)
        await publish(3 * quarter)
        at = await moving(at, second)
        second.kill()  # the second SIGKILL, as the new records come in
        second.wait(10)
        assert at < await routed(), "no backlog left when the second instance was killed"
        last = aggregator()
        running.append(last)
        await publish(events)
        total = await routed()
        async with asyncio.timeout(120):
            while await aggregated(dsn, ns) < total:
                assert last.poll() is None, told(last)
                await asyncio.sleep(0.1)
        last.send_signal(signal.SIGTERM)
        assert last.wait(30) == 0, told(last)
    finally:
        for proc in running:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        scratch.cleanup()
    ends = await settled_ends(kafka, regions, events)
    # The stored positions are the topics' ends, and the aggregates are the recomputation's.
    conn = await asyncpg.connect(dsn)
    try:
        stored = {(r["topic"], r["partition"]): r["next_offset"]
                  for r in await conn.fetch("SELECT * FROM agg_positions")}
        assert {(tp.topic, tp.partition): stored.get((tp.topic, tp.partition), 0)
                for tp in ends} == {(tp.topic, tp.partition): end for tp, end in ends.items()}
        expected = await recompute(kafka, registry, ends)
        assert expected.records == events
        assert await differences(conn, expected) == []
        assert await conn.fetchval("SELECT sum(records) FROM agg_events_hourly") == events
    finally:
        await conn.close()


async def settled_ends(kafka: KafkaAccess, tps: list[TopicPartition], events: int
                       ) -> dict[TopicPartition, int]:
    """The region topics' end offsets once the router has routed every event."""
    consumer = kafka.consumer(enable_auto_commit=False)
    await consumer.start()
    try:
        async with asyncio.timeout(90):
            while True:
                ends = await consumer.end_offsets(tps)
                if sum(ends.values()) >= events:
                    return dict(ends)
                await asyncio.sleep(0.2)
    finally:
        await consumer.stop()


async def epochs(dsn: str) -> int:
    """The sum of the partitions' claim epochs: it grows with every claim."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT coalesce(sum(epoch), 0) FROM agg_positions"))
    finally:
        await conn.close()


async def aggregated(dsn: str, ns: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM agg_positions WHERE consumer = $1",
            f"{ns}.aggregator"))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()

