"""The consuming pipeline's policy, on plain records and a fake clock (no broker): bad records
dead-lettered once however often their batch is read, unforeseen errors dead-lettered instead
of ending the consumer, a dependency away retried in place and then the batch handed back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from aiokafka import TopicPartition

from bus.errors import BadEvent, InvalidEnvelope, KafkaAccessDenied, RegistryUnavailable
from bus.pipeline import YIELD_EVERY, HandBack, OutagePolicy, Pipeline
from bus.record import KafkaRecord


@dataclass(frozen=True)
class Record:
    offset: int
    value: bytes
    topic: str = "ns.box.a.inbox"
    partition: int = 0
    timestamp: int = 0
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


class World:
    """The check, the dead-letter topic and the clock the pipeline sees."""

    def __init__(self) -> None:
        self.letters: list[tuple[int, str]] = []
        self.now = 0.0
        self.slept: list[float] = []
        self.registry_down_until = -1.0
        self.dead_letter_topic_down = False

    async def check(self, record: KafkaRecord) -> str | None:
        if record.value == b"bad":
            raise InvalidEnvelope("no ce_type header")
        if record.value == b"boom":
            raise KeyError("a bug in a check")
        if record.value == b"skip":
            return None
        if record.value == b"denied":
            raise KafkaAccessDenied("Kafka refused User:ns.box.a the topic ns.control.signing")
        if self.now < self.registry_down_until:
            raise RegistryUnavailable("registry at 127.0.0.1:1 does not answer")
        return (record.value or b"").decode()

    async def dead_letter(self, record: KafkaRecord, error: BadEvent) -> None:
        if self.dead_letter_topic_down:
            raise ConnectionError("the dead-letter topic's brokers do not answer")
        self.letters.append((record.offset, error.code))

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def pipeline(self, **policy: float) -> Pipeline[str]:
        return Pipeline(self.check, self.dead_letter, policy=OutagePolicy(**policy),
                        sleep=self.sleep, clock=lambda: self.now)


def batch(*values: bytes, start: int = 0) -> list[Record]:
    return [Record(start + i, v) for i, v in enumerate(values)]


async def test_valid_records_are_handed_over_and_bad_ones_dead_lettered() -> None:
    world = World()
    out = await world.pipeline().run(batch(b"a", b"bad", b"skip", b"b"))
    assert out == ["a", None, None, "b"]
    assert world.letters == [(1, "invalid-envelope")]


async def test_an_unforeseen_error_is_dead_lettered_not_raised() -> None:
    world = World()
    out = await world.pipeline().run(batch(b"boom", b"a"))
    assert out == [None, "a"]
    assert world.letters == [(0, "unexpected-error")]


async def test_a_batch_read_again_writes_its_dead_letters_once() -> None:
    world = World()
    pipeline = world.pipeline()
    records = batch(b"bad", b"a", b"boom", b"b")
    for _ in range(3):  # e.g. the handlers asked for a retry twice
        await pipeline.run(records)
    assert world.letters == [(0, "invalid-envelope"), (2, "unexpected-error")]
    assert pipeline.dead_lettered == 2
    # A later bad record of the same partition is new; another partition is its own.
    await pipeline.run(batch(b"bad", start=10))
    await pipeline.run([Record(0, b"bad", partition=1)])
    assert world.letters[2:] == [(10, "invalid-envelope"), (0, "invalid-envelope")]


async def test_a_revoked_partition_is_forgotten() -> None:
    world = World()
    pipeline = world.pipeline()
    await pipeline.run(batch(b"bad"))
    pipeline.forget([TopicPartition("ns.box.a.inbox", 0)])
    await pipeline.run(batch(b"bad"))  # given back later from an uncommitted offset
    assert world.letters == [(0, "invalid-envelope"), (0, "invalid-envelope")]


async def test_a_short_outage_is_waited_out_in_place() -> None:
    world = World()
    world.registry_down_until = 1.0
    out = await world.pipeline(first_delay=0.2, max_delay=10, patience=30).run(batch(b"a"))
    assert out == ["a"]
    assert world.letters == []  # not the record's fault
    assert len(world.slept) >= 2
    # Pauses grow (with jitter between half and one and a half of the nominal delay).
    assert world.slept[1] > world.slept[0] * 0.3 and world.slept[-1] <= 10 * 1.5


async def test_a_long_outage_hands_the_batch_back_and_nothing_is_dead_lettered() -> None:
    world = World()
    world.registry_down_until = 1_000.0
    pipeline = world.pipeline(first_delay=1, max_delay=4, patience=20)
    with pytest.raises(HandBack) as back:
        await pipeline.run(batch(b"bad", b"a"))
    assert isinstance(back.value.cause, RegistryUnavailable)
    assert 20 <= world.now < 20 + 4 * 1.5
    assert world.letters == [(0, "invalid-envelope")]  # written before the outage; once
    world.registry_down_until = 0.0
    assert await pipeline.run(batch(b"bad", b"a")) == [None, "a"]
    assert world.letters == [(0, "invalid-envelope")]


async def test_max_delay_caps_the_pauses() -> None:
    world = World()
    world.registry_down_until = 1_000.0
    with pytest.raises(HandBack):
        await world.pipeline(first_delay=1, max_delay=2, patience=30).run(batch(b"a"))
    assert max(world.slept) <= 2 * 1.5


async def test_a_refused_login_or_a_configuration_mistake_ends_the_consumer() -> None:
    world = World()
    with pytest.raises(KafkaAccessDenied):
        await world.pipeline().run(batch(b"a", b"denied", b"b"))
    assert world.letters == []  # not the record's fault: nothing dead-lettered


async def test_a_dead_letter_that_could_not_be_written_is_written_when_read_again() -> None:
    world = World()
    pipeline = world.pipeline()
    world.dead_letter_topic_down = True
    with pytest.raises(ConnectionError):  # the batch fails: its offsets are not committed
        await pipeline.run(batch(b"a", b"bad"))
    world.dead_letter_topic_down = False
    assert await pipeline.run(batch(b"a", b"bad")) == ["a", None]
    assert world.letters == [(1, "invalid-envelope")]  # neither lost nor written twice


async def test_a_long_batch_lets_the_loops_other_tasks_run() -> None:
    # (The inbox commits the batch before in a task of its own while it checks the next.)
    world = World()
    turns = 0
    checking = True

    async def other_task() -> None:
        nonlocal turns
        while checking:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    started = turns
    records = batch(*[b"ok"] * (YIELD_EVERY * 10))
    results = await world.pipeline().run(records)
    during = turns - started
    checking = False
    await other
    assert results == ["ok"] * len(records)
    assert during >= 10  # a turn for the others every YIELD_EVERY records, not one per batch
