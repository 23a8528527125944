"""Handlers for the inbox tests: each CommentAdded leaves one row in ``effects``; ``times``
counts how often it was applied (exactly once means 1), ``applied_order`` in which order.
Text "poison" is refused; text "flaky:N" asks for a retry N times first."""

from __future__ import annotations

import asyncio
import os

from bus.events.models import CommentAdded
from connectors.box import Applied, Handlers, Rejected, Retry

handlers = Handlers()
_tries: dict[str, int] = {}

SCHEMA = """
    CREATE TABLE IF NOT EXISTS effects (
        event_id text PRIMARY KEY, aggregate text NOT NULL, seq int NOT NULL,
        times int NOT NULL DEFAULT 1, applied_order bigserial);
"""


@handlers.on(CommentAdded)
async def apply_comment(event: CommentAdded, applied: Applied) -> None:
    delay = float(os.environ.get("HANDLER_DELAY", "0"))
    if delay:
        await asyncio.sleep(delay)
    if event.text == "poison":
        raise Rejected(f"comment {event.comment_id} is refused by the business rules")
    if event.text.startswith("flaky:"):
        tries = _tries.get(event.meta.event_id, 0) + 1
        _tries[event.meta.event_id] = tries
        if tries <= int(event.text.split(":")[1]):
            raise Retry(f"try {tries}: the warehouse system is busy")
    await applied.conn.execute(
        "INSERT INTO effects (event_id, aggregate, seq) VALUES ($1, $2, $3) "
        "ON CONFLICT (event_id) DO UPDATE SET times = effects.times + 1",
        event.meta.event_id, event.subject_id, int(event.comment_id.rsplit("-", 1)[1]))
