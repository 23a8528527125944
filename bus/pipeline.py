"""One consuming pipeline for every consumer of boxbus: check, dead-letter once, hand over.

A consumer (the SDK's :class:`~bus.consumer.EventConsumer`, a box's inbox) gives the pipeline
a fetched batch of one partition, or of several, in offset order. For each record it runs the
consumer's ``check`` (decode, validate, verify) and returns what the check returned, or None
for a record that is not handed over. One policy, the same in every consumer:

- **A bad record** (the check raised :class:`~bus.errors.BadEvent`): written to the
  dead-letter topic with its reason, once, however often its batch is read again, and the
  partition moves on.
- **An unforeseen error** while checking a record (any other exception: a bug in a check, a
  library's surprise): logged with its traceback and dead-lettered as ``unexpected-error``,
  so one record never stops its partition, nor the consumer.
- **A dependency away** (the schema registry, :class:`~bus.errors.RegistryUnavailable`;
  Kafka, for a check that reads a control topic): not the record's fault, so never
  dead-lettered. The same record is tried again in place, with
  pauses that grow (with jitter), for up to ``patience`` seconds; then :class:`HandBack` is
  raised and the caller seeks the batch back to its first offset and polls again (a consumer
  that stops polling for ``max.poll.interval.ms`` is put out of its group).
- **Another boxbus error** (a refused login, a configuration mistake): not about the record
  either, and waiting does not mend it: it goes up and ends the consumer with its message.
- **The check returned None**: the record is skipped on purpose (an unknown type a box
  ignores); nothing is written.

"Once" holds within a process: a batch read again after a failure starts from its first
offset and is checked again in offset order, so :class:`Once` needs only the highest offset
dead-lettered per partition. After a restart or a rebalance, a batch whose offsets were not
committed is read again by someone who does not know: its dead letters may be written again,
each with the same ``dlq_*`` position headers (a duplicate, never a loss).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from bus.errors import BadEvent, BoxbusError, RegistryUnavailable, UnexpectedRecordError
from bus.log import get_logger
from bus.record import KafkaRecord

log = get_logger(__name__)

T = TypeVar("T")

Check = Callable[[KafkaRecord], Awaitable["T | None"]]
DeadLetterSink = Callable[[KafkaRecord, BadEvent], Awaitable[None]]

YIELD_EVERY = 32
"""Records checked between two turns of the event loop's other tasks (about 1 ms of work)."""


@dataclass(frozen=True)
class OutagePolicy:
    """How long a record waits in place for a dependency that does not answer."""

    first_delay: float = 0.2
    max_delay: float = 10.0
    patience: float = 30.0


class HandBack(Exception):
    """A dependency stayed away for the policy's patience: read the batch again."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Once:
    """Which records of each partition were already dead-lettered: the highest offset per
    partition (records are handled in offset order, and a batch is read again from its
    start)."""

    def __init__(self) -> None:
        self._done: dict[TopicPartition, int] = {}

    def is_new(self, record: KafkaRecord) -> bool:
        return record.offset > self._done.get(TopicPartition(record.topic, record.partition), -1)

    def done(self, record: KafkaRecord) -> None:
        """Mark ``record`` dead-lettered: only once its letter is written (a write that failed
        must be tried again when the batch is read again)."""
        tp = TopicPartition(record.topic, record.partition)
        self._done[tp] = max(record.offset, self._done.get(tp, -1))

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions revoked: whoever reads them next decides for itself."""
        for tp in partitions:
            self._done.pop(tp, None)


class Pipeline(Generic[T]):
    """``check`` every record of a batch, dead-letter the bad ones once, hand over the rest."""

    def __init__(self, check: Callable[[KafkaRecord], Awaitable[T | None]],
                 dead_letter: DeadLetterSink,
                 *, policy: OutagePolicy | None = None,
                 outages: tuple[type[Exception], ...] = (RegistryUnavailable, KafkaError),
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._check = check
        self._dead_letter = dead_letter
        self.policy = policy or OutagePolicy()
        self.outages = outages
        self._sleep = sleep
        self._clock = clock
        self.once = Once()
        self.dead_lettered = 0

    async def run(self, records: Sequence[KafkaRecord]) -> list[T | None]:
        """The check's result for each record, None for those not handed over. Raises
        :class:`HandBack` when a dependency stayed away; dead letters already written stay
        written (the batch, read again, does not write them twice).

        Every :data:`YIELD_EVERY` records the loop's other tasks get a turn. A check rarely
        waits (the registry's answers are cached), so without it a fetch of 500 records held
        the event loop for its whole check, about 15 ms: the batch before, committing in a
        task of its own, could not send its next statement or read a reply meanwhile, and
        the inbox's pipelining was serial in fact (in ``boxbus bench outbox --only inbox``
        the wait for the commit took as long as the commit itself)."""
        results: list[T | None] = []
        for done, record in enumerate(records, 1):
            results.append(await self.one(record))
            if not done % YIELD_EVERY:
                await asyncio.sleep(0)
        return results

    async def one(self, record: KafkaRecord) -> T | None:
        delay = self.policy.first_delay
        give_up: float | None = None  # from the first outage on (the common case has none)
        while True:
            try:
                return await self._check(record)
            except BadEvent as exc:
                await self.dead_letter_once(record, exc)
                return None
            except self.outages as exc:
                if give_up is None:
                    give_up = self._clock() + self.policy.patience
                if self._clock() >= give_up:
                    raise HandBack(exc) from exc
                log.warning("a dependency of the check is unavailable; the same record is "
                            "tried again", topic=record.topic, partition=record.partition,
                            offset=record.offset, retry_in=round(delay, 2), error=str(exc))
                await self._sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.policy.max_delay)
            except BoxbusError:
                raise
            except Exception as exc:
                log.exception("unexpected error while checking a record; dead-lettering it",
                              topic=record.topic, partition=record.partition,
                              offset=record.offset)
                await self.dead_letter_once(record, unexpected(exc))
                return None

    async def dead_letter_once(self, record: KafkaRecord, error: BadEvent) -> None:
        if self.once.is_new(record):
            await self._dead_letter(record, error)
            self.once.done(record)
            self.dead_lettered += 1

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        self.once.forget(partitions)


def unexpected(exc: BaseException) -> UnexpectedRecordError:
    """The dead-letter reason for an error nobody foresaw."""
    return UnexpectedRecordError(
        f"unexpected {exc.__class__.__name__} while checking the record: {exc}",
        hint="a boxbus bug or a check's: report it with this dead letter")
