"""Prometheus metrics of a box's relay and inbox (``--metrics-port``): the outbox backlog
(rows waiting, age of the oldest) that tells an operator a box is not getting its events out,
and the counters of what was published, applied, skipped as duplicates and dead-lettered.

prometheus_client serves them from its own thread; the values are refreshed by an asyncio task
of the service (the backlog needs a database query, which the scrape thread cannot make).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from bus.log import get_logger
from bus.metrics import MetricsServer, Total
from connectors.box.relay import Relay, backlog

log = get_logger(__name__)


async def watch_relay(relay: Relay, server: MetricsServer, interval: float = 2.0) -> None:
    """Refresh the relay's metrics every ``interval`` seconds until cancelled."""
    labels = {"box": relay.box_id}
    rows = Gauge("boxbus_outbox_backlog_rows", "Events committed in the box and not yet "
                 "acknowledged by Kafka.", ["box"], registry=server.registry).labels(**labels)
    age = Gauge("boxbus_outbox_backlog_age_seconds", "Age of the oldest event waiting in "
                "the outbox (0 when empty).", ["box"], registry=server.registry).labels(**labels)
    active = Gauge("boxbus_relay_active", "1 while this relay holds the box's lock (the "
                   "others stand by).", ["box"], registry=server.registry).labels(**labels)
    published = Total(Counter("boxbus_relay_published", "Events published and deleted from "
                               "the outbox by this relay.", ["box"],
                               registry=server.registry).labels(**labels))
    parked = Gauge("boxbus_outbox_parked_rows", "Events set aside because their topic does "
                   "not exist (`boxbus relay unpark` after creating it).", ["box"],
                   registry=server.registry).labels(**labels)
    errors = Gauge("boxbus_outbox_backlog_unreadable", "1 when the last backlog query "
                   "failed (the database is unreachable).", ["box"],
                   registry=server.registry).labels(**labels)
    conn: asyncpg.Connection | None = None
    try:
        while True:
            active.set(1 if relay.active.is_set() else 0)
            published.update(relay.published)
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(relay.dsn)
                found = await backlog(conn)
                rows.set(found.rows)
                age.set(found.age_seconds)
                parked.set(found.parked)
                errors.set(0)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                errors.set(1)
                log.debug("backlog not readable for metrics", box=relay.box_id, error=repr(exc))
                conn = None
            await asyncio.sleep(interval)
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


async def watch_inbox(inbox: Any, server: MetricsServer, interval: float = 2.0) -> None:
    """Refresh the inbox's counters every ``interval`` seconds until cancelled."""
    labels = {"box": inbox.box_id}
    totals = {
        name: Total(Counter(f"boxbus_inbox_{name}", text, ["box"],
                             registry=server.registry).labels(**labels))
        for name, text in (
            ("applied", "Events whose effect was committed in the box."),
            ("duplicates", "Redelivered events skipped (applied before)."),
            ("dead_lettered", "Events sent to the dead-letter topic with a reason."))}
    while True:
        for name, total in totals.items():
            total.update(getattr(inbox, name))
        await asyncio.sleep(interval)
