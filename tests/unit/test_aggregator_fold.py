"""The aggregator's fold of a batch (pure): store orders counted in the bucket of their
placement, amendments and cancellations correcting that bucket, copies and purchases ignored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

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
        "meta": base.meta.model_copy(update={"occurred_at": PLACED_AT + timedelta(days=3)})})


def cancelled() -> OrderCancelled:
    base = example("boxbus.orders.OrderCancelled")
    assert isinstance(base, OrderCancelled)
    return base.model_copy(update={"order_id": "so-1"})


def test_placed_amended_cancelled_all_land_in_the_placement_bucket() -> None:
    order = placed()
    units = sum((line.quantity for line in order.lines), start=Decimal(0))
    sales, changed = fold([order, order, amended(1500, "4"), cancelled(), cancelled()], {})
    (key,) = sales
    assert key.bucket == PLACED_AT.replace(minute=0) and key.store == "store-7"
    totals = sales[key]
    assert (totals.orders, totals.revenue_minor, totals.units) == (0, 0, Decimal(0))
    assert changed["so-1"].cancelled
    # The amendment alone: the difference, in the placement's bucket (three days earlier).
    sales, _ = fold([order, amended(1500, "4")], {})
    assert (sales[key].orders, sales[key].revenue_minor) == (1, 1500)
    assert sales[key].units == Decimal("4") and units != Decimal("4")


def test_a_purchase_order_is_not_a_sale_and_an_unknown_order_is_not_corrected() -> None:
    sales, changed = fold([placed(OrderKind.PURCHASE_ORDER), amended(1, "1"), cancelled()], {})
    assert not any(s.orders or s.revenue_minor for s in sales.values()) and changed == {}
