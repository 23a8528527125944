"""Business receipts: what became of each event a box sent, per recipient, kept in the box's
own database so its people see it without reading Kafka.

    committed ──relay──▶ sent ──router──▶ delivered ──recipient's box──▶ accepted | rejected
                                  └──▶ refused (the router's reason: not related, not allowed)

- *sent*: the brokers acknowledged the relay's write (``sent_at``, set with the outbox row's
  delete);
- *delivered*: the router forwarded it to a recipient; it reports the recipients of each
  tracked event in an ``EventsRouted`` written straight into the box's inbox topic;
- *accepted* / *rejected*: the addressee's box applied or refused it (its ``DeliveryReceipt``,
  with the reason); the mailer answers for a partner without a box only when the e-mail could
  not be delivered. Subscribers of a broadcast do not answer: their copies end at delivered.

An event is *overdue* when a step it waits for has not happened within the given time: not
sent (the relay is down), not routed (the router is down), or not answered by its addressee.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bus import naming
from bus.events.models import DeliveryReceipt, EventsRouted
from bus.log import get_logger
from connectors.box.handlers import Applied, Handler, Handlers, Rejected
from connectors.box.outbox import BUS_ANSWERS, record_sent, tracked

log = get_logger(__name__)
__all__ = ["BUS_ANSWERS", "purge", "receipts", "record_sent", "summary", "tracked",
           "with_tracking"]

ROUTER = naming.ROUTER_SOURCE


async def routed(event: EventsRouted, applied: Applied) -> None:
    """The router's report. Only the router writes one (it quarantines any a box publishes,
    and no box may be called ``router``); checked here again all the same."""
    envelope = applied.envelope
    if envelope.source_box != ROUTER or envelope.target_box != applied.box_id:
        raise Rejected(f"an EventsRouted from {envelope.source_box!r} for "
                       f"{envelope.target_box!r}: only the router reports to this box")
    conn = applied.conn
    # In event id order, as the relay locks them (no deadlock between the two).
    for item in sorted(event.events, key=lambda e: e.event_id):
        await conn.execute(
            "UPDATE boxbus_sent SET routed_at = coalesce(routed_at, $2), refused_code = $3, "
            "refused_reason = $4 WHERE event_id = $1", item.event_id, event.routed_at,
            item.refused_code, item.refused_reason)
        mail = set(item.by_mail)
        await conn.executemany(
            "INSERT INTO boxbus_sent_to (event_id, recipient, by_mail, status, delivered_at) "
            "VALUES ($1, $2, $3, 'delivered', $4) ON CONFLICT (event_id, recipient) DO UPDATE "
            "SET delivered_at = coalesce(boxbus_sent_to.delivered_at, excluded.delivered_at), "
            "by_mail = excluded.by_mail",
            [(item.event_id, box, box in mail, event.routed_at) for box in item.recipients])


async def answered(event: DeliveryReceipt, applied: Applied) -> None:
    """A recipient's answer; it may arrive before the router's report (they travel apart):
    the answer is kept either way, and delivery is implied by it. Only the box an event was
    addressed to answers for it: another box's receipt for it is refused (a subscriber's
    copy of someone else's receipt is not this box's business)."""
    envelope = applied.envelope
    if envelope.target_box != applied.box_id:
        return  # a copy through a subscription: about another box's events
    sent = await applied.conn.fetchrow(
        "SELECT target_box FROM boxbus_sent WHERE event_id = $1", event.receipt_for_event_id)
    if sent is None:
        log.info("receipt for an event this box does not track", box=applied.box_id,
                 event_id=event.receipt_for_event_id, from_box=envelope.source_box)
        return
    if sent["target_box"] != envelope.source_box and not await applied.conn.fetchval(
            # A partner reached by e-mail through a subscription refuses what bounced.
            "SELECT by_mail FROM boxbus_sent_to WHERE event_id = $1 AND recipient = $2",
            event.receipt_for_event_id, envelope.source_box):
        raise Rejected(f"box {envelope.source_box!r} answered for event "
                       f"{event.receipt_for_event_id}, which was addressed to "
                       f"{sent['target_box']!r}")
    await applied.conn.execute(
        "INSERT INTO boxbus_sent_to (event_id, recipient, status, reason, answered_at) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id, recipient) DO UPDATE SET "
        "status = excluded.status, reason = excluded.reason, "
        "answered_at = excluded.answered_at",
        event.receipt_for_event_id, applied.envelope.source_box,
        event.status.value.lower(), event.reason, event.processed_at)


def with_tracking(handlers: Handlers) -> Handlers:
    """``handlers`` plus the receipts' bookkeeping: for a DeliveryReceipt or an EventsRouted,
    the box's receipts are updated first, then the box's own handler (if any) runs, in the
    same transaction."""
    merged = Handlers(dict(handlers.by_type), dict(handlers.batch_by_type))
    for model, book in ((DeliveryReceipt, answered), (EventsRouted, routed)):
        own = merged.single(model.TYPE)
        merged.batch_by_type.pop(model.TYPE, None)
        merged.by_type[model.TYPE] = _both(book, own)
    return merged


def _both(book: Handler, own: Handler | None) -> Handler:
    async def handle(event: Any, applied: Applied) -> None:
        await book(event, applied)
        if own is not None:
            await own(event, applied)
    return handle


STATES = ("waiting", "sent", "routed", "refused", "delivered", "accepted", "rejected")


async def receipts(conn: asyncpg.Connection, *, pending: bool = False,
                   overdue_after: timedelta = timedelta(minutes=5), limit: int = 1000,
                   now: datetime | None = None) -> list[dict[str, Any]]:
    """One row per event and recipient (an event not routed yet, or refused, is one row
    without a recipient), newest first (``pending``: oldest first, the overdue on top).
    ``state`` is the furthest step reached; ``overdue`` says a step is late; ``pending``
    leaves out what is finished (accepted, rejected, refused, and copies delivered to a
    subscriber or by e-mail, which are not answered)."""
    now = now or datetime.now(UTC)
    # Pending: what is finished is left out in the database (the rules of ``_state``), so
    # that the limit applies to what is still open, oldest (the overdue) first.
    open_only = """WHERE (t.status IS NULL OR t.status = 'delivered') AND s.refused_code IS NULL
                   AND NOT (t.status = 'delivered' AND (t.recipient IS DISTINCT FROM
                            s.target_box OR t.by_mail))
                   AND NOT (t.recipient IS NULL AND s.routed_at IS NOT NULL)""" if pending else ""
    open_orphans = "AND false" if pending else ""  # answered, or a subscriber's copy
    rows = await conn.fetch(
        f"""SELECT s.event_id, s.event_type, s.aggregate_key, s.target_box, s.created_at,
                  s.sent_at, s.routed_at, s.refused_code, s.refused_reason,
                  t.recipient, t.by_mail, t.status, t.reason, t.delivered_at, t.answered_at
           FROM boxbus_sent s LEFT JOIN boxbus_sent_to t USING (event_id) {open_only}
           UNION ALL
           SELECT t.event_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                  t.recipient, t.by_mail, t.status, t.reason, t.delivered_at, t.answered_at
           FROM boxbus_sent_to t WHERE NOT EXISTS
                (SELECT 1 FROM boxbus_sent s WHERE s.event_id = t.event_id) {open_orphans}
           ORDER BY created_at {"ASC" if pending else "DESC"} NULLS LAST, event_id, recipient
           LIMIT $1""", limit)
    found = []
    for row in rows:
        item = dict(row)
        item["state"], item["overdue"], done = _state(item, now, overdue_after)
        if not (pending and done):
            found.append(item)
    return found


def _state(row: dict[str, Any], now: datetime, late: timedelta) -> tuple[str, bool, bool]:
    """(state, overdue, finished)."""
    if row["status"] in ("accepted", "rejected"):
        return row["status"], False, True
    if row["refused_code"] is not None:
        return "refused", False, True
    if row["status"] == "delivered":
        # Only the addressee answers; a partner's mailer answers only to refuse.
        awaited = row["recipient"] == row["target_box"] and not row["by_mail"]
        since = row["delivered_at"] or row["routed_at"]
        overdue = bool(awaited and since is not None and now - since > late)
        return "delivered", overdue, not awaited
    if row["routed_at"] is not None:
        return "routed", False, True  # to nobody: no box subscribes to it
    if row["sent_at"] is not None:
        return "sent", now - row["sent_at"] > late, False
    if row["created_at"] is None:
        return "waiting", False, False
    return "waiting", now - row["created_at"] > late, False


def summary(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    counts["overdue"] = 0
    for row in rows:
        counts[row["state"]] += 1
        counts["overdue"] += bool(row["overdue"])
    return counts


async def purge(conn: asyncpg.Connection, older_than: timedelta) -> int:
    """Forget the receipts of events sent longer ago than ``older_than`` that are finished
    or given up on; the number of events forgotten. The tables would grow with every event
    otherwise."""
    async with conn.transaction():
        gone = await conn.fetch(
            "DELETE FROM boxbus_sent WHERE created_at < clock_timestamp() - $1::interval "
            "RETURNING event_id", older_than)
        ids = [r["event_id"] for r in gone]
        await conn.execute(
            "DELETE FROM boxbus_sent_to t WHERE t.event_id = ANY($1::text[]) OR (NOT EXISTS "
            "(SELECT 1 FROM boxbus_sent s WHERE s.event_id = t.event_id) AND "
            "coalesce(t.answered_at, t.delivered_at) < clock_timestamp() - $2::interval)",
            ids, older_than)
    return len(ids)
