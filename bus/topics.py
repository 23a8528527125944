"""Creating topics with the Kafka admin API (the topology tool of a later issue builds on this)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bus.errors import ComponentFailed
from bus.settings import Settings


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
    gets NotLeaderForPartition and retries. Wait here instead, bounded."""
    deadline = time.monotonic() + within
    while True:
        described = await admin.describe_topics(names)
        if all(
            t["error_code"] == 0 and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        ):
            return
        if time.monotonic() > deadline:
            raise ComponentFailed(
                f"topics {names} have partitions without a leader after {within:.0f} s",
                hint="check that every broker of the cluster is up (boxbus dev status)",
            )
        await asyncio.sleep(0.05)


async def ensure_topics(settings: Settings, bootstrap: str, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; the names of those created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **settings.kafka_client_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        todo = [s for s in specs if s.name not in existing]
        if not todo:
            return []
        brokers = len((await admin.describe_cluster())["brokers"])
        new = [
            NewTopic(s.name, s.partitions, s.replication_factor or min(3, brokers),
                     topic_configs=dict(s.configs))
            for s in todo
        ]
        # Created meanwhile by another process: what we wanted.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(new, timeout_ms=30000)
        await _wait_for_leaders(admin, [s.name for s in todo])
        return [s.name for s in todo]
    finally:
        await admin.close()
