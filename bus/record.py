"""What boxbus reads of a consumed Kafka record: the fields of aiokafka's ``ConsumerRecord`` of
bytes that checks, dead letters and routing use. A protocol, so a test can hand the pure parts
(the pipeline, the routing table) a plain value without a broker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class KafkaRecord(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True)
class PlainRecord:
    """A record that did not come from a consumer: a dead letter seen as the record it was,
    an event the box test kit delivers in the process."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
