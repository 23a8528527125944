"""The heap of a long-running boxbus process (an inbox, a relay, the router).

CPython's cyclic garbage collector walks every tracked object of a generation when it
collects it. A service's heap is mostly what it made while starting (modules, the compiled
validators of the event models, schemas): about 90,000 objects for an inbox, none of them
garbage. Each full collection walked them all again; under load on a busy machine that was a
pause of 30-60 ms every few seconds, in the middle of a batch: the whole tail of the
inbox's end-to-end latency (p99) in ``boxbus bench outbox``.

:func:`settle` is called once the start-up is done: it collects the start-up's garbage, then
moves what survives to the permanent generation (``gc.freeze``), which later collections
skip. Objects made afterwards are collected as before; a frozen object that loses its last
reference is still freed (by its reference count), only cycles among frozen objects stay.

It also lets the young generation grow to :data:`YOUNG` objects before it is collected
(CPython's default is 700). The count that triggers a collection is objects made minus
objects freed, and a service's hot path frees almost all it makes, by reference count: what
stays is the batch in hand. An inbox holds two fetches of up to 1,000 records, each record
about 30 tracked objects (aiokafka's record and headers, the event model and its envelope):
60,000. With the default, every 700 such objects started a collection that walked the batch
and moved it to an older generation, where the next collections walked it again: 4-8 µs per
event, 15-25 % of an inbox's checks (a microbenchmark of decode and validate with two
batches alive), and 12 % more events/s in ``boxbus bench outbox --only inbox``. With
100,000 the batch in hand never starts a collection; cycles (an exception and its
traceback, a finished task) are still collected, after more of them pile up. The threshold
counts container objects, not bytes: a cycle that holds large values (a traceback's frames
with a fetch's records) keeps them until the next young collection. A collection walks only
the young objects still alive. It is set for the whole process (a test or a benchmark that
runs a service in its own process gets it too).
"""

from __future__ import annotations

import gc

YOUNG = 100_000
"""Objects made (and not yet freed) after which the young generation is collected."""


def settle(young: int = YOUNG) -> int:
    """Collect, then keep everything alive now out of later collections, and collect the
    young generation only after ``young`` objects; the number of objects frozen."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)
    return gc.get_freeze_count()
