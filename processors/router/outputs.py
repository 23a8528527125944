"""Batched sending of forwarded records: one batch per (topic, partition) and round, sent with
aiokafka's ``send_batch``, so that forwarding costs one append per output instead of a future
and a task per record (``send``). The partition is chosen like Kafka's default partitioner
(murmur2 of the key), so every record of one aggregate lands on one partition of each output
topic and keeps its order there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2


def key_hash(key: bytes | None) -> int | None:
    return murmur2(key) & 0x7FFFFFFF if key is not None else None


class Outputs:
    """The outputs of one round. ``add`` appends, ``send`` submits every batch and waits until
    the brokers acknowledged all of them (or raises)."""

    def __init__(self, producer: AIOKafkaProducer, partitions: dict[str, int]) -> None:
        self._producer = producer
        self._partitions = partitions  # topic -> partition count
        self._batches: dict[tuple[str, int], Any] = {}
        self._pending: list[asyncio.Future[Any]] = []
        self.count = 0

    async def add(self, topic: str, hashed: int | None, fallback: int, key: bytes | None,
                  value: bytes | None, timestamp_ms: int,
                  headers: Sequence[tuple[str, bytes]]) -> None:
        count = self._partitions[topic]
        partition = (hashed if hashed is not None else fallback) % count
        self.count += 1
        batch = self._batches.get((topic, partition))
        if batch is None:
            batch = self._batches[(topic, partition)] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=timestamp_ms, headers=headers):
            return
        # The batch is full: submit it and start the next one. A record larger than a whole
        # batch goes on its own, right behind it (the producer keeps a partition's order).
        if batch.record_count():
            await self._submit(topic, partition, batch)
        batch = self._batches[(topic, partition)] = self._producer.create_batch()
        if not batch.append(key=key, value=value, timestamp=timestamp_ms, headers=headers):
            self._pending.append(await self._producer.send(
                topic, value, key=key, partition=partition, timestamp_ms=timestamp_ms,
                headers=list(headers)))
            self._batches[(topic, partition)] = self._producer.create_batch()

    async def _submit(self, topic: str, partition: int, batch: Any) -> None:
        batch.close()
        self._pending.append(await self._producer.send_batch(batch, topic,
                                                             partition=partition))

    async def send(self) -> None:
        for (topic, partition), batch in self._batches.items():
            if batch.record_count():
                await self._submit(topic, partition, batch)
        self._batches.clear()
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)
