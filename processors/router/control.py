"""Following the control topics: the router reads them from their start (compaction keeps the
current network), builds its routing table once it has caught up, and keeps reading, so that a
new box, relationship or subscription applied with ``boxbus topology apply`` takes effect
without a restart. It reads without a consumer group: every router instance needs all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from bus import naming
from bus.errors import ConfigError
from bus.kafka import KafkaAccess, start_or_close
from bus.log import get_logger
from processors.router.table import RoutingTable

log = get_logger(__name__)


class ControlFollower:
    def __init__(self, kafka: KafkaAccess, namespace: str,
                 on_change: Callable[[RoutingTable], None] | None = None) -> None:
        self.namespace = namespace
        self.on_change = on_change
        self.records: dict[str, dict[str, bytes]] = {k: {} for k in naming.CONTROL_KINDS}
        self.table = RoutingTable(namespace)
        self.changes = 0
        self._kafka = kafka
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._kinds: dict[str, str] = {}

    async def start(self, timeout: float = 30) -> RoutingTable:
        """Read every control topic to its current end and build the table."""
        # Kafka clients belong to the running event loop: made here, not in __init__.
        self._consumer = self._kafka.consumer(enable_auto_commit=False, fetch_max_wait_ms=100)
        await start_or_close(self._consumer, self._kafka)
        partitions = []
        for kind in naming.CONTROL_KINDS:
            topic = naming.control_topic(self.namespace, kind)
            found = self._consumer.partitions_for_topic(topic)
            if found is None:
                await self._consumer._client.force_metadata_update()
                found = self._consumer.partitions_for_topic(topic)
            if not found:
                await self._consumer.stop()
                raise ConfigError(f"control topic {topic} does not exist",
                                  hint="apply a topology first: boxbus topology apply FILE")
            self._kinds[topic] = kind
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        ends = await self._consumer.end_offsets(partitions)
        async with asyncio.timeout(timeout):
            while [tp for tp, end in ends.items() if await self._consumer.position(tp) < end]:
                await self._read(200)
        self._rebuild()
        self._task = asyncio.create_task(self._follow(), name="control-follower")
        return self.table

    async def _read(self, timeout_ms: int) -> bool:
        assert self._consumer is not None, "start() first"
        fetched = await self._consumer.getmany(timeout_ms=timeout_ms)
        for tp, records in fetched.items():
            current = self.records[self._kinds[tp.topic]]
            for record in records:
                key = record.key.decode() if record.key else ""
                if record.value is None:
                    current.pop(key, None)
                else:
                    current[key] = record.value
        return bool(fetched)

    def _rebuild(self) -> None:
        try:
            table = RoutingTable.from_control(self.namespace, self.records)
        except (ValueError, KeyError) as exc:
            log.error("control records not understood; keeping the previous routing table",
                      error=str(exc))
            return
        table.keep_memory_of(self.table)
        self.table = table
        self.changes += 1
        log.info("routing table built", **table.describe())
        if self.on_change is not None:
            self.on_change(table)

    async def _caught_up(self) -> bool:
        assert self._consumer is not None
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is not None and await self._consumer.position(tp) < highwater:
                return False
        return True

    async def _follow(self) -> None:
        changed = False
        while True:
            try:
                if await self._read(1000):
                    changed = True
                # An apply writes boxes, then relationships, then subscriptions: build the
                # table once everything written so far is read, not from half of it.
                if changed and await self._caught_up():
                    self._rebuild()
                    changed = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep following; the consumer reconnects by itself
                log.warning("reading the control topics failed; retrying", error=str(exc))
                await asyncio.sleep(1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
