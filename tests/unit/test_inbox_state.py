"""The inbox's memory of its partitions, transition by transition (no broker, no database)."""

from __future__ import annotations

from typing import Any, cast

from aiokafka import TopicPartition

from connectors.box.inbox_state import InboxState, RetryPolicy

A, B = TopicPartition("ns.box.a.inbox", 0), TopicPartition("ns.box.a.inbox", 1)


def test_the_listener_places_a_partition_at_its_stored_offset() -> None:
    state = InboxState()
    assert not state.is_ready(A)
    assert state.assigned(A, 40) is True  # seek there
    assert state.is_ready(A) and state.positions[A] == 40


def test_a_partition_the_loop_placed_first_is_not_sent_back() -> None:
    state = InboxState()
    state.placed(A, 40)
    state.committed(A, 55, range(40, 55))  # applied on while the listener was late
    assert state.assigned(A, 40) is False  # no seek back: it would only re-read duplicates
    assert state.positions[A] == 55


def test_records_from_before_the_position_mean_seek_forward() -> None:
    state = InboxState()
    state.placed(A, 40)
    assert state.resume_at(A, 38) == 40
    assert state.resume_at(A, 40) is None
    assert state.resume_at(B, 0) is None  # no position known: nothing to compare


def test_records_a_batch_in_flight_holds_are_not_taken_twice() -> None:
    state = InboxState()
    state.placed(A, 40)
    state.taken(A, 60)  # 40..59 are being applied while the next fetch is checked
    assert state.resume_at(A, 40) == 60  # delivered again: skip to after the batch
    assert state.resume_at(A, 60) is None
    state.committed(A, 60, range(40, 60))
    assert state.resume_at(A, 60) is None and state.positions[A] == 60


def test_a_batch_set_back_lets_its_records_be_taken_again() -> None:
    state = InboxState()
    state.placed(A, 40)
    state.taken(A, 60)
    state.set_back(A)  # a retry: the transaction did not commit 40..59
    assert state.resume_at(A, 40) is None  # read again from the stored position
    assert state.positions[A] == 40


def test_revoked_forgets_position_readiness_attempts_and_mirror() -> None:
    state = InboxState()
    for tp in (A, B):
        state.placed(tp, 10)
        state.attempt((tp.topic, tp.partition, 10), now=0.0)
    state.mirrored({A: 10, B: 10})
    state.taken(A, 20)
    state.revoked([A])
    assert not state.is_ready(A) and A not in state.positions and A not in state.in_flight
    assert state.attempts_of((A.topic, A.partition, 10)) == 0
    assert state.attempts_of((B.topic, B.partition, 10)) == 1  # the other one keeps its own
    assert A not in state.mirrored_offsets and state.is_ready(B)


def test_attempts_are_counted_and_limited_by_number_and_by_time() -> None:
    state = InboxState(RetryPolicy(max_attempts=3, max_seconds=60))
    key = (A.topic, A.partition, 7)
    assert state.attempt(key, now=0.0) is True
    assert state.attempt(key, now=1.0) is True
    assert state.attempt(key, now=2.0) is False  # the third: no more
    other = (A.topic, A.partition, 8)
    assert state.attempt(other, now=0.0) is True
    assert state.attempt(other, now=61.0) is False  # the first try was over a minute ago


def test_a_commit_forgets_the_attempts_of_its_records() -> None:
    state = InboxState()
    state.placed(A, 7)
    state.attempt((A.topic, A.partition, 7), now=0.0)
    state.committed(A, 9, [7, 8])
    assert state.positions[A] == 9 and state.attempts == {}


def test_the_retry_delay_doubles_with_jitter() -> None:
    state = InboxState(RetryPolicy(base_delay=0.2))
    key = (A.topic, A.partition, 7)
    assert state.retry_delay(key, jitter=lambda: 0.5) == 0.2  # before any attempt: the base
    state.attempt(key, now=0.0)
    state.attempt(key, now=0.1)
    state.attempt(key, now=0.2)
    assert state.retry_delay(key, jitter=lambda: 0.5) == 0.8
    assert state.retry_delay(key, jitter=lambda: 0.0) == 0.4


def test_positions_are_mirrored_at_most_once_an_interval_and_only_when_changed() -> None:
    state = InboxState(mirror_interval=1.0)
    state.placed(A, 5)
    state.placed(B, 9)
    assert state.to_mirror({A, B}, now=10.0) == {A: 5, B: 9}
    state.mirrored({A: 5, B: 9})
    state.committed(A, 6, [5])
    assert state.to_mirror({A, B}, now=10.5) == {}  # too soon
    assert state.to_mirror({A, B}, now=11.0) == {A: 6}  # only what changed
    assert state.to_mirror({B}, now=12.5) == {}  # A is not ours any more
    assert state.to_mirror({A, B}, now=12.6, force=True) == {A: 6}  # stopping: now


def test_an_earlier_ownerships_batch_in_flight_does_not_skip_records() -> None:
    state = InboxState()
    state.placed(A, 100)
    state.revoked([A])
    state.taken(A, 200)  # a batch handed over as the partition was being taken away
    assert state.assigned(A, 100) is True  # back again, at the stored offset
    assert state.resume_at(A, 100) is None  # 100..199 are applied, not skipped


def test_a_commit_after_a_revoke_does_not_bring_the_partition_back() -> None:
    state = InboxState()
    state.placed(A, 100)
    state.taken(A, 150)
    state.revoked([A])
    state.committed(A, 150, range(100, 150))
    assert A not in state.positions and not state.is_ready(A)


async def test_a_batch_whose_partition_was_revoked_is_reported_set_back() -> None:
    # If the partition comes back before the inbox's loop looks, the fetch checked meanwhile
    # follows the revoked batch: it must be sought back, not applied past the gap.
    from bus.record import KafkaRecord, PlainRecord
    from connectors.box.inbox import Inbox, _Part

    class Consumer:
        def assignment(self) -> set[TopicPartition]:
            return set()

    inbox = object.__new__(Inbox)
    inbox._consumer = cast(Any, Consumer())
    inbox.state = InboxState()
    inbox.state.placed(A, 40)
    inbox.state.taken(A, 45)
    records: list[KafkaRecord] = [PlainRecord(A.topic, A.partition, offset, 0, b"k", b"v", ())
                                  for offset in range(40, 45)]
    set_back = await inbox._apply_fetch([_Part(A, records, [None] * 5)])
    assert set_back == {A: 40}
    assert A not in inbox.state.in_flight
