"""Kafka 4.x dropped old protocol versions (KIP-896). Everything of the Kafka protocol that boxbus
and faust use through aiokafka 0.14 is exercised here against the embedded broker, so a Kafka
upgrade that breaks one of them fails this file, not a later feature."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import OffsetAndMetadata

from bus import Settings, TopicSpec, ensure_topics
from bus.kafka import KafkaAccess

pytestmark = pytest.mark.stack


@pytest.fixture
async def admin(kafka: KafkaAccess) -> AsyncIterator[AIOKafkaAdminClient]:
    client = kafka.admin()
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def test_topic_administration(
    settings: Settings, kafka: KafkaAccess, admin: AIOKafkaAdminClient
) -> None:
    topic = f"it.proto.admin.{uuid.uuid4().hex[:8]}"
    spec = TopicSpec(topic, 2, configs={"retention.ms": "3600000"})
    await ensure_topics(kafka, [spec])

    await admin.create_partitions({topic: NewPartitions(total_count=4)})
    (described,) = await admin.describe_topics([topic])
    assert len(described["partitions"]) == 4

    resource = ConfigResource(ConfigResourceType.TOPIC, topic)
    await admin.alter_configs([ConfigResource(
        ConfigResourceType.TOPIC, topic,
        configs={"retention.ms": "7200000", "cleanup.policy": "compact"},
    )])
    (response,) = await admin.describe_configs([resource])
    configs = {entry[0]: entry[1] for entry in response.resources[0][4]}
    assert configs["retention.ms"] == "7200000"
    assert configs["cleanup.policy"] == "compact"

    await admin.delete_topics([topic])
    async with asyncio.timeout(30):
        while topic in await admin.list_topics():
            await asyncio.sleep(0.1)


async def test_groups_offsets_and_record_deletion(
    settings: Settings, kafka: KafkaAccess, admin: AIOKafkaAdminClient
) -> None:
    topic = f"it.proto.groups.{uuid.uuid4().hex[:8]}"
    group = f"it-proto-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka, [TopicSpec(topic, 1)])
    producer = kafka.producer(compression_type="gzip",
                                linger_ms=5, acks="all")
    await producer.start()
    try:
        for i in range(10):
            await producer.send(topic, f"v{i}".encode(), key=b"k", headers=[("ce_id", b"%d" % i)])
        await producer.flush()
    finally:
        await producer.stop()

    consumer = kafka.consumer(topic, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        records: list[Any] = []
        async with asyncio.timeout(30):
            while len(records) < 10:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records += batch
        assert [r.headers[0] for r in records][:2] == [("ce_id", b"0"), ("ce_id", b"1")]
        tp = TopicPartition(topic, 0)
        await consumer.commit({tp: OffsetAndMetadata(7, "boxbus")})
        groups = [g[0] if isinstance(g, tuple) else g for g in await admin.list_consumer_groups()]
        assert group in groups
        (description,) = await admin.describe_consumer_groups([group])
        assert description.groups[0][0] == 0  # no error
        offsets = await admin.list_consumer_group_offsets(group)
        assert offsets[tp].offset == 7
        # Seeking by time and to the end use ListOffsets.
        assert (await consumer.end_offsets([tp]))[tp] == 10
        found = await consumer.offsets_for_times({tp: 0})
        assert found[tp] is not None and found[tp].offset == 0
    finally:
        await consumer.stop()

    low = await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(before_offset=5)})
    assert low[TopicPartition(topic, 0)] == 5


async def test_transactions_and_read_committed(settings: Settings, kafka: KafkaAccess) -> None:
    topic = f"it.proto.txn.{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka, [TopicSpec(topic, 1)])
    producer = kafka.producer(transactional_id=f"it-txn-{uuid.uuid4().hex[:8]}")
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(topic, b"committed")
        await producer.begin_transaction()
        await producer.send(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(topic, b"after")
    finally:
        await producer.stop()
    consumer = kafka.consumer(topic, isolation_level="read_committed", auto_offset_reset="earliest")
    await consumer.start()
    try:
        seen: list[bytes] = []
        async with asyncio.timeout(30):
            while len(seen) < 2:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    seen += [r.value for r in batch if r.value is not None]
    finally:
        await consumer.stop()
    assert seen == [b"committed", b"after"]
