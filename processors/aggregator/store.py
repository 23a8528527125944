"""The analytics database of the aggregator: the aggregates, and the positions they include.

The commit protocol, per fetch (the records of one ``getmany``, from one or more partitions):

1. On assignment, the instance *claims* each partition: one statement raises the partition's
   ``epoch`` in ``agg_positions`` and returns it with the stored ``next_offset`` (the log's
   start if none) and ``watermarks``. The consumer seeks there. Kafka's committed offsets are
   not used.
2. The fetch's events are folded into deltas in memory (:mod:`processors.aggregator.fold`:
   one row per bucket and key), never a transaction per event.
3. One transaction: each partition's position (and watermarks) moves to its batch's end **only
   if its epoch is still the one this instance claimed and the stored position is still the
   batch's start** (``UPDATE ... WHERE epoch = $claimed AND next_offset = $start``); no row
   updated means another instance claimed the partition since (a rebalance this one has not
   seen yet, or a pause that outlived its membership): the transaction is rolled back, the
   partition dropped and paused until the group assigns it again (its new owner applies its
   records), and the fetch's other partitions folded and written again. Otherwise the
   deltas are written with one multi-row upsert per table, rows sorted by key (two instances
   touching the same buckets lock them in the same order), a notification is queued for the
   dashboard (sent by PostgreSQL at commit, so nobody hears of an uncommitted number), and
   the transaction commits: the aggregates and the positions move together, or neither
   does.

A crash anywhere before the commit leaves both as they were, and the batch is read again from
the stored position: every event counts exactly once. A deadlock or serialisation failure
rolls the whole transaction back, and it is simply tried again.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from bus.migrations import Migration, Schema
from processors.aggregator.fold import (
    Changes,
    OrderState,
    SalesKey,
    day_of,
)

CHANNEL = "boxbus_analytics"  # NOTIFY channel: the aggregates changed (a commit happened)

MIGRATIONS = [
    Migration(1, "positions", """
        CREATE TABLE agg_positions (
            consumer text NOT NULL, topic text NOT NULL, partition int NOT NULL,
            next_offset bigint NOT NULL, epoch bigint NOT NULL DEFAULT 0,
            watermarks jsonb NOT NULL DEFAULT '{}',
            updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (consumer, topic, partition));
        COMMENT ON TABLE agg_positions IS
            'Per region partition: the next offset not yet in the aggregates, the epoch of the '
            'instance that may commit for it, and per source box the newest event time seen '
            'in it (the watermarks that decide what is late, as epoch milliseconds).';
    """),
    Migration(2, "sales", """
        CREATE TABLE agg_sales_hourly (
            bucket timestamptz NOT NULL, region text NOT NULL, box text NOT NULL,
            store text NOT NULL, currency text NOT NULL, orders bigint NOT NULL,
            revenue_minor bigint NOT NULL, units numeric(20, 3) NOT NULL,
            late_events bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (bucket, region, box, store, currency));
        CREATE TABLE agg_sales_daily (LIKE agg_sales_hourly INCLUDING ALL);
        COMMENT ON TABLE agg_sales_daily IS
            'agg_sales_hourly rolled up by UTC day (bucket is the day), in the same transaction.';
        CREATE TABLE agg_product_daily (
            bucket timestamptz NOT NULL, region text NOT NULL, box text NOT NULL,
            sku text NOT NULL, currency text NOT NULL, lines bigint NOT NULL,
            units numeric(20, 3) NOT NULL, net_minor bigint NOT NULL,
            PRIMARY KEY (bucket, region, box, sku, currency));
        CREATE TABLE agg_orders (
            order_id text PRIMARY KEY, bucket timestamptz NOT NULL, region text NOT NULL,
            box text NOT NULL, store text NOT NULL, currency text NOT NULL,
            revenue_minor bigint NOT NULL, units numeric(20, 3) NOT NULL,
            articles jsonb NOT NULL, cancelled boolean NOT NULL DEFAULT false,
            revision int NOT NULL DEFAULT 0);
        COMMENT ON TABLE agg_orders IS
            'Per store order: the bucket it was counted in and with what, so that amendments '
            'and cancellations correct that bucket.';
    """),
    Migration(3, "purchases-stock-receivables-reports", """
        CREATE TABLE agg_purchase_orders (
            order_id text PRIMARY KEY, buyer text, supplier text, region text, currency text,
            placed_at timestamptz, revision int, ordered_units numeric(20, 3),
            ordered_total_minor bigint, confirmed_at timestamptz,
            confirmed_units numeric(20, 3), cancelled_at timestamptz);
        CREATE TABLE agg_shipments (
            shipment_id text PRIMARY KEY, order_id text NOT NULL,
            dispatched_at timestamptz, dispatched_units numeric(20, 3),
            received_at timestamptz, received_units numeric(20, 3));
        CREATE INDEX agg_shipments_order ON agg_shipments (order_id);
        CREATE TABLE agg_stock (
            box text NOT NULL, warehouse text NOT NULL, sku text NOT NULL,
            region text NOT NULL, unit text NOT NULL, on_hand numeric(20, 3) NOT NULL,
            in_transit numeric(20, 3) NOT NULL, reserved numeric(20, 3) NOT NULL,
            occurred_at timestamptz NOT NULL, event_id text NOT NULL,
            PRIMARY KEY (box, warehouse, sku));
        CREATE TABLE agg_invoices (
            invoice_id text PRIMARY KEY, order_id text NOT NULL, supplier text NOT NULL,
            buyer text, region text NOT NULL, currency text NOT NULL,
            total_minor bigint NOT NULL, issued_at timestamptz NOT NULL,
            due_at timestamptz NOT NULL);
        CREATE TABLE agg_payments (
            payment_id text PRIMARY KEY, invoice_id text NOT NULL, payer text NOT NULL,
            currency text NOT NULL, amount_minor bigint NOT NULL, paid_at timestamptz NOT NULL);
        CREATE INDEX agg_payments_invoice ON agg_payments (invoice_id);
        CREATE TABLE agg_branch_reports (
            report_id text PRIMARY KEY, branch text NOT NULL, region text NOT NULL,
            period_start timestamptz NOT NULL, period_end timestamptz NOT NULL,
            orders_count bigint NOT NULL, revenue_minor bigint NOT NULL,
            currency text NOT NULL, stock_value_minor bigint NOT NULL,
            sent_at timestamptz NOT NULL);
        CREATE TABLE agg_events_hourly (
            bucket timestamptz NOT NULL, region text NOT NULL, type text NOT NULL,
            records bigint NOT NULL, late bigint NOT NULL,
            PRIMARY KEY (bucket, region, type));
        COMMENT ON TABLE agg_events_hourly IS
            'Records of each event type by the hour of their event time, and how many came '
            'late (an hour or more behind their source''s watermark in their partition).';
    """),
]

SCHEMA = Schema("agg_migrations", 0x62626167, MIGRATIONS)  # "bbag"


class Fenced(Exception):
    """Another instance claimed the partition: this one may not commit for it."""

    def __init__(self, topic: str, partition: int) -> None:
        super().__init__(f"{topic}[{partition}] was claimed by another instance")
        self.topic, self.partition = topic, partition


@dataclass(frozen=True)
class Claim:
    next_offset: int
    epoch: int
    watermarks: dict[str, datetime]


@dataclass(frozen=True)
class Position:
    """One partition's batch: where it started (the stored position it was read from) and
    where it ends (what the transaction moves the position to)."""

    topic: str
    partition: int
    epoch: int
    start_offset: int
    next_offset: int
    watermarks: dict[str, datetime]


async def migrate(conn: asyncpg.Connection) -> list[int]:
    return await SCHEMA.migrate(conn)


async def claim(conn: asyncpg.Connection, consumer: str, topic: str, partition: int,
                start: int) -> Claim:
    """Claim a partition: its position and watermarks, and an epoch one more than before."""
    row = await conn.fetchrow(
        "INSERT INTO agg_positions (consumer, topic, partition, next_offset, epoch) "
        "VALUES ($1, $2, $3, $4, 1) ON CONFLICT (consumer, topic, partition) DO UPDATE "
        "SET epoch = agg_positions.epoch + 1, updated_at = clock_timestamp() "
        "RETURNING next_offset, epoch, watermarks", consumer, topic, partition, start)
    assert row is not None
    marks = {box: datetime.fromtimestamp(ms / 1000, UTC)
             for box, ms in json.loads(row["watermarks"]).items()}
    return Claim(int(row["next_offset"]), int(row["epoch"]), marks)


@contextlib.asynccontextmanager
async def fenced(conn: asyncpg.Connection, consumer: str, positions: Sequence[Position]
                 ) -> AsyncIterator[None]:
    """A transaction that moves each partition's position if its epoch is still the claimed
    one and the stored position is still the batch's start (else :class:`Fenced` for the
    first that is not, and nothing is written); the block writes the batch's changes in it,
    and they commit together, with a notification."""
    async with conn.transaction():
        for p in sorted(positions, key=lambda p: (p.topic, p.partition)):
            moved = await conn.execute(
                "UPDATE agg_positions SET next_offset = $5, watermarks = $6, "
                "updated_at = clock_timestamp() WHERE consumer = $1 AND topic = $2 "
                "AND partition = $3 AND epoch = $4 AND next_offset = $7",
                consumer, p.topic, p.partition, p.epoch, p.next_offset,
                json.dumps({box: round(t.timestamp() * 1000) for box, t in
                            sorted(p.watermarks.items())}), p.start_offset)
            if moved != "UPDATE 1":
                raise Fenced(p.topic, p.partition)
        yield
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, consumer)


async def orders_of(conn: asyncpg.Connection, order_ids: Iterable[str]
                    ) -> dict[str, OrderState]:
    rows = await conn.fetch("SELECT * FROM agg_orders WHERE order_id = ANY($1::text[])",
                            list(order_ids))
    return {r["order_id"]: OrderState(
        SalesKey(r["bucket"], r["region"], r["box"], r["store"], r["currency"]),
        r["revenue_minor"], r["units"],
        {sku: (int(c), Decimal(u), int(n))
         for sku, (c, u, n) in json.loads(r["articles"]).items()},
        r["cancelled"], r["revision"]) for r in rows}


async def purchases_of(conn: asyncpg.Connection, order_ids: Iterable[str]) -> dict[str, int]:
    """The purchase orders among ``order_ids`` whose placement is known, with the revision
    their ordered quantities come from."""
    rows = await conn.fetch("SELECT order_id, revision FROM agg_purchase_orders "
                            "WHERE order_id = ANY($1::text[]) AND revision IS NOT NULL",
                            list(order_ids))
    return {r["order_id"]: r["revision"] for r in rows}


async def write(conn: asyncpg.Connection, changes: Changes) -> None:
    """All of a batch's changes, one multi-row statement per table, rows sorted by key."""
    await _sales(conn, "agg_sales_hourly", changes.sales.items())
    daily: dict[SalesKey, list[Any]] = {}
    for key, sales in changes.sales.items():
        day = SalesKey(day_of(key.bucket), key.region, key.box, key.store, key.currency)
        row = daily.setdefault(day, [0, 0, Decimal(0), 0])
        row[0] += sales.orders
        row[1] += sales.revenue_minor
        row[2] += sales.units
        row[3] += sales.late_events
    await _upsert(conn, "agg_sales_daily", _SALES_COLUMNS,
                  [(*_key(k), *v) for k, v in sorted(daily.items())], 5, _ADD)
    await _upsert(conn, "agg_product_daily", (
        ("bucket", "timestamptz"), ("region", "text"), ("box", "text"), ("sku", "text"),
        ("currency", "text"), ("lines", "bigint"), ("units", "numeric"),
        ("net_minor", "bigint")),
        [(*_key(k), v.lines, v.units, v.net_minor) for k, v in sorted(changes.products.items())],
        5, _ADD)
    await _upsert(conn, "agg_orders", (
        ("order_id", "text"), ("bucket", "timestamptz"), ("region", "text"), ("box", "text"),
        ("store", "text"), ("currency", "text"), ("revenue_minor", "bigint"),
        ("units", "numeric"), ("articles", "jsonb"), ("cancelled", "boolean"),
        ("revision", "int")),
        [(order_id, *_key(s.key), s.revenue_minor, s.units,
          json.dumps({sku: [c, str(u), n] for sku, (c, u, n) in s.articles.items()}),
          s.cancelled, s.revision)
         for order_id, s in sorted(changes.orders.items())], 1, _REPLACE)
    await _upsert(conn, "agg_purchase_orders", (
        ("order_id", "text"), ("buyer", "text"), ("supplier", "text"), ("region", "text"),
        ("currency", "text"), ("placed_at", "timestamptz"), ("revision", "int"),
        ("ordered_units", "numeric"), ("ordered_total_minor", "bigint"),
        ("confirmed_at", "timestamptz"), ("confirmed_units", "numeric"),
        ("cancelled_at", "timestamptz")),
        [(order_id, p.buyer, p.supplier, p.region, p.currency, p.placed_at, p.revision,
          p.ordered_units, p.ordered_total_minor, p.confirmed_at, p.confirmed_units,
          p.cancelled_at) for order_id, p in sorted(changes.purchases.items())], 1, _MERGE)
    await _upsert(conn, "agg_shipments", (
        ("shipment_id", "text"), ("order_id", "text"), ("dispatched_at", "timestamptz"),
        ("dispatched_units", "numeric"), ("received_at", "timestamptz"),
        ("received_units", "numeric")),
        [(shipment_id, s.order_id, s.dispatched_at, s.dispatched_units, s.received_at,
          s.received_units) for shipment_id, s in sorted(changes.shipments.items())], 1, _MERGE)
    await _upsert(conn, "agg_stock", (
        ("box", "text"), ("warehouse", "text"), ("sku", "text"), ("region", "text"),
        ("unit", "text"), ("on_hand", "numeric"), ("in_transit", "numeric"),
        ("reserved", "numeric"), ("occurred_at", "timestamptz"), ("event_id", "text")),
        [(k.box, k.warehouse, k.sku, s.region, s.unit, s.on_hand, s.in_transit, s.reserved,
          s.occurred_at, s.event_id) for k, s in sorted(changes.stock.items())], 3, _NEWER)
    await _upsert(conn, "agg_invoices", (
        ("invoice_id", "text"), ("order_id", "text"), ("supplier", "text"), ("buyer", "text"),
        ("region", "text"), ("currency", "text"), ("total_minor", "bigint"),
        ("issued_at", "timestamptz"), ("due_at", "timestamptz")),
        [(i, v.order_id, v.supplier, v.buyer, v.region, v.currency, v.total_minor,
          v.issued_at, v.due_at) for i, v in sorted(changes.invoices.items())], 1, _KEEP)
    await _upsert(conn, "agg_payments", (
        ("payment_id", "text"), ("invoice_id", "text"), ("payer", "text"),
        ("currency", "text"), ("amount_minor", "bigint"), ("paid_at", "timestamptz")),
        [(i, v.invoice_id, v.payer, v.currency, v.amount_minor, v.paid_at)
         for i, v in sorted(changes.payments.items())], 1, _KEEP)
    await _upsert(conn, "agg_branch_reports", (
        ("report_id", "text"), ("branch", "text"), ("region", "text"),
        ("period_start", "timestamptz"), ("period_end", "timestamptz"),
        ("orders_count", "bigint"), ("revenue_minor", "bigint"), ("currency", "text"),
        ("stock_value_minor", "bigint"), ("sent_at", "timestamptz")),
        [(i, v.branch, v.region, v.period_start, v.period_end, v.orders_count,
          v.revenue_minor, v.currency, v.stock_value_minor, v.sent_at)
         for i, v in sorted(changes.reports.items())], 1, _KEEP)
    await _upsert(conn, "agg_events_hourly", (
        ("bucket", "timestamptz"), ("region", "text"), ("type", "text"), ("records", "bigint"),
        ("late", "bigint")),
        [(k.bucket, k.region, k.type, v.records, v.late)
         for k, v in sorted(changes.counts.items())], 3, _ADD)


