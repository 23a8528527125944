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
from typing import Any

from aiokafka import AIOKafkaProducer


def key_hash(key: bytes | None) -> int | None:
    return zlib.crc32(key) if key is not None else None


class Outputs:
    """The outputs of one round. ``add`` appends (no I/O); ``send`` submits every batch in
    order and waits until the brokers acknowledged all of them (or raises)."""

    def __init__(self, producer: AIOKafkaProducer, partitions: dict[str, int]) -> None:
        self._producer = producer
        self._partitions = partitions  # topic -> partition count
        self._open: dict[tuple[str, int], Any] = {}
        # Full batches and records larger than a batch, in the order they must go out.
        self._ready: list[tuple[str, int, Any, tuple[Any, ...] | None]] = []
        self.count = 0

    def add(self, topic: str, hashed: int | None, fallback: int, key: bytes | None,
            value: bytes | None, timestamp_ms: int, headers: list[tuple[str, bytes]]) -> None:
        partition = (hashed if hashed is not None else fallback) % self._partitions[topic]
        self.count += 1
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

    async def send(self) -> None:
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
