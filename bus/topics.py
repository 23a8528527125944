"""Creating topics with the Kafka admin API (the topology tool of a later issue builds on this)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bus.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 1
    replication_factor: int = 1
    configs: dict[str, str] = field(default_factory=dict)


async def ensure_topics(settings: Settings, bootstrap: str, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; the names of those created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **settings.kafka_client_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        todo = [s for s in specs if s.name not in existing]
        if not todo:
            return []
        new = [
            NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs))
            for s in todo
        ]
        # Created meanwhile by another process: what we wanted.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(new, timeout_ms=30000)
        return [s.name for s in todo]
    finally:
        await admin.close()