_SALES_COLUMNS = (("bucket", "timestamptz"), ("region", "text"), ("box", "text"),
                  ("store", "text"), ("currency", "text"), ("orders", "bigint"),
                  ("revenue_minor", "bigint"), ("units", "numeric"), ("late_events", "bigint"))


async def _sales(conn: asyncpg.Connection, table: str, sales: Iterable[tuple[SalesKey, Any]]
                 ) -> None:
    await _upsert(conn, table, _SALES_COLUMNS,
                  [(*_key(k), v.orders, v.revenue_minor, v.units, v.late_events)
                   for k, v in sorted(sales, key=lambda kv: kv[0])], 5, _ADD)


def _key(key: Any) -> tuple[Any, ...]:
    return tuple(getattr(key, f) for f in key.__dataclass_fields__)


# How a row meets the stored one (the conflict's non-key columns):
_ADD = "add"  # deltas: added
_REPLACE = "replace"  # state: the new row wins
_MERGE = "merge"  # facts: a column given (not null) wins; a revision guards the ordered ones
_NEWER = "newer"  # latest: the row with the newer (occurred_at, event_id) wins
_KEEP = "keep"  # immutable facts: the first row stays


def _assignments(how: str, columns: Sequence[str]) -> str:
    if how == _ADD:
        return ", ".join(f"{c} = t.{c} + excluded.{c}" for c in columns)
    if how in (_REPLACE, _NEWER):
        return ", ".join(f"{c} = excluded.{c}" for c in columns)
    guarded = {"revision", "ordered_units", "ordered_total_minor"}
    newer = "excluded.revision IS NOT NULL AND excluded.revision >= coalesce(t.revision, -1)"
    return ", ".join(
        f"{c} = CASE WHEN {newer} THEN excluded.{c} ELSE t.{c} END" if c in guarded
        else f"{c} = coalesce(excluded.{c}, t.{c})" for c in columns)


async def _upsert(conn: asyncpg.Connection, table: str, columns: Sequence[tuple[str, str]],
                  rows: Sequence[Sequence[Any]], keys: int, how: str) -> None:
    if not rows:
        return
    names = [name for name, _ in columns]
    arrays = ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(columns, start=1))
    conflict = f"ON CONFLICT ({', '.join(names[:keys])}) DO "
    if how == _KEEP:
        conflict += "NOTHING"
    else:
        conflict += "UPDATE SET " + _assignments(how, names[keys:])
        if how == _NEWER:
            # (Event ids compared byte by byte, as the fold compares them in Python.)
            conflict += " WHERE (excluded.occurred_at, excluded.event_id COLLATE \"C\") > " \
                        "(t.occurred_at, t.event_id COLLATE \"C\")"
    await conn.execute(
        f"INSERT INTO {table} AS t ({', '.join(names)}) SELECT * FROM unnest({arrays}) "
        f"{conflict}", *([row[i] for row in rows] for i in range(len(columns))))
