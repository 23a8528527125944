"""Fair intake: what the router reads from the ingress topics in one round.

The consumer's own order is first come, first served: a fetch brings up to
``max_partition_fetch_bytes`` of every partition that has data, and ``getmany`` drains the
partitions in the order the brokers answered, so one box's backlog (a flood, or everything it
sent while the router was away) fills whole rounds while another box's single order waits
behind it. The router instead keeps what was fetched in a buffer per partition and composes
each round by water-filling: the round's budget is split evenly between the boxes (ingress
topics) in it, a box that needs less than its share gives the rest to the others, and within a
box between its partitions the same way. A quiet box (a few records waiting) is in every
round, whatever the others have queued; a box alone on the network still gets the whole round.
Busy boxes are all in the round while it has room for a fair slice (``QUANTUM`` records) of
each; beyond that they take turns, the one served longest ago first, so that a round never
spreads into thousands of one-record batches (see ``in_round``).

When a slice of every box waiting does not fit in the budget, the round grows to what the
slices take, up to ``GROWTH`` times the budget: a round's records then reach more of each
output partition, so the outputs go out in fewer, larger batches (2,000 busy boxes' records
went out 20 % faster in rounds of 20,000 than of 5,000, alternating on one warm network of
``boxbus bench scale``), and each busy box's turn comes sooner. With few boxes busy a round
stays at the budget, and so does its latency.

The buffers hold at most two rounds' worth of records, of the round's size at the time:
``2 * GROWTH * budget`` (40,000 records at the router's default of 5,000) when many boxes are
busy, twice the budget otherwise (decoded records take several times the room of the fetched
bytes). A partition whose buffer is not empty is paused: the consumer fetches
nothing more for it and drops the rest of its last fetch, so the next ``getmany`` reaches the
partitions behind it. Its position stays at the first record it has not handed to the router,
and that is where it reads again once its buffer is drained and it is resumed (the next fetch
then runs while the round is sent). Dropping costs a fetch again of what was dropped, no more.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from bus.record import KafkaRecord

K = TypeVar("K", bound=Hashable)


def water_fill(demands: Mapping[K, int], budget: int) -> dict[K, int]:
    """How many of its waiting records each claimant gets from ``budget``: an even share, the
    share of those that need less going to the others. Every claimant with a demand gets at
    least one record, so none waits for a round however many there are."""
    wanting = sorted(((d, k) for k, d in demands.items() if d > 0), key=lambda x: x[0])
    given: dict[K, int] = {}
    left = max(budget, 0)
    for index, (demand, claimant) in enumerate(wanting):
        share = max(left // (len(wanting) - index), 1)
        given[claimant] = take = min(demand, share)
        left = max(left - take, 0)
    # What integer division left over goes to those that still want more, one each.
    for demand, claimant in reversed(wanting):
        if left <= 0:
            break
        if given[claimant] < demand:
            given[claimant] += 1
            left -= 1
    return given


# A box with at most this many records waiting is quiet: it is in every round, whole.
QUIET_AT_MOST = 16
# The least a busy box (more waiting) gets when it is in a round. When more busy boxes wait
# than the round has room for at this much each, they take turns: a round of a few records
# from each of thousands of boxes made thousands of one-record output batches, and the
# router's rate fell with the size of the network (`boxbus bench scale`).
QUANTUM = 64
# How far a round grows beyond the budget when many boxes are busy (see the module's text).
GROWTH = 4


def in_round(demands: Mapping[str, int], budget: int, turns: list[str]
             ) -> tuple[set[str], list[str]]:
    """The boxes (ingress topics) in this round, and the busy boxes' turns after it: every
    quiet box, and busy ones, longest waiting first, while what the quiet ones leave holds
    a slice of each: ``QUANTUM`` records, or fewer for a box that has fewer waiting (at least
    one busy box per round)."""
    quiet = {t for t, d in demands.items() if 0 < d <= QUIET_AT_MOST}
    busy_now = {t for t, d in demands.items() if d > QUIET_AT_MOST}
    known = [t for t in turns if t in busy_now]
    busy = known + sorted(busy_now - set(known))  # newcomers queue behind
    left = budget - sum(demands[t] for t in quiet)
    taken = 0
    for box in busy:
        slice_ = min(demands[box], QUANTUM)
        if taken and slice_ > left:
            break
        left -= slice_
        taken += 1
    # (A box with 25 records waiting claims 25, not QUANTUM: counting 64 for each of 2,000
    # such boxes made rounds of 1,950 records out of a budget of 5,000, and 2.5 times the
    # output batches the records needed.)
    served, waiting = busy[:taken], busy[taken:]
    return quiet | set(served), waiting + served


def fair_shares(waiting: Mapping[TopicPartition, int], budget: int) -> dict[TopicPartition, int]:
    """Split ``budget`` between the topics (one per box) that have records waiting, then each
    topic's part between its partitions."""
    by_topic: dict[str, dict[TopicPartition, int]] = {}
    for tp, count in waiting.items():
        if count > 0:
            by_topic.setdefault(tp.topic, {})[tp] = count
    topics = water_fill({t: sum(p.values()) for t, p in by_topic.items()}, budget)
    shares: dict[TopicPartition, int] = {}
    for topic, part in topics.items():
        shares.update(water_fill(by_topic[topic], part))
    return shares


