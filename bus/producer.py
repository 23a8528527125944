"""Publishing events: idempotent, acks from all in-sync replicas, region topic by default."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

from bus import naming
from bus.events import EventBase
from bus.kafka import KafkaAccess, start_or_close
from bus.log import get_logger
from bus.serde import EncodedEvent, EventSerde
from bus.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True)
class Published:
    encoded: EncodedEvent
    partition: int
    offset: int


class EventProducer:
    def __init__(self, settings: Settings, kafka: KafkaAccess, serde: EventSerde,
                 **producer_options: Any) -> None:
        self.settings = settings
        self.serde = serde
        self._kafka = kafka
        self._producer = kafka.producer(acks="all", enable_idempotence=True,
                                        **producer_options)

    async def __aenter__(self) -> EventProducer:
        await start_or_close(self._producer, self._kafka)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._producer.stop()

    def topic_for(self, event: EventBase) -> str:
        """The source box's ingress topic: the router proves the source and routes it."""
        return naming.ingress_topic(self.settings.topic_namespace,
                                    event.meta.source_box)

    async def publish(self, event: EventBase, topic: str | None = None) -> Published:
        """Publish and wait until the brokers acknowledged the event."""
        encoded = await self.serde.encode(event, topic or self.topic_for(event))
        return await self.send(encoded)

    async def send(self, encoded: EncodedEvent) -> Published:
        meta = await self._producer.send_and_wait(encoded.topic, encoded.value,
                                                  key=encoded.key, headers=encoded.headers)
        log.debug("event published", event_id=encoded.envelope.id, topic=encoded.topic,
                  correlation_id=encoded.envelope.correlation_id)
        return Published(encoded, meta.partition, meta.offset)

    async def send_raw(self, topic: str, key: bytes | None, value: bytes | None,
                       headers: list[tuple[str, bytes]]) -> tuple[int, int]:
        """A record as it is (dead letters, replays); its (partition, offset)."""
        meta = await self._producer.send_and_wait(topic, value, key=key, headers=headers)
        return meta.partition, meta.offset
