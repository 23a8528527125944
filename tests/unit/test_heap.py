"""bus.heap: what a service made while starting is kept out of later collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bus import heap


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process goes on as before


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
