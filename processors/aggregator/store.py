"""The analytics database of the aggregator: the aggregates, and the positions they include.

The commit protocol, per partition and per fetched batch of it:

1. On assignment, the instance *claims* each partition: one statement raises the partition's
   ``epoch`` in ``agg_positions`` and returns it with the stored ``next_offset`` (the log's
   start if none). The consumer seeks there. Kafka's committed offsets are not used.
2. The batch's events are folded into deltas in memory (one row per bucket and key), never a
   transaction per event.
3. One transaction: the position moves to the batch's end **only if the epoch is still the one
   this instance claimed** (``UPDATE ... WHERE epoch = $claimed``); no row updated means
   another instance claimed the partition since (a rebalance this one has not seen yet, or a
   pause that outlived its membership): the transaction is rolled back and the partition
   dropped, its new owner applies the batch. Otherwise the deltas are added with one
   multi-row upsert per table, and the transaction commits: the aggregates and the position
   move together, or neither does.

A crash anywhere before the commit leaves both as they were, and the batch is read again from
the stored position: every event counts exactly once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

SCHEMA = """
CREATE TABLE IF NOT EXISTS agg_positions (
    consumer text NOT NULL, topic text NOT NULL, partition int NOT NULL,
    next_offset bigint NOT NULL, epoch bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer, topic, partition));
CREATE TABLE IF NOT EXISTS agg_orders (
    order_id text PRIMARY KEY, bucket timestamptz NOT NULL, region text NOT NULL,
    box text NOT NULL, store text NOT NULL, currency text NOT NULL,
    revenue_minor bigint NOT NULL, units numeric(20, 3) NOT NULL,
    cancelled boolean NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS agg_sales_hourly (
    bucket timestamptz NOT NULL, region text NOT NULL, box text NOT NULL, store text NOT NULL,
    currency text NOT NULL, orders bigint NOT NULL, revenue_minor bigint NOT NULL,
    units numeric(20, 3) NOT NULL, late_events bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, region, box, store, currency));
"""


@dataclass(frozen=True)
class SalesKey:
    bucket: datetime  # the hour of the event's occurred_at, UTC
    region: str
    box: str  # the box that took the order (a branch)
    store: str  # '' for an order without a store
    currency: str


@dataclass
class Sales:
    orders: int = 0
    revenue_minor: int = 0
    units: Decimal = Decimal(0)
    late_events: int = 0  # events that reached this bucket an hour or more after they happened

    def add(self, orders: int, revenue_minor: int, units: Decimal, *, late: bool = False
            ) -> None:
        self.orders += orders
        self.revenue_minor += revenue_minor
        self.units += units
        self.late_events += late


@dataclass
class OrderState:
    """What the aggregates hold of one store order: where it was counted (the bucket of its
    placement) and with what, so an amendment or a cancellation corrects that bucket, and a
    copy of an event (the network delivers at least once) changes nothing."""

    key: SalesKey
    revenue_minor: int
    units: Decimal
    cancelled: bool = False


class Fenced(Exception):
    """Another instance claimed the partition: this one may not commit for it."""


async def migrate(conn: asyncpg.Connection) -> None:
    await conn.execute(SCHEMA)


async def claim(conn: asyncpg.Connection, consumer: str, topic: str, partition: int,
                start: int) -> tuple[int, int]:
    """Claim a partition: its (next offset, epoch), the epoch one more than before."""
    row = await conn.fetchrow(
        "INSERT INTO agg_positions (consumer, topic, partition, next_offset, epoch) "
        "VALUES ($1, $2, $3, $4, 1) ON CONFLICT (consumer, topic, partition) DO UPDATE "
        "SET epoch = agg_positions.epoch + 1, updated_at = clock_timestamp() "
        "RETURNING next_offset, epoch", consumer, topic, partition, start)
    assert row is not None
    return int(row["next_offset"]), int(row["epoch"])


@contextlib.asynccontextmanager
async def fenced(conn: asyncpg.Connection, consumer: str, topic: str, partition: int,
                 epoch: int, next_offset: int) -> AsyncIterator[None]:
    """A transaction that moves the partition's position to ``next_offset`` if ``epoch`` is
    still the claimed one (else :class:`Fenced`, nothing written); the block writes the
    batch's changes in it, and they commit together."""
    async with conn.transaction():
        moved = await conn.execute(
            "UPDATE agg_positions SET next_offset = $5, updated_at = clock_timestamp() "
            "WHERE consumer = $1 AND topic = $2 AND partition = $3 AND epoch = $4",
            consumer, topic, partition, epoch, next_offset)
        if moved != "UPDATE 1":
            raise Fenced(f"{topic}[{partition}] was claimed by another instance")
        yield


async def commit(conn: asyncpg.Connection, consumer: str, topic: str, partition: int,
                 epoch: int, next_offset: int, sales: Mapping[SalesKey, Sales]) -> None:
    """The batch's sales deltas and position in one transaction, fenced by ``epoch``."""
    async with fenced(conn, consumer, topic, partition, epoch, next_offset):
        await add_sales(conn, sales)


async def orders_of(conn: asyncpg.Connection, order_ids: Iterable[str]
                    ) -> dict[str, OrderState]:
    rows = await conn.fetch("SELECT * FROM agg_orders WHERE order_id = ANY($1::text[])",
                            list(order_ids))
    return {r["order_id"]: OrderState(
        SalesKey(r["bucket"], r["region"], r["box"], r["store"], r["currency"]),
        r["revenue_minor"], r["units"], r["cancelled"]) for r in rows}


async def save_orders(conn: asyncpg.Connection, orders: Mapping[str, OrderState]) -> None:
    if not orders:
        return
    ids, states = zip(*orders.items(), strict=True)
    await conn.execute(
        "INSERT INTO agg_orders AS o (order_id, bucket, region, box, store, currency, "
        "revenue_minor, units, cancelled) SELECT * FROM unnest($1::text[], "
        "$2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], "
        "$8::numeric[], $9::boolean[]) ON CONFLICT (order_id) DO UPDATE SET "
        "revenue_minor = excluded.revenue_minor, units = excluded.units, "
        "cancelled = excluded.cancelled",
        list(ids), [s.key.bucket for s in states], [s.key.region for s in states],
        [s.key.box for s in states], [s.key.store for s in states],
        [s.key.currency for s in states], [s.revenue_minor for s in states],
        [s.units for s in states], [s.cancelled for s in states])


async def add_sales(conn: asyncpg.Connection, sales: Mapping[SalesKey, Sales]) -> None:
    if sales:
        await _upsert_sales(conn, sales.items())


async def _upsert_sales(conn: asyncpg.Connection,
                        rows: Iterable[tuple[SalesKey, Sales]]) -> None:
    keys, values = zip(*rows, strict=True)
    await conn.execute(
        "INSERT INTO agg_sales_hourly AS s "
        "(bucket, region, box, store, currency, orders, revenue_minor, units, late_events) "
        "SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], "
        "$5::text[], $6::bigint[], $7::bigint[], $8::numeric[], $9::bigint[]) "
        "ON CONFLICT (bucket, region, box, store, currency) DO UPDATE SET "
        "orders = s.orders + excluded.orders, "
        "revenue_minor = s.revenue_minor + excluded.revenue_minor, "
        "units = s.units + excluded.units, late_events = s.late_events + excluded.late_events",
        [k.bucket for k in keys], [k.region for k in keys], [k.box for k in keys],
        [k.store for k in keys], [k.currency for k in keys], [v.orders for v in values],
        [v.revenue_minor for v in values], [v.units for v in values],
        [v.late_events for v in values])
