"""An independent recomputation of the aggregates from the region topics, and its comparison
with the analytics database: the proof behind "exactly once" in the week replay and its tests.

It shares no code with the aggregator's fold or store: records are read from the start of
each partition to the given end offsets, bodies decoded with fastavro into plain dicts (no
event models), each order's life replayed in log order, and the totals computed directly.
The rules are the documented ones (:mod:`processors.aggregator.fold`), written again.
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import fastavro
from aiokafka import TopicPartition

from bus import wire
from bus.kafka import KafkaAccess
from bus.registry import SchemaRegistry

HOUR = timedelta(hours=1)


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


@dataclass
class Expected:
    """What the aggregates must hold, keyed as the tables are."""

    sales: Counter[tuple[Any, ...]] = field(default_factory=Counter)  # (hour, region, box,
    # store, currency, measure) -> value; measures: orders, revenue, units, late
    products: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    events: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    stock: dict[tuple[str, str, str], tuple[datetime, str, Decimal]] = field(
        default_factory=dict)
    invoiced: Counter[str] = field(default_factory=Counter)  # currency -> minor
    paid: dict[str, int] = field(default_factory=dict)  # payment id -> minor
    purchases: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    reports: set[str] = field(default_factory=set)
    records: int = 0


async def recompute(kafka: KafkaAccess, registry: SchemaRegistry,
                    ends: dict[TopicPartition, int],
                    progress: Callable[[int], None] | None = None) -> Expected:
    """Read every region partition up to ``ends`` and compute the aggregates."""
    expected = Expected()
    orders: dict[str, dict[str, Any]] = {}
    schemas: dict[int, Any] = {}
    consumer = kafka.consumer(enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    try:
        wanted = [tp for tp, end in ends.items() if end > 0]
        consumer.assign(wanted)
        await consumer.seek_to_beginning(*wanted)
        watermarks: dict[tuple[TopicPartition, str], datetime] = {}
        left = {tp: ends[tp] for tp in wanted}
        while left:
            fetched = await consumer.getmany(*left, timeout_ms=1000, max_records=5000)
            for tp, records in fetched.items():
                for record in records:
                    if record.offset >= left.get(tp, 0):
                        break
                    expected.records += 1
                    data, kind = await _decoded(record.value, registry, schemas)
                    if data is None:
                        continue
                    occurred = data["meta"]["occurred_at"]
                    source = (tp, data["meta"]["source_box"])
                    mark = watermarks.get(source)
                    late = mark is not None and mark - occurred >= HOUR
                    if mark is None or occurred > mark:
                        watermarks[source] = occurred
                    _apply(expected, orders, kind, data, late)
                if progress:
                    progress(len(records))
                position = await consumer.position(tp)
                if position >= ends[tp]:
                    left.pop(tp, None)
                    consumer.pause(tp)
    finally:
        await consumer.stop()
    return expected


async def _decoded(value: bytes | None, registry: SchemaRegistry, schemas: dict[int, Any]
                   ) -> tuple[dict[str, Any] | None, str]:
    try:
        schema_id, body = wire.unframe(value)
        if schema_id not in schemas:
            writer = await registry.writer(schema_id)
            schemas[schema_id] = (writer.parsed, writer.fullname.rsplit(".", 1)[-1])
        parsed, kind = schemas[schema_id]
        data: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(bytes(body)), parsed,
                                                          None)  # type: ignore[assignment]
        return data, kind
    except Exception:  # what the aggregator dead-letters counts nowhere
        return None, ""


def _apply(expected: Expected, orders: dict[str, dict[str, Any]], kind: str,
           data: dict[str, Any], late: bool) -> None:
    meta = data["meta"]
    hour = _hour(meta["occurred_at"])
    expected.events[(hour, meta["region"], kind, "records")] += 1
    expected.events[(hour, meta["region"], kind, "late")] += late
    if kind == "OrderPlaced" and data["kind"] == "PURCHASE_ORDER":
        expected.purchases["placed"].add(data["order_id"])
        orders.setdefault(data["order_id"], {"purchase": True})
    elif kind == "OrderPlaced":
        if data["order_id"] in orders:
            return
        order = {"purchase": False, "at": (hour, meta["region"], meta["source_box"],
                                           data["store_id"] or "", data["total"]["currency"]),
                 "lines": data["lines"], "total": data["total"]["amount_minor"]}
        orders[data["order_id"]] = order
        _count(expected, order, +1)
        expected.sales[(*order["at"], "late")] += late
    elif kind in ("OrderAmended", "OrderCancelled"):
        known = orders.get(data["order_id"])
        if known is None or known["purchase"]:
            # A purchase order's change, or the cancellation of an order this partition never
            # saw placed (a supplier's, from its own region): only cancellations count here.
            if kind == "OrderCancelled":
                expected.purchases["cancelled"].add(data["order_id"])
            return
        order = known
        if order.get("cancelled"):
            return
        if kind == "OrderAmended" and data["revision"] <= order.get("revision", 0):
            return  # a copy, or older than the lines counted
        expected.sales[(*order["at"], "late")] += late
        _count(expected, order, -1)
        if kind == "OrderCancelled":
            order["cancelled"] = True
        else:
            order["lines"], order["total"] = data["lines"], data["total"]["amount_minor"]
            order["revision"] = data["revision"]
            _count(expected, order, +1)
    elif kind == "OrderConfirmed":
        known = orders.get(data["order_id"])
        if known is None or known["purchase"]:
            expected.purchases["confirmed"].add(data["order_id"])
    elif kind == "ShipmentDispatched":
        expected.purchases["dispatched"].add(data["order_id"])
    elif kind == "GoodsReceived":
        expected.purchases["received"].add(data["order_id"])
    elif kind == "StockLevelChanged":
        key = (meta["source_box"], data["warehouse"], data["sku"])
        newer = (meta["occurred_at"], meta["event_id"], data["on_hand"])
        if key not in expected.stock or expected.stock[key][:2] < newer[:2]:
            expected.stock[key] = newer
    elif kind == "InvoiceIssued":
        expected.invoiced[data["invoice_id"]] = data["total"]["amount_minor"]
    elif kind == "PaymentRecorded":
        expected.paid[data["payment_id"]] = data["amount"]["amount_minor"]
    elif kind == "BranchReportSent":
        expected.reports.add(data["report_id"])


def _count(expected: Expected, order: dict[str, Any], sign: int) -> None:
    """Add (or take back) a store order's whole contribution at its placement bucket."""
    at = order["at"]
    expected.sales[(*at, "orders")] += sign
    expected.sales[(*at, "revenue")] += sign * order["total"]
    expected.sales[(*at, "units")] += sign * sum(line["quantity"] for line in order["lines"])
    day = at[0].replace(hour=0)
    for line in order["lines"]:
        key = (day, at[1], at[2], line["sku"], at[4])
        expected.products[(*key, "lines")] += sign
        expected.products[(*key, "units")] += sign * line["quantity"]
        expected.products[(*key, "net")] += sign * round(
            line["quantity"] * line["unit_price"]["amount_minor"])


