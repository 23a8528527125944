"""The reference week's generator: every event it builds is a valid event of the contract
(the model accepts it, the schema encodes it), in publishing order, with the shape
../shared/WORKLOAD.md gives (mix, daily curve, Friday peak, late amendments)."""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import fastavro

from bus.catalog import SchemaCatalog
from bus.events import EVENT_TYPES
from processors.aggregator.week import Week, hourly_weights, last_monday, type_name
from processors.router.bench import workload_topology

START = datetime(2026, 11, 16, tzinfo=UTC)


def test_every_event_is_valid_and_in_publishing_order() -> None:
    week = Week(workload_topology("t"), 0.004, start=START)
    catalog = SchemaCatalog.load()
    events = list(week.events())
    seen: set[str] = set()
    previous = None
    for planned in events:
        assert previous is None or planned.at >= previous
        previous = planned.at
        assert START <= planned.meta["occurred_at"] < week.end
        if planned.type in seen:
            continue  # one of each type through the model and the schema is enough
        seen.add(planned.type)
        model = EVENT_TYPES[type_name(planned.type)]
        event = model.model_validate(planned.data)
        assert event.meta.aggregate_key == planned.meta["aggregate_key"]
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, catalog[event.TYPE].parsed, planned.data)
        assert len(buffer.getvalue()) > 0
    assert seen >= {"OrderPlaced", "OrderConfirmed", "OrderAmended", "OrderCancelled",
                    "CommentAdded", "StockLevelChanged", "DocumentAttached",
                    "ShipmentDispatched", "GoodsReceived", "InvoiceIssued", "PaymentRecorded",
                    "PriceListSent", "BranchReportSent", "DirectiveSent", "ContactUpserted"}


def test_the_mix_and_the_curve_follow_the_workload() -> None:
    week = Week(workload_topology("t"), 0.02, start=START)
    events = list(week.events())
    distinct = {p.meta["event_id"]: p for p in events}
    assert len(events) - len(distinct) == week.copies > 0  # some reach the network twice
    mix = Counter(p.type for p in distinct.values())
    store = sum(1 for p in distinct.values() if p.type == "OrderPlaced"
                and p.data["kind"] == "STORE_ORDER")
    assert store == week.store_orders == 10_000
    purchases = {p.data["order_id"] for p in distinct.values() if p.type == "OrderPlaced"
                 and p.data["kind"] == "PURCHASE_ORDER"}
    assert len(purchases) == week.purchase_orders
    amended = Counter(p.data["order_id"] in purchases for p in distinct.values()
                      if p.type == "OrderAmended")
    assert 0.25 < amended[False] / store < 0.35 and amended[True] > 0
    by_supplier = [p for p in distinct.values() if p.type == "OrderCancelled"
                   and p.data["cancelled_by"] == "SUPPLIER"]
    assert by_supplier and all(p.data["order_id"] in purchases for p in by_supplier)
    assert 0.03 < (mix["OrderCancelled"] - len(by_supplier)) / store < 0.07
    assert 4 < mix["StockLevelChanged"] / store < 7  # a change per line, median 5 lines
    weights = hourly_weights()
    friday_peak = 4 * 24 + 18
    assert max(weights) == weights[friday_peak]
    assert abs(weights[friday_peak] * 168 - 5) < 1e-9
    assert min(weights) / (sum(weights) / 168) < 0.11  # nights
    # Late amendments: they reach the network hours after they happened.
    late = [p for p in events if p.at - p.meta["occurred_at"] >= timedelta(hours=2)]
    assert late and all(p.type == "OrderAmended" for p in late)


def test_same_seed_same_week_and_last_monday() -> None:
    first = [p.meta["event_id"] for p in Week(workload_topology("t"), 0.001, start=START)
             .events()]
    again = [p.meta["event_id"] for p in Week(workload_topology("t"), 0.001, start=START)
             .events()]
    assert first == again
    assert last_monday(datetime(2026, 11, 30, 5, tzinfo=UTC)) == datetime(2026, 11, 23,
                                                                          tzinfo=UTC)


def test_stock_levels_follow_the_changes_in_time_order() -> None:
    week = Week(workload_topology("t"), 0.002, start=START)
    seen: dict[tuple[str, str], Decimal] = {}
    sold: dict[tuple[str, str], Decimal] = {}
    for planned in week.events():
        if planned.type != "StockLevelChanged" or planned.meta["event_id"] in sold:
            continue
        data = planned.data
        key = (data["warehouse"], data["sku"])
        before = seen.get(key, Decimal(200))
        change = data["on_hand"] - before
        # A sale lowers the level; a restock (when a sale would go below zero) adds 500
        # less what the sale took.
        assert (change < 0 and data["reason"] == "SALE") or (
            data["reason"] == "RECEIPT" and 0 < change <= 500), (change, data["reason"])
        seen[key] = data["on_hand"]
        sold[planned.meta["event_id"]] = change
    assert seen and all(week.stock[k] == v for k, v in seen.items())
