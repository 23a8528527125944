"""What boxbus reads of a consumed Kafka record: the fields of aiokafka's ``ConsumerRecord`` of
bytes that checks, dead letters and routing use. A protocol, so a test can hand the pure parts
(the pipeline, the routing table) a plain value without a broker."""

from __future__ import annotations

from collections.abc import Sequence
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
