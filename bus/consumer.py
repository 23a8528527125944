"""Consuming events: every record is checked and decoded; a record that is not a valid event
goes to the dead-letter topic with its reason and the partition moves on; offsets are committed
only after the caller has processed the batch (so a crash re-delivers, never loses).

    async with EventConsumer(settings, kafka, [topic], group, serde) as consumer:
        async for batch in consumer.batches():
            for delivery in batch:
                handle(delivery.event)
            # asking for the next batch (or leaving the `async with` without an error)
            # commits this batch's offsets; an exception leaves them uncommitted

A registry that does not answer is not the record's fault: the consumer backs off and tries
the same record again, without dead-lettering and without skipping it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import OffsetAndMetadata

from bus import naming
from bus.deadletter import DeadLetterWriter
from bus.envelope import Envelope
from bus.errors import BadEvent, ConfigError, RegistryUnavailable, UnexpectedRecordError
from bus.events import EventBase
from bus.kafka import KafkaAccess, LoginWatch, start_or_close
from bus.log import get_logger
from bus.serde import EventSerde
from bus.settings import Settings
from bus.validation import MAX_EVENT_BYTES, check_record

log = get_logger(__name__)


@dataclass(frozen=True)
class Delivery:
    """A valid event and where it came from."""

    event: EventBase
    envelope: Envelope
    topic: str
    partition: int
    offset: int


class EventConsumer:
    def __init__(
        self,
        settings: Settings,
        kafka: KafkaAccess,
        topics: list[str],
        group_id: str,
        serde: EventSerde,
        *,
        max_event_bytes: int = MAX_EVENT_BYTES,
        auto_offset_reset: str = "earliest",
        retry_delay: float = 0.2,
        max_retry_delay: float = 10.0,
        registry_patience: float = 30.0,
        login_check_every: float = 30.0,
    ) -> None:
        dead_letter_topics = [t for t in topics if t.endswith(naming.DLQ_SUFFIX)]
        if dead_letter_topics:
            raise ConfigError(
                f"{', '.join(dead_letter_topics)} is a dead-letter topic: consuming it as events "
                "would dead-letter into itself",
                hint="read dead letters with `boxbus dlq list` or DeadLetter.from_record")
        self.settings = settings
        self.group_id = group_id
        self.serde = serde
        self.max_event_bytes = max_event_bytes
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.registry_patience = registry_patience
        self.dead_lettered = 0
        self._topics = topics
        self._pending: dict[TopicPartition, OffsetAndMetadata] = {}
        self._kafka = kafka
        self._consumer = kafka.consumer(
            *topics, group_id=group_id, enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset, isolation_level="read_committed")
        self._dead_letters = DeadLetterWriter(kafka, group_id)
        self._login = LoginWatch(kafka, login_check_every)

    async def __aenter__(self) -> EventConsumer:
        # Dead-letter topics exist before the first bad record needs one.
        await self._dead_letters.start(self._topics)
        try:
            await start_or_close(self._consumer, self._kafka)
        except BaseException:
            await self._dead_letters.stop()
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if kind is None:
                await self.commit()
        finally:
            await self._consumer.stop()
            await self._dead_letters.stop()

    async def commit(self) -> None:
        """Commit the offsets of the batches handed out so far. If the group rebalanced while
        the batch was processed, the commit is refused and the new owner of those partitions
        reads the batch again: delivery is at least once, and consumers deduplicate by event
        id (the inbox of the box SDK does)."""
        if not self._pending:
            return
        positions, self._pending = self._pending, {}
        assigned = self._consumer.assignment()
        owned = {tp: position for tp, position in positions.items() if tp in assigned}
        if len(owned) < len(positions):
            log.warning("partitions were taken away before their offsets were committed; "
                        "their new owner reads the batch again",
                        partitions=[f"{tp.topic}[{tp.partition}]" for tp in positions
                                    if tp not in owned])
        if not owned:
            return
        try:
            await self._consumer.commit(owned)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("offsets not committed: the group rebalanced; the batch will be read "
                        "again by the partitions' new owner", error=str(exc),
                        partitions=[f"{tp.topic}[{tp.partition}]" for tp in positions])

    async def batches(self, timeout_ms: int = 500, max_records: int = 500,
                      ) -> AsyncGenerator[list[Delivery], None]:
        """Batches of valid events (possibly empty when nothing arrived)."""
        while True:
            await self.commit()
            fetched = await self._consumer.getmany(timeout_ms=timeout_ms,
                                                   max_records=max_records)
            if fetched:
                self._login.records_arrived()
            else:
                await self._login.check()  # a rotated password ends the consumer, loudly
            try:
                batch = await self._check_all(fetched)
            except RegistryUnavailable as exc:
                # Still down after `registry_patience`: hand the records back and poll again,
                # so this consumer stays in its group (one that does not poll for
                # max.poll.interval.ms is removed from it) and retries them afterwards.
                for tp, records in fetched.items():
                    if records:
                        self._consumer.seek(tp, records[0].offset)
                log.warning("schema registry still unavailable; the batch is read again",
                            error=str(exc))
                continue
            yield batch

    async def _check_all(self, fetched: dict[TopicPartition, list[Any]]) -> list[Delivery]:
        batch: list[Delivery] = []
        positions: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, records in fetched.items():
            for record in records:
                delivery = await self._check(record)
                if delivery is not None:
                    batch.append(delivery)
                positions[tp] = OffsetAndMetadata(record.offset + 1, "")
        self._pending.update(positions)  # only once the whole batch is checked
        return batch

    async def _check(self, record: Any) -> Delivery | None:
        delay = self.retry_delay
        give_up = time.monotonic() + self.registry_patience
        while True:
            try:
                checked = await check_record(record, self.serde, self.settings.topic_namespace,
                                             self.max_event_bytes)
            except RegistryUnavailable as exc:
                if time.monotonic() > give_up:
                    raise
                log.warning("schema registry unavailable; retrying the same record",
                            topic=record.topic, partition=record.partition,
                            offset=record.offset, retry_in=round(delay, 2), error=str(exc))
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.max_retry_delay)
                continue
            except BadEvent as exc:
                await self._dead_letter(record, exc)
                return None
            except Exception as exc:
                # A record nobody foresaw must not crash the consumer on every restart.
                log.exception("unexpected error on a record; dead-lettering it",
                              topic=record.topic, partition=record.partition,
                              offset=record.offset)
                await self._dead_letter(record, UnexpectedRecordError(
                    f"unexpected {exc.__class__.__name__} while checking the record: {exc}",
                    hint="a boxbus bug: report it with this dead letter"))
                return None
            return Delivery(checked.event, checked.envelope, record.topic, record.partition,
                            record.offset)

    async def _dead_letter(self, record: Any, error: BadEvent) -> None:
        await self._dead_letters.write(record, error)
        self.dead_lettered += 1