class FairIntake:
    """The per-partition buffers between the consumer and the router's rounds."""

    def __init__(self, consumer: AIOKafkaConsumer, budget: int) -> None:
        self.consumer = consumer
        self.budget = budget
        self.round_budget = budget  # this round's: the budget, or more when many are busy
        self._waiting: dict[TopicPartition, list[KafkaRecord]] = {}
        self._turns: list[str] = []  # busy boxes, the one served longest ago first

    @property
    def waiting(self) -> int:
        """Records fetched and not yet handed to a round."""
        return sum(len(records) for records in self._waiting.values())

    async def take(self, timeout_ms: int) -> dict[TopicPartition, list[KafkaRecord]]:
        """The next round: records in offset order per partition, at most about ``budget``
        in all, split fairly. Waits up to ``timeout_ms`` only when nothing is buffered."""
        # Polled every round, even with full buffers (then for one record): a consumer that does
        # not poll for max.poll.interval.ms is put out of its group.
        fetched = await self.consumer.getmany(
            timeout_ms=0 if self._waiting else timeout_ms,
            max_records=max(2 * self.round_budget - self.waiting, 1))
        assigned = self.consumer.assignment()
        for tp, records in fetched.items():
            if records and tp in assigned:
                self._waiting.setdefault(tp, []).extend(records)
        for tp in [tp for tp in self._waiting if tp not in assigned]:
            del self._waiting[tp]  # revoked while buffered: its new owner reads it
        demands: dict[str, int] = {}
        for tp, records in self._waiting.items():
            demands[tp.topic] = demands.get(tp.topic, 0) + len(records)
        # What one slice of every box waiting would take: the quiet ones whole, the busy
        # ones QUANTUM each (or what they have, if less).
        need = sum(min(d, QUANTUM) if d > QUIET_AT_MOST else d for d in demands.values())
        self.round_budget = budget = min(max(self.budget, need), GROWTH * self.budget)
        chosen, self._turns = in_round(demands, budget, self._turns)
        shares = fair_shares({tp: len(r) for tp, r in self._waiting.items()
                              if tp.topic in chosen}, budget)
        round_: dict[TopicPartition, list[KafkaRecord]] = {}
        for tp, share in shares.items():
            records = self._waiting[tp]
            round_[tp], rest = records[:share], records[share:]
            if rest:
                self._waiting[tp] = rest
            else:
                del self._waiting[tp]
        self._pace(assigned)
        return round_

    def give_back(self, round_: Mapping[TopicPartition, list[KafkaRecord]]) -> None:
        """A round that could not be delivered goes back in front of its partitions' buffers
        (read again next round, in the same order)."""
        assigned = self.consumer.assignment()
        for tp, records in round_.items():
            if records and tp in assigned:
                self._waiting[tp] = [*records, *self._waiting.get(tp, ())]
        self._pace(assigned)

    def forget(self, partitions: object) -> None:
        """Partitions revoked: their buffered records are their new owner's to read (from the
        committed offset)."""
        for tp in list(partitions):  # type: ignore[call-overload]
            self._waiting.pop(tp, None)

    def _pace(self, assigned: set[TopicPartition]) -> None:
        paused = self.consumer.paused()
        hold = [tp for tp in self._waiting if tp not in paused]
        if hold:
            self.consumer.pause(*hold)
        release = [tp for tp in paused if tp not in self._waiting and tp in assigned]
        if release:
            self.consumer.resume(*release)
