"""Batched sending of forwarded records: one batch per (topic, partition) and round, sent with
aiokafka's ``send_batch``, so that forwarding costs one append per output instead of a future
and a task per record (``send``).

The output partition is ``crc32(key) % partitions``: every record of one aggregate lands on one
partition of each output topic and keeps its order there, in every router instance alike (only
routers write the inbox topics). crc32 runs in C; aiokafka's murmur2 is pure Python and cost
more than the routing decision itself.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from bus.log import get_logger

log = get_logger(__name__)


def key_hash(key: bytes | None) -> int | None:
    return zlib.crc32(key) if key is not None else None


Failure = tuple[Any, str, BaseException]  # the input record, the box, what the brokers said
# The origin of an output that may be dropped when the brokers refuse it for good (the
# router's reports): no input record waits on it.
DROPPABLE = object()


class Outputs:
    """The outputs of one round. ``add`` appends (no I/O); ``send`` submits every batch in
    order and waits until the brokers acknowledged all of them (or raises).

    ``careful``: for a round that failed again and again. Each output goes on its own, and
    ``send`` returns the deliveries the brokers refused for good (a record too large for the
    box's inbox) instead of failing the round, so that the router can quarantine
    them and the other boxes get their events. A retriable error still raises."""

    def __init__(self, producer: AIOKafkaProducer, partitions: dict[str, int],
                 careful: bool = False,
                 renew: Callable[[], Awaitable[AIOKafkaProducer]] | None = None) -> None:
        self._producer = producer
        self.careful = careful
        self._renew = renew  # careful mode: a fresh producer after a refused record
        self._each: list[tuple[Any, ...]] = []
        self._partitions = partitions  # topic -> partition count
        self._open: dict[tuple[str, int], Any] = {}
        # Full batches and records larger than a batch, in the order they must go out.
        self._ready: list[tuple[str, int, Any, tuple[Any, ...] | None]] = []

    def add(self, topic: str, hashed: int | None, fallback: int, key: bytes | None,
            value: bytes | None, timestamp_ms: int, headers: list[tuple[str, bytes]],
            origin: Any = None, box: str = "") -> None:
        partition = (hashed if hashed is not None else fallback) % self._partitions[topic]
        if self.careful:
            self._each.append((topic, partition, key, value, timestamp_ms, headers, origin, box))
            return
        batch = self._open.get((topic, partition))
        if batch is None:
            batch = self._open[(topic, partition)] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=timestamp_ms, headers=headers):
            return
        # Full: it goes out as it is, and the record starts the next batch. A record larger
        # than a whole batch goes alone, right behind it (the partition's order holds).
        if batch.record_count():
            self._ready.append((topic, partition, batch, None))
        batch = self._open[(topic, partition)] = self._producer.create_batch()
        if not batch.append(key=key, value=value, timestamp=timestamp_ms, headers=headers):
            self._ready.append((topic, partition, None, (key, value, timestamp_ms, headers)))
            self._open[(topic, partition)] = self._producer.create_batch()

    async def send(self) -> list[Failure]:
        if self.careful:
            return await self._send_each()
        pending = []
        ready = self._ready + [(t, p, b, None) for (t, p), b in self._open.items()]
        self._ready, self._open = [], {}
        for topic, partition, batch, single in ready:
            if single is not None:
                key, value, timestamp_ms, headers = single
                pending.append(await self._producer.send(
                    topic, value, key=key, partition=partition, timestamp_ms=timestamp_ms,
                    headers=headers))
            elif batch.record_count():
                batch.close()
                pending.append(await self._producer.send_batch(batch, topic,
                                                               partition=partition))
        if pending:
            await asyncio.gather(*pending)
        return []

    async def _send_each(self) -> list[Failure]:
        """One output at a time, each acknowledged before the next: batched together, a
        refused record would take its neighbours down with it."""
        failures: list[Failure] = []
        each, self._each = self._each, []
        for topic, partition, key, value, timestamp_ms, headers, origin, box in each:
            try:
                await (await self._producer.send(topic, value, key=key, partition=partition,
                                                 timestamp_ms=timestamp_ms, headers=headers))
            except KafkaError as exc:
                if origin is None or exc.retriable or isinstance(exc, KafkaTimeoutError):
                    raise  # worth another try, or a quarantine record that failed
                if origin is not DROPPABLE:
                    failures.append((origin, box, exc))
                else:
                    log.warning("a report refused by the brokers is dropped", topic=topic,
                                box=box, error=repr(exc))
                if self._renew is not None:
                    # An idempotent producer's sequence for that partition is broken now: its
                    # next records would be refused as out of order.
                    self._producer = await self._renew()
        return failures
