"""bus.heap: what a service made while starting is kept out of later collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bus import heap


@pytest.fixture
def unfrozen() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()  # the test process goes on as before
    gc.set_threshold(*thresholds)


def test_settle_freezes_what_lives_and_collects_the_rest(unfrozen: None) -> None:
    class Node:
        other: object = None

    kept = [{"schema": n} for n in range(1000)]
    garbage_a, garbage_b = Node(), Node()
    garbage_a.other, garbage_b.other = garbage_b, garbage_a  # a cycle only the collector frees
    del garbage_a, garbage_b

    frozen = heap.settle()

    assert frozen >= len(kept)
    # The cycle was collected before the freeze, not frozen for good.
    assert not any(isinstance(o, Node) for o in gc.get_objects())
    # A full collection now walks only what was made after the freeze.
    assert len(gc.get_objects(generation=2)) < len(kept)


def test_a_batch_in_hand_starts_no_collection(unfrozen: None) -> None:
    heap.settle()
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(count)
    try:
        # What an inbox holds between fetches: two batches of records, each several tracked
        # objects, made while the many short-lived ones around them are freed again.
        batches = [[{"meta": {"id": n}, "lines": [n]} for n in range(2_000)] for _ in range(2)]
        for _ in range(50_000):
            [{"short": "lived"}]  # noqa: B018
    finally:
        gc.callbacks.remove(count)
    assert len(batches[1]) == 2_000
    assert collections == []
    assert gc.get_threshold()[0] == heap.YOUNG


def test_cycles_are_still_collected_after_settling(unfrozen: None) -> None:
    heap.settle()

    class Node:
        other: object = None

    for _ in range(heap.YOUNG):  # more cycles than the young generation holds
        a, b = Node(), Node()
        a.other, b.other = b, a
    del a, b
    assert sum(isinstance(o, Node) for o in gc.get_objects()) < heap.YOUNG
