"""The dead-letter topic: where records that are not valid events go, whole and with the
reason, so that nothing bad stops a partition and nothing is silently dropped.

A dead letter keeps the original key, value and headers, and adds ``dlq_*`` headers: the reason
in words and as a code, where the record was (topic, partition, offset, timestamp), when and by
which consumer group it was refused. ``boxbus dlq list|show|replay`` reads them back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError

from bus import naming
from bus.envelope import CORRELATION_ID, ID, format_time, header_text
from bus.errors import BadEvent
from bus.kafka import KafkaAccess, start_or_close
from bus.log import get_logger
from bus.record import KafkaRecord
from bus.topics import TopicSpec, ensure_topics

log = get_logger(__name__)

REASON = "dlq_reason"
CODE = "dlq_code"
TOPIC = "dlq_topic"
PARTITION = "dlq_partition"
OFFSET = "dlq_offset"
TIMESTAMP = "dlq_timestamp"
FAILED_AT = "dlq_failed_at"
GROUP = "dlq_group"
VALUE_DROPPED = "dlq_value_dropped"  # the value was too large even for the dead-letter topic
LETTER_ID = "dlq_id"  # the same for every letter of one record refused by one group
DLQ_HEADERS = (REASON, CODE, TOPIC, PARTITION, OFFSET, TIMESTAMP, FAILED_AT, GROUP,
               VALUE_DROPPED, LETTER_ID)
# Dead-letter topics take records up to this size: an oversize event is kept whole.
DLQ_MAX_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class DeadLetter:
    """A record as the dead-letter topic holds it."""

    topic: str  # where it was read from
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]  # the original headers, without dlq_*
    code: str
    reason: str
    failed_at: str
    group: str
    dlq_partition: int = -1
    dlq_offset: int = -1
    value_dropped: int | None = None  # size of a value too large for the dead-letter topic

    @property
    def letter_id(self) -> str:
        """Who refused which record: a batch read again after a failed commit may write its
        letters twice, and both carry this id (``boxbus dlq replay`` replays one)."""
        where = f"{self.group}\0{self.topic}\0{self.partition}\0{self.offset}"
        return hashlib.sha256(where.encode()).hexdigest()[:24]

    def to_record(self) -> tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]:
        """(dead-letter topic, key, value, headers) for a producer."""
        extra = [(REASON, self.reason), (CODE, self.code), (TOPIC, self.topic),
                 (PARTITION, str(self.partition)), (OFFSET, str(self.offset)),
                 (TIMESTAMP, str(self.timestamp)), (FAILED_AT, self.failed_at),
                 (GROUP, self.group), (LETTER_ID, self.letter_id)]
        headers = self.headers + [(name, value.encode()) for name, value in extra]
        return naming.dlq_topic(self.topic), self.key, self.value, headers

    @classmethod
    def of(cls, record: KafkaRecord, error: BadEvent, group: str) -> DeadLetter:
        """The dead letter of a consumed record (an aiokafka ConsumerRecord) refused with
        ``error``."""
        return cls(
            topic=record.topic, partition=record.partition, offset=record.offset,
            timestamp=record.timestamp, key=record.key, value=record.value,
            headers=[(k, v) for k, v in (record.headers or ()) if k not in DLQ_HEADERS],
            code=error.code, reason=error.message, failed_at=format_time(datetime.now(UTC)),
            group=group,
        )

    @classmethod
    def from_record(cls, record: Any) -> DeadLetter:
        """Read a record of a dead-letter topic back."""
        headers: Sequence[tuple[str, bytes]] = record.headers or ()
        found = {k: v.decode(errors="replace") for k, v in headers
                 if k in DLQ_HEADERS and v is not None}
        return cls(
            topic=found.get(TOPIC, naming.source_of_dlq(record.topic)),
            partition=int(found.get(PARTITION, -1)), offset=int(found.get(OFFSET, -1)),
            timestamp=int(found.get(TIMESTAMP, -1)), key=record.key, value=record.value,
            headers=[(k, v) for k, v in headers if k not in DLQ_HEADERS],
            code=found.get(CODE, "?"), reason=found.get(REASON, "?"),
            failed_at=found.get(FAILED_AT, ""), group=found.get(GROUP, ""),
            dlq_partition=record.partition, dlq_offset=record.offset,
            value_dropped=int(found[VALUE_DROPPED]) if VALUE_DROPPED in found else None,
        )


class DeadLetterWriter:
    """Writes dead letters: creates the dead-letter topics, keeps oversize records whole up to
    ``DLQ_MAX_BYTES`` (beyond that, reason and position without the bytes), logs each one
    with its event and correlation ids. Used by every consumer of boxbus."""

    def __init__(self, kafka: KafkaAccess, group_id: str) -> None:
        self.kafka = kafka
        self.group_id = group_id
        self.written = 0
        self._producer = kafka.producer(acks="all", enable_idempotence=True,
                                        max_request_size=DLQ_MAX_BYTES)

    async def start(self, source_topics: Sequence[str]) -> None:
        await ensure_topics(self.kafka, [
            TopicSpec(naming.dlq_topic(t), configs={"max.message.bytes": str(DLQ_MAX_BYTES)})
            for t in source_topics])
        await start_or_close(self._producer, self.kafka)

    async def stop(self) -> None:
        await self._producer.stop()

    async def write(self, record: KafkaRecord, error: BadEvent, *, to: str | None = None
                    ) -> DeadLetter:
        """Write the letter of ``record`` to its topic's dead-letter topic, or to ``to`` (the
        mailer: each partner's undeliverable mail to a topic of its own)."""
        letter = DeadLetter.of(record, error, self.group_id)
        topic, key, value, headers = letter.to_record()
        topic = to or topic
        try:
            await self._producer.send_and_wait(topic, value, key=key, headers=headers)
        except MessageSizeTooLargeError:
            # Never stall on a dead letter: keep its reason and position, drop only the bytes
            # (they stay in the source topic until its retention ends).
            headers.append((VALUE_DROPPED, str(len(value or b"")).encode()))
            await self._producer.send_and_wait(topic, None, key=key, headers=headers)
        self.written += 1
        log.warning(
            "record dead-lettered", code=error.code, reason=error.message, topic=record.topic,
            partition=record.partition, offset=record.offset, dead_letter_topic=topic,
            event_id=header_text(letter.headers, ID),
            correlation_id=header_text(letter.headers, CORRELATION_ID))
        return letter
