"""A three-node KRaft cluster on one host, driven through the `boxbus dev` command as a
developer would: replication factor 3, min.insync.replicas 2. A round trip works with every
node up, after one node is killed with SIGKILL, and after it is back — with aiokafka and with
librdkafka (confluent-kafka), a client boxbus did not write."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from bus import TopicSpec, ensure_topics
from bus.kafka import KafkaAccess
from tests.conftest import boxbus_cli, stack_access

pytestmark = [pytest.mark.stack, pytest.mark.cluster, pytest.mark.embedded]

TOPIC = "it.cluster.orders"


class DevCli:
    def __init__(self, run_dir: Path) -> None:
        self.env = {**os.environ, "BOXBUS_RUN_DIR": str(run_dir)}

    def __call__(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*boxbus_cli(), "dev", *args], env=self.env,
                                capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == expect, result.stderr
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture(scope="module")
def cluster(run_root: Path) -> Iterator[tuple[DevCli, dict[str, Any]]]:
    cli = DevCli(run_root / "cluster")
    info = cli.json("up", "--nodes", "3", "--only", "kafka", "--base-port", "0")
    try:
        yield cli, info
    finally:
        stopped = cli.json("down")["stopped"]
        assert sorted(stopped) == ["kafka-1", "kafka-2", "kafka-3"]


async def aiokafka_round_trip(kafka: KafkaAccess, count: int = 30) -> None:
    token = uuid.uuid4().hex
    producer = kafka.producer(acks="all", enable_idempotence=True, request_timeout_ms=10000)
    await producer.start()
    try:
        for i in range(count):
            await producer.send(TOPIC, f"{token}:{i}".encode(), key=f"k{i % 6}".encode())
        await producer.flush()
    finally:
        await producer.stop()
    consumer = kafka.consumer(TOPIC, group_id=f"g-{token}", auto_offset_reset="earliest",
                              enable_auto_commit=False)
    await consumer.start()
    seen: set[int] = set()
    try:
        async with asyncio.timeout(60):
            while len(seen) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        assert r.value is not None
                        mark, _, n = r.value.decode().partition(":")
                        if mark == token:
                            seen.add(int(n))
            await consumer.commit()
    finally:
        await consumer.stop()
    assert seen == set(range(count))


def librdkafka_round_trip(kafka: KafkaAccess, count: int = 30) -> None:
    token = uuid.uuid4().hex
    delivered: list[str] = []
    failed: list[str] = []

    def report(err: object, msg: object) -> None:
        (failed if err else delivered).append(str(err))

    producer = Producer({**kafka.librdkafka(), "acks": "all", "enable.idempotence": True})
    for i in range(count):
        producer.produce(TOPIC, value=f"{token}:{i}", key=f"k{i % 6}", on_delivery=report)
    assert producer.flush(60) == 0
    assert not failed and len(delivered) == count

    consumer = Consumer({**kafka.librdkafka(), "group.id": f"rd-{token}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([TOPIC])
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while len(seen) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            value = msg.value() if msg is not None and not msg.error() else None
            if value is None:
                continue
            mark, _, n = value.decode().partition(":")
            if mark == token:
                seen.add(int(n))
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert seen == set(range(count))


async def isr_of(kafka: KafkaAccess) -> list[list[int]]:
    admin = kafka.admin()
    await admin.start()
    try:
        (topic,) = await admin.describe_topics([TOPIC])
        return [sorted(p["isr"]) for p in topic["partitions"]]
    finally:
        await admin.close()


async def until_full_isr(kafka: KafkaAccess, within: float = 60) -> None:
    async with asyncio.timeout(within):
        while await isr_of(kafka) != [[1, 2, 3]] * 3:
            await asyncio.sleep(0.2)


async def test_three_nodes_survive_a_killed_node_and_take_it_back(
    cluster: tuple[DevCli, dict[str, Any]],
) -> None:
    cli, info = cluster
    assert [n["alive"] for n in info["nodes"]] == [True, True, True]
    assert info["components"] == {"kafka": "running"}
    kafka = stack_access(info)
    assert kafka.bootstrap.count(",") == 2

    await ensure_topics(kafka, [TopicSpec(TOPIC, partitions=3, replication_factor=3)])
    # Every broker learns of a new topic from the metadata log, not all at the same moment.
    await until_full_isr(kafka)
    await aiokafka_round_trip(kafka)
    await asyncio.to_thread(librdkafka_round_trip, kafka)

    # Node 1 is the first bootstrap address: clients must find the others by themselves.
    cli("kill-node", "1")
    assert [n["alive"] for n in cli.json("status")["nodes"]] == [False, True, True]
    # acks=all with min.insync.replicas=2: two replicas of three are enough to write and read.
    await aiokafka_round_trip(kafka)
    await asyncio.to_thread(librdkafka_round_trip, kafka)

    cli("start-node", "1")
    assert [n["alive"] for n in cli.json("status")["nodes"]] == [True, True, True]
    await aiokafka_round_trip(kafka)
    await asyncio.to_thread(librdkafka_round_trip, kafka)
    # The restarted node catches up and rejoins every in-sync replica set.
    await until_full_isr(kafka)


async def test_up_restarts_only_the_node_that_died(cluster: tuple[DevCli, dict[str, Any]],
) -> None:
    cli, _ = cluster
    before = cli.json("status")["processes"]
    cli("kill-node", "3")
    # `up` without --nodes reuses the three-node stack; asking for one node is refused.
    refused = cli("up", "--nodes", "1", expect=2)
    assert "a 3-node stack is already set up" in refused.stderr
    after = cli.json("up")["processes"]
    assert after["kafka-1"] == before["kafka-1"] and after["kafka-2"] == before["kafka-2"]
    assert after["kafka-3"] != before["kafka-3"]
    await aiokafka_round_trip(stack_access(cli.json("status")))
