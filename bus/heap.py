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
"""

from __future__ import annotations

import gc


def settle() -> int:
    """Collect, then keep everything alive now out of later collections; the number of
    objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
