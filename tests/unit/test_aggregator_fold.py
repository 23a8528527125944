"""The aggregator's fold of a batch (pure): store orders counted in the bucket of their
placement, amendments and cancellations correcting that bucket, copies and purchases ignored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bus.events.models import Money, OrderAmended, OrderCancelled, OrderKind, OrderPlaced
from bus.examples import example
from processors.aggregator.service import fold

PLACED_AT = datetime(2026, 11, 23, 9, 40, tzinfo=UTC)


def placed(kind: OrderKind = OrderKind.STORE_ORDER) -> OrderPlaced:
    base = example("boxbus.orders.OrderPlaced")
    assert isinstance(base, OrderPlaced)
    return base.model_copy(update={
        "order_id": "so-1", "kind": kind, "store_id": "store-7",
        "total": Money(amount_minor=1000, currency="EUR"),
        "meta": base.meta.model_copy(update={"occurred_at": PLACED_AT, "region": "north",
                                             "source_box": "branch-n"})})


def amended(amount: int, quantity: str) -> OrderAmended:
    base = example("boxbus.orders.OrderAmended")
    assert isinstance(base, OrderAmended)
    line = placed().lines[0].model_copy(update={"quantity": Decimal(quantity)})
    return base.model_copy(update={
        "order_id": "so-1", "lines": (line,), "total": Money(amount_minor=amount, currency="EUR"),
        "meta": base.meta.model_copy(update={"occurred_at": PLACED_AT + timedelta(hours=2)})})


def on_time(event: Any) -> tuple[Any, int]:
    """The event with the timestamp of a record that reached the network a minute after it."""
    return event, int((event.meta.occurred_at + timedelta(minutes=1)).timestamp() * 1000)


def late(event: Any, by: timedelta) -> tuple[Any, int]:
    return event, int((event.meta.occurred_at + by).timestamp() * 1000)


def cancelled() -> OrderCancelled:
    base = example("boxbus.orders.OrderCancelled")
    assert isinstance(base, OrderCancelled)
    return base.model_copy(update={"order_id": "so-1"})


def test_placed_amended_cancelled_all_land_in_the_placement_bucket() -> None:
    order = placed()
    units = sum((line.quantity for line in order.lines), start=Decimal(0))
    sales, changed = fold([on_time(order), on_time(order), on_time(amended(1500, "4")),
                           on_time(cancelled()), on_time(cancelled())], {})
    (key,) = sales
    assert key.bucket == PLACED_AT.replace(minute=0) and key.store == "store-7"
    totals = sales[key]
    assert (totals.orders, totals.revenue_minor, totals.units) == (0, 0, Decimal(0))
    assert changed["so-1"].cancelled
    assert totals.late_events == 0
    # An amendment arriving three days late: the difference, in the placement's bucket,
    # counted there as late.
    sales, _ = fold([on_time(order), late(amended(1500, "4"), timedelta(days=3))], {})
    assert (sales[key].orders, sales[key].revenue_minor) == (1, 1500)
    assert sales[key].units == Decimal("4") and units != Decimal("4")
    assert sales[key].late_events == 1


def test_a_purchase_order_is_not_a_sale_and_an_unknown_order_is_not_corrected() -> None:
    sales, changed = fold([on_time(placed(OrderKind.PURCHASE_ORDER)),
                           on_time(amended(1, "1")), on_time(cancelled())], {})
    assert not any(s.orders or s.revenue_minor for s in sales.values()) and changed == {}
