"""Creating and reading topics (the topology tool of a later issue builds on this)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, TopicAuthorizationFailedError

from bus.errors import ComponentFailed, KafkaAccessDenied
from bus.kafka import KafkaAccess, start_or_close


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 1
    # None: as many replicas as there are brokers, up to three.
    replication_factor: int | None = None
    configs: dict[str, str] = field(default_factory=dict)


async def _wait_for_leaders(
    admin: AIOKafkaAdminClient, names: list[str], within: float = 30.0
) -> None:
    """A created topic takes a moment to elect leaders; a producer sent to it before then
    gets NotLeaderForPartition and retries. Wait here instead, bounded. Only the topics still
    without leaders are asked about again."""
    deadline = time.monotonic() + within
    waiting = list(names)
    while True:
        described = await admin.describe_topics(waiting)
        ready = {t["topic"] for t in described
                 if t["error_code"] == 0 and t["partitions"]
                 and all(p["leader"] >= 0 for p in t["partitions"])}
        waiting = [name for name in waiting if name not in ready]
        if not waiting:
            return
        if time.monotonic() > deadline:
            shown = ", ".join(waiting[:5]) + (f" and {len(waiting) - 5} more"
                                              if len(waiting) > 5 else "")
            raise ComponentFailed(
                f"{len(waiting)} topic(s) have partitions without a leader after "
                f"{within:.0f} s: {shown}",
                hint="check that every broker of the cluster is up (boxbus dev status)",
            )
        await asyncio.sleep(0.05)


# Topics per CreateTopics request. A network of thousands of boxes asks for ten thousand topics
# and more; one request cannot create more than 10,000 partitions (KAFKA-17870), and with
# 10,087 in one request the local broker left them without leaders past 30 s. In requests of
# 500, `boxbus bench scale --boxes 2000` applied its 10,023 topics (with 2,004 principals and
# 20,036 ACLs) in 63 s.
CREATE_BATCH = 500


async def create_topics(admin: AIOKafkaAdminClient, new: list[NewTopic]) -> None:
    """Create ``new`` and return once each partition has a leader (a producer can send): in
    requests of at most CREATE_BATCH topics, each waited for before the next."""
    for start in range(0, len(new), CREATE_BATCH):
        batch = new[start:start + CREATE_BATCH]
        # Created meanwhile by another process: what we wanted.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(batch, timeout_ms=30000)
        await _wait_for_leaders(admin, [t.name for t in batch])


async def ensure_topics(kafka: KafkaAccess, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; the names of those created."""
    admin = kafka.admin()
    await start_or_close(admin, kafka)
    try:
        existing = set(await admin.list_topics())
        todo = [s for s in specs if s.name not in existing]
        if not todo:
            return []
        brokers = len((await admin.describe_cluster())["brokers"])
        await create_topics(admin, [
            NewTopic(s.name, s.partitions, s.replication_factor or min(3, brokers),
                     topic_configs=dict(s.configs))
            for s in todo
        ])
        return [s.name for s in todo]
    finally:
        await admin.close()


async def list_topics(kafka: KafkaAccess) -> set[str]:
    """The topics of the cluster (those this principal may see)."""
    admin = kafka.admin()
    await start_or_close(admin, kafka)
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def topic_exists(kafka: KafkaAccess, name: str) -> bool:
    return name in await list_topics(kafka)


async def partitions_of(kafka: KafkaAccess, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic`` (empty if it does not exist)."""
    admin = kafka.admin()
    await start_or_close(admin, kafka)
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"] == TopicAuthorizationFailedError.errno:
        raise KafkaAccessDenied(f"Kafka refused {kafka.principal} access to topic {topic}",
                                hint="no ACL allows it; ask the network's operator, or use "
                                "the identity the topic belongs to")
    if described["error_code"] != 0:
        return []
    return [TopicPartition(topic, p["partition"])
            for p in sorted(described["partitions"], key=lambda p: p["partition"])]


async def topic_ends(kafka: KafkaAccess, topics: list[str]) -> dict[TopicPartition, int]:
    """End offsets of every partition of ``topics`` (that exist)."""
    tps = [tp for topic in topics for tp in await partitions_of(kafka, topic)]
    consumer = kafka.consumer(enable_auto_commit=False)
    await start_or_close(consumer, kafka)
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


async def read_topic(kafka: KafkaAccess, topic: str) -> list[Any]:
    """Every record of ``topic`` from the beginning to its end now, without a consumer group
    (nothing committed, nothing rebalanced): for tools that inspect a topic."""
    consumer = kafka.consumer(enable_auto_commit=False)
    await start_or_close(consumer, kafka)
    try:
        tps = await partitions_of(kafka, topic)
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            for tp, batch in (await consumer.getmany(*remaining, timeout_ms=1000)).items():
                records += batch
                if batch and batch[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()
