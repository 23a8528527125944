"""What an inbox knows about each of its partitions, as a plain object without I/O.

The inbox (:mod:`connectors.box.inbox`) is the loop and the transaction; this is its memory,
changed only through the transitions below, each named for the moment it happens at. The
truth of a position is PostgreSQL's ``boxbus_inbox_offsets`` (written in the batch's
transaction); this object holds the copy the loop acts on.

A partition's life::

    (not ours) --assigned / placed--> ready --committed--> ready (position moves on)
         ^                              |
         +-----------revoked------------+

- ``assigned(tp, start)``: the rebalance listener read the stored offset. Unless the loop
  placed the partition meanwhile (records of a new assignment can come before the listener
  runs), the partition is ready at ``start`` and the consumer must seek there.
- ``placed(tp, start)``: the loop placed a partition the listener could not (it had failed
  to read PostgreSQL, or had not run yet).
- ``resume_at(tp, first_offset)``: records came from before the known position (aiokafka may
  reset a position after the listener's seek, or deliver again what a batch still in flight
  holds): where to seek, or None if they follow on.
- ``taken(tp, next_offset)``: a checked batch was handed to a transaction that runs while the
  next fetch is checked; until it ends, records before ``next_offset`` are not taken again.
- ``committed(tp, next_offset, offsets)``: the batch's transaction committed; its records'
  attempts are forgotten.
- ``set_back(tp)``: the batch's transaction did not commit the partition (a retry, the
  database or the registry away): its records come again from the stored position.
- ``attempt(record)``: one more try of a record whose handler asked to retry (or failed for a
  reason worth retrying); says whether another is allowed, by count and by time since the
  first. ``retry_delay`` is the pause before it (exponential, with jitter).
- ``revoked(tps)``: a rebalance took the partitions: position, readiness and attempts go.
- ``to_mirror(assigned, now)`` / ``mirrored(offsets)``: about once a second the positions are
  copied to the group's Kafka offsets, for lag tools only.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka import TopicPartition

RecordKey = tuple[str, int, int]  # topic, partition, offset


@dataclass
class RetryPolicy:
    max_attempts: int = 5
    max_seconds: float = 60.0
    base_delay: float = 0.2


@dataclass
class InboxState:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    mirror_interval: float = 1.0
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    ready: set[TopicPartition] = field(default_factory=set)
    attempts: dict[RecordKey, tuple[int, float]] = field(default_factory=dict)
    mirrored_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    mirrored_at: float = float("-inf")
    in_flight: dict[TopicPartition, int] = field(default_factory=dict)

    # -- placing partitions -------------------------------------------------------------------

    def assigned(self, tp: TopicPartition, start: int) -> bool:
        """The listener's placement; whether the consumer must seek to ``start``."""
        if tp in self.ready:
            # The loop placed it meanwhile and may have applied past ``start``: seeking back
            # would only re-read duplicates.
            return False
        self.positions[tp] = start
        self.ready.add(tp)
        self.in_flight.pop(tp, None)  # from an earlier ownership: not this one's
        return True

    def placed(self, tp: TopicPartition, start: int) -> None:
        self.positions[tp] = start
        self.ready.add(tp)
        self.in_flight.pop(tp, None)

    def is_ready(self, tp: TopicPartition) -> bool:
        return tp in self.ready

    def resume_at(self, tp: TopicPartition, first_offset: int) -> int | None:
        known = self.in_flight.get(tp, self.positions.get(tp))
        return known if known is not None and first_offset < known else None

    def revoked(self, tps: Iterable[TopicPartition]) -> None:
        gone = set(tps)
        for tp in gone:
            self.ready.discard(tp)
            self.positions.pop(tp, None)
            self.mirrored_offsets.pop(tp, None)
            self.in_flight.pop(tp, None)
        for key in [k for k in self.attempts if TopicPartition(k[0], k[1]) in gone]:
            del self.attempts[key]

    # -- a batch ------------------------------------------------------------------------------

    def taken(self, tp: TopicPartition, next_offset: int) -> None:
        self.in_flight[tp] = next_offset

    def committed(self, tp: TopicPartition, next_offset: int, offsets: Iterable[int]) -> None:
        if tp in self.ready:  # not if it was revoked while its batch committed
            self.positions[tp] = next_offset
            self.in_flight.pop(tp, None)
        for offset in offsets:
            self.attempts.pop((tp.topic, tp.partition, offset), None)

    def set_back(self, tp: TopicPartition) -> None:
        self.in_flight.pop(tp, None)

    def attempt(self, key: RecordKey, now: float) -> bool:
        """Count one more attempt at the record; whether another one is allowed."""
        count, first = self.attempts.get(key, (0, now))
        count += 1
        self.attempts[key] = (count, first)
        return count < self.retry.max_attempts and now - first < self.retry.max_seconds

    def attempts_of(self, key: RecordKey) -> int:
        return self.attempts.get(key, (0, 0.0))[0]

    def retry_delay(self, key: RecordKey, jitter: Callable[[], float] = random.random) -> float:
        """The pause before the next attempt: doubling from ``base_delay``, with jitter."""
        count = max(self.attempts_of(key), 1)
        return float(self.retry.base_delay * 2.0 ** (count - 1) * (0.5 + jitter()))

    # -- the mirror of positions in Kafka ---------------------------------------------------

    def to_mirror(self, assigned: set[TopicPartition], now: float, *, force: bool = False
                  ) -> dict[TopicPartition, int]:
        """Positions to copy to Kafka now (none if the last copy is recent, unless forced)."""
        if not force and now - self.mirrored_at < self.mirror_interval:
            return {}
        self.mirrored_at = now
        return {tp: offset for tp, offset in self.positions.items()
                if tp in assigned and self.mirrored_offsets.get(tp) != offset}

    def mirrored(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.mirrored_offsets.update(offsets)