async def differences(conn: asyncpg.Connection, expected: Expected) -> list[str]:
    """What the database holds differently from the recomputation (empty: they agree)."""
    found: list[str] = []

    def compare(what: str, ours: Counter[Any], theirs: Counter[Any]) -> None:
        ours = Counter({k: v for k, v in ours.items() if v})
        theirs = Counter({k: v for k, v in theirs.items() if v})
        if ours != theirs:
            keys = sorted(set(ours) ^ set(theirs) | {k for k in ours if ours[k] != theirs[k]},
                          key=str)
            found.append(f"{what}: {len(keys)} differ, e.g. "
                         + "; ".join(f"{k}: db {ours.get(k)} vs topics {theirs.get(k)}"
                                     for k in keys[:3]))

    stored: Counter[Any] = Counter()
    for r in await conn.fetch("SELECT * FROM agg_sales_hourly"):
        key = (r["bucket"], r["region"], r["box"], r["store"], r["currency"])
        for measure, column in (("orders", "orders"), ("revenue", "revenue_minor"),
                                ("units", "units"), ("late", "late_events")):
            stored[(*key, measure)] = r[column]
    compare("sales by hour", stored, expected.sales)
    daily: Counter[Any] = Counter()
    for (hour, *rest), value in expected.sales.items():
        daily[(hour.replace(hour=0), *rest)] += value
    stored = Counter()
    for r in await conn.fetch("SELECT * FROM agg_sales_daily"):
        key = (r["bucket"], r["region"], r["box"], r["store"], r["currency"])
        for measure, column in (("orders", "orders"), ("revenue", "revenue_minor"),
                                ("units", "units"), ("late", "late_events")):
            stored[(*key, measure)] = r[column]
    compare("sales by day", stored, daily)
    stored = Counter()
    for r in await conn.fetch("SELECT * FROM agg_product_daily"):
        key = (r["bucket"], r["region"], r["box"], r["sku"], r["currency"])
        for measure, column in (("lines", "lines"), ("units", "units"), ("net", "net_minor")):
            stored[(*key, measure)] = r[column]
    compare("products by day", stored, expected.products)
    stored = Counter()
    for r in await conn.fetch("SELECT * FROM agg_events_hourly"):
        stored[(r["bucket"], r["region"], r["type"], "records")] = r["records"]
        stored[(r["bucket"], r["region"], r["type"], "late")] = r["late"]
    compare("records by type and hour", stored, expected.events)
    stored = Counter({(r["box"], r["warehouse"], r["sku"]): r["on_hand"]
                      for r in await conn.fetch("SELECT * FROM agg_stock")})
    compare("stock on hand", stored, Counter({k: v[2] for k, v in expected.stock.items()}))
    invoiced = await conn.fetchval("SELECT coalesce(sum(total_minor), 0) FROM agg_invoices")
    paid = await conn.fetchval("SELECT coalesce(sum(amount_minor), 0) FROM agg_payments")
    if (invoiced, paid) != (sum(expected.invoiced.values()), sum(expected.paid.values())):
        found.append(f"receivables: db invoiced {invoiced} paid {paid} vs topics "
                     f"{sum(expected.invoiced.values())} {sum(expected.paid.values())}")
    funnel = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE placed_at IS NOT NULL) AS placed, "
        "count(*) FILTER (WHERE confirmed_at IS NOT NULL AND placed_at IS NOT NULL) "
        "AS confirmed, count(*) FILTER (WHERE cancelled_at IS NOT NULL) AS cancelled, "
        "count(*) AS rows FROM agg_purchase_orders")
    assert funnel is not None
    placed = expected.purchases["placed"]
    want = {"placed": len(placed),
            "confirmed": len(expected.purchases["confirmed"] & placed),
            "cancelled": len(expected.purchases["cancelled"]),
            # Rows: purchase orders placed, confirmed or cancelled (store orders make none).
            "rows": len(placed | expected.purchases["confirmed"]
                        | expected.purchases["cancelled"])}
    if dict(funnel) != want:
        found.append(f"purchase orders: db {dict(funnel)} vs topics {want}")
    shipped = await conn.fetchrow(
        "SELECT count(DISTINCT order_id) FILTER (WHERE dispatched_at IS NOT NULL) AS d, "
        "count(DISTINCT order_id) FILTER (WHERE received_at IS NOT NULL) AS r "
        "FROM agg_shipments")
    assert shipped is not None
    if (shipped["d"], shipped["r"]) != (len(expected.purchases["dispatched"]),
                                        len(expected.purchases["received"])):
        found.append(f"shipments: db {tuple(shipped)} vs topics "
                     f"{len(expected.purchases['dispatched'])}, "
                     f"{len(expected.purchases['received'])}")
    reports = await conn.fetchval("SELECT count(*) FROM agg_branch_reports")
    if reports != len(expected.reports):
        found.append(f"branch reports: db {reports} vs topics {len(expected.reports)}")
    return found
