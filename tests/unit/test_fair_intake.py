"""The router's fair intake over a consumer stand-in (pure bookkeeping, no broker): rounds split
between boxes, partitions with records waiting paused and resumed once drained, a failed round
given back in front in order, revoked partitions forgotten."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, TopicPartition

from processors.router.fairness import GROWTH, FairIntake

FLOOD = [TopicPartition("ns.box.flood.outbox", 0)]
QUIET = TopicPartition("ns.box.quiet.outbox", 0)


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int


class Consumer:
    """What FairIntake uses of an AIOKafkaConsumer: getmany, assignment, pause and resume."""

    def __init__(self, backlog: dict[TopicPartition, int]) -> None:
        self.positions = dict.fromkeys(backlog, 0)
        self.ends = dict(backlog)
        self._paused: set[TopicPartition] = set()
        self.assigned = set(backlog)
        self.polls = 0

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None
                      ) -> dict[TopicPartition, list[Record]]:
        self.polls += 1
        out: dict[TopicPartition, list[Record]] = {}
        left = max_records or 10**9
        for tp in sorted(self.assigned):  # the flooder first, as a fetch may bring it
            if tp in self._paused or left <= 0:
                continue
            n = min(self.ends[tp] - self.positions[tp], left)
            if n > 0:
                out[tp] = [Record(tp.topic, tp.partition, self.positions[tp] + i)
                           for i in range(n)]
                self.positions[tp] += n
                left -= n
        return out

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused) & self.assigned

    def pause(self, *tps: TopicPartition) -> None:
        self._paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._paused -= set(tps)


def intake(consumer: Consumer, budget: int) -> FairIntake:
    return FairIntake(cast(AIOKafkaConsumer, consumer), budget)


def offsets(records: Iterable[Any]) -> list[int]:
    return [r.offset for r in records]


async def test_rounds_share_between_boxes_and_drained_partitions_resume() -> None:
    consumer = Consumer({FLOOD[0]: 1000, QUIET: 3})
    fair = intake(consumer, 100)
    first = await fair.take(0)  # the fetch brought the flooder's records first ...
    assert set(first) == {FLOOD[0]} and FLOOD[0] in consumer.paused()
    second = await fair.take(0)  # ... paused, so the next reaches the quiet box: all of it
    assert len(second[QUIET]) == 3 and len(second[FLOOD[0]]) == 97
    assert QUIET not in consumer.paused()  # drained: fetched again
    seen = offsets(first[FLOOD[0]]) + offsets(second[FLOOD[0]])
    while fair.waiting or consumer.positions[FLOOD[0]] < 1000:
        seen += offsets((await fair.take(0)).get(FLOOD[0], []))
    assert seen == list(range(1000))  # every record once, in order


async def test_a_failed_round_is_given_back_in_front_in_order() -> None:
    consumer = Consumer({FLOOD[0]: 50})
    fair = intake(consumer, 20)
    first = await fair.take(0)
    fair.give_back(first)
    again = await fair.take(0)
    assert offsets(again[FLOOD[0]]) == offsets(first[FLOOD[0]])
    rest: list[int] = []
    while fair.waiting or consumer.positions[FLOOD[0]] < 50:
        rest += offsets((await fair.take(0)).get(FLOOD[0], []))
    assert offsets(again[FLOOD[0]]) + rest == list(range(50))


async def test_revoked_partitions_are_forgotten_and_full_buffers_still_poll() -> None:
    consumer = Consumer({FLOOD[0]: 500, QUIET: 500})
    fair = intake(consumer, 10)
    await fair.take(0)
    polls = consumer.polls
    await fair.take(0)
    assert consumer.polls == polls + 1  # polled even with its buffers full (group liveness)
    consumer.assigned.discard(QUIET)
    fair.forget([QUIET])
    assert set(await fair.take(0)) == {FLOOD[0]}


async def test_rounds_grow_when_many_boxes_are_busy_and_shrink_back() -> None:
    many = {TopicPartition(f"ns.box.b{n:03d}.outbox", 0): 100 for n in range(300)}
    consumer = Consumer({**many, QUIET: 3})
    fair = intake(consumer, 1000)
    sizes = []
    while fair.waiting or any(consumer.positions[tp] < n for tp, n in consumer.ends.items()):
        sizes.append(sum(len(r) for r in (await fair.take(0)).values()))
    # 300 busy boxes want 300 slices of QUANTUM: rounds grow, to at most GROWTH budgets.
    assert max(sizes) > 1000 and max(sizes) <= GROWTH * 1000
    assert sum(sizes) == 300 * 100 + 3
    assert await fair.take(0) == {}
    assert fair.round_budget == 1000  # nobody busy any more: back to the budget


async def test_a_few_busy_boxes_keep_rounds_at_the_budget() -> None:
    consumer = Consumer({FLOOD[0]: 5000, QUIET: 3})
    fair = intake(consumer, 100)
    for _ in range(10):
        assert sum(len(r) for r in (await fair.take(0)).values()) <= 100
