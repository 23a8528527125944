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
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from bus.log import get_logger
from connectors.box.relay import Relay, backlog

log = get_logger(__name__)


class MetricsServer:
    """One registry per process, served on ``host:port`` (loopback unless told otherwise)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.registry = CollectorRegistry()
        self._server: Any = None

    def start(self) -> None:
        self._server, _ = start_http_server(self.port, addr=self.host, registry=self.registry)
        self.port = self._server.server_port  # the real one when 0 was asked
        log.info("metrics served", url=f"http://{self.host}:{self.port}/metrics")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Total:
    """A Counter fed from a service's running total (the service counts; we report)."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.seen = 0

    def update(self, total: int) -> None:
        if total > self.seen:
            self.counter.inc(total - self.seen)
            self.seen = total


async def watch_relay(relay: Relay, server: MetricsServer, interval: float = 2.0) -> None:
    """Refresh the relay's metrics every ``interval`` seconds until cancelled."""
    labels = {"box": relay.box_id}
    rows = Gauge("boxbus_outbox_backlog_rows", "Events committed in the box and not yet "
                 "acknowledged by Kafka.", ["box"], registry=server.registry).labels(**labels)
    age = Gauge("boxbus_outbox_backlog_age_seconds", "Age of the oldest event waiting in "
                "the outbox (0 when empty).", ["box"], registry=server.registry).labels(**labels)
    active = Gauge("boxbus_relay_active", "1 while this relay holds the box's lock (the "
                   "others stand by).", ["box"], registry=server.registry).labels(**labels)
    published = _Total(Counter("boxbus_relay_published", "Events published and deleted from "
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
        name: _Total(Counter(f"boxbus_inbox_{name}", text, ["box"],
                             registry=server.registry).labels(**labels))
        for name, text in (
            ("applied", "Events whose effect was committed in the box."),
            ("duplicates", "Redelivered events skipped (applied before)."),
            ("dead_lettered", "Events sent to the dead-letter topic with a reason."))}
    while True:
        for name, total in totals.items():
            total.update(getattr(inbox, name))
        await asyncio.sleep(interval)
