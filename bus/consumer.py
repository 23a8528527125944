"""Consuming events: every record is checked and decoded; a record that is not a valid event
goes to the dead-letter topic with its reason and the partition moves on; offsets are committed
only after the caller has processed the batch (so a crash re-delivers, never loses).

    async with EventConsumer(settings, kafka, [topic], group, serde) as consumer:
        async for batch in consumer.batches():
            for delivery in batch:
                handle(delivery.event)
            # asking for the next batch (or leaving the `async with` without an error)
            # commits this batch's offsets; an exception leaves them uncommitted

Records go through :mod:`bus.pipeline`, the pipeline of every boxbus consumer: a bad record is
dead-lettered once, an unforeseen error while checking one is dead-lettered too, and a registry
that does not answer is waited out (the same record again, then the batch read again), never
dead-lettered or skipped.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import OffsetAndMetadata

from bus import naming
from bus.deadletter import DeadLetterWriter
from bus.envelope import Envelope
from bus.errors import BadEvent, ConfigError
from bus.events import EventBase
from bus.kafka import KafkaAccess, LoginWatch, start_or_close
from bus.log import get_logger
from bus.pipeline import HandBack, OutagePolicy, Pipeline
from bus.record import KafkaRecord
from bus.serde import EventSerde
from bus.settings import Settings
from bus.validation import MAX_EVENT_BYTES, Checked, check_record

log = get_logger(__name__)


class _Forget(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revoked partitions: what the pipeline knew of them goes (their next owner decides)."""

    def __init__(self, pipeline: Pipeline[Any]) -> None:
        self.pipeline = pipeline

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.pipeline.forget(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        pass


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
        outages: OutagePolicy | None = None,
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
        self._topics = topics
        self._pending: dict[TopicPartition, OffsetAndMetadata] = {}
        self._kafka = kafka
        self._consumer = kafka.consumer(
            group_id=group_id, enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset, isolation_level="read_committed")
        self._dead_letters = DeadLetterWriter(kafka, group_id)
        self._pipeline: Pipeline[Checked] = Pipeline(self._check, self._dead_letter,
                                                     policy=outages)
        self._login = LoginWatch(kafka, login_check_every)
        self._consumer.subscribe(topics, listener=_Forget(self._pipeline))

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
        # A refused login (a rotated password) ends the consumer with KafkaAccessDenied
        # rather than a wait without end: LoginWatch.
        async with self._login.running():
            while True:
                async with self._login.guard():
                    await self.commit()
                    fetched = await self._consumer.getmany(timeout_ms=timeout_ms,
                                                           max_records=max_records)
                    if fetched:
                        self._login.records_arrived()
                    try:
                        batch = await self._check_all(fetched)
                    except HandBack as exc:
                        # Still down after the policy's patience: hand the records back and
                        # poll again, so this consumer stays in its group (one that does not
                        # poll for max.poll.interval.ms is removed from it) and retries them.
                        for tp, records in fetched.items():
                            if records:
                                self._consumer.seek(tp, records[0].offset)
                        log.warning("a dependency is still unavailable; the batch is read "
                                    "again", error=str(exc.cause))
                        continue
                yield batch

    @property
    def dead_lettered(self) -> int:
        return self._pipeline.dead_lettered

    async def _check_all(self, fetched: dict[TopicPartition, list[KafkaRecord]]) -> list[Delivery]:
        batch: list[Delivery] = []
        positions: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, records in fetched.items():
            for record, checked in zip(records, await self._pipeline.run(records),
                                       strict=True):
                if checked is not None:
                    batch.append(Delivery(checked.event, checked.envelope, record.topic,
                                          record.partition, record.offset))
            if records:
                positions[tp] = OffsetAndMetadata(records[-1].offset + 1, "")
        self._pending.update(positions)  # only once the whole batch is checked
        return batch

    async def _check(self, record: KafkaRecord) -> Checked:
        return await check_record(record, self.serde, self.settings.topic_namespace,
                                  self.max_event_bytes)

    async def _dead_letter(self, record: KafkaRecord, error: BadEvent) -> None:
        await self._dead_letters.write(record, error)
