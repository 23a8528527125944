"""Running a box's parts side by side (relay, inbox, responder, ...) as one service."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any


async def run_together(tasks: Sequence[asyncio.Task[Any]], stop: Callable[[], None]) -> None:
    """Wait for the parts; when one of them fails, ``stop()`` the others and raise its error
    once they ended (they always end together)."""
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stop()
        await asyncio.gather(*tasks, return_exceptions=True)


async def until_stopped(service: Any, stop: asyncio.Event) -> None:
    """Run ``service.run()`` until it ends or ``stop`` is set (a signal), then
    ``service.stop()`` and wait for it to end."""
    running = asyncio.create_task(service.run())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
    service.stop()
    stopping.cancel()
    await running
