"""The aggregator's fold of a batch (pure): store orders counted in the bucket of their
placement (by store and by product), amendments and cancellations correcting that bucket,
copies changing nothing, purchase orders as funnel facts, the newest stock level winning,
receivables, reports, and counts of records and late events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bus.events.models import (
    GoodsReceived,
    InvoiceIssued,
    Money,
    OrderAmended,
    OrderCancelled,
    OrderConfirmed,
    OrderKind,
    OrderPlaced,
    PaymentRecorded,
    ShipmentDispatched,
    StockLevelChanged,
)
from bus.examples import example
from processors.aggregator.fold import CountKey, Fold, ProductKey, StockKey

PLACED_AT = datetime(2026, 11, 23, 9, 40, tzinfo=UTC)
DAY = PLACED_AT.replace(hour=0, minute=0)


def typed(name: str, **update: Any) -> Any:
    base = example(f"boxbus.{name}")
    meta = update.pop("meta", {})
    return base.model_copy(update={**update, "meta": base.meta.model_copy(update=meta)})


def placed(kind: OrderKind = OrderKind.STORE_ORDER, order_id: str = "so-1") -> OrderPlaced:
    event: OrderPlaced = typed(
        "orders.OrderPlaced", order_id=order_id, kind=kind, store_id="store-7",
        total=Money(amount_minor=1000, currency="EUR"),
        meta={"occurred_at": PLACED_AT, "region": "north", "source_box": "branch-n"})
    return event


def amended(amount: int, quantity: str, revision: int = 1, order_id: str = "so-1"
            ) -> OrderAmended:
    line = placed().lines[0].model_copy(update={"quantity": Decimal(quantity)})
    event: OrderAmended = typed(
        "orders.OrderAmended", order_id=order_id, lines=(line,), revision=revision,
        total=Money(amount_minor=amount, currency="EUR"),
        meta={"occurred_at": PLACED_AT + timedelta(hours=2)})
    return event


def cancelled(order_id: str = "so-1") -> OrderCancelled:
    event: OrderCancelled = typed("orders.OrderCancelled", order_id=order_id)
    return event


def folded(*events: Any, late: bool = False, orders: Any = None, purchases: Any = None
           ) -> Fold:
    fold = Fold(orders or {}, purchases or {})
    for event in events:
        fold.add(event, late=late)
    return fold


def test_placed_amended_cancelled_all_land_in_the_placement_bucket() -> None:
    order = placed()
    fold = folded(order, order, amended(1500, "4"), cancelled(), cancelled())
    (key,) = fold.changes.sales
    assert key.bucket == PLACED_AT.replace(minute=0) and key.store == "store-7"
    totals = fold.changes.sales[key]
    assert (totals.orders, totals.revenue_minor, totals.units) == (0, 0, Decimal(0))
    assert fold.changes.orders["so-1"].cancelled
    # Every product's line is gone again with the cancellation.
    assert all(p.lines == 0 and p.units == 0 and p.net_minor == 0
               for p in fold.changes.products.values())


def test_an_amendment_replaces_the_orders_lines_in_its_products() -> None:
    order = placed()
    first, second = order.lines[0], order.lines[1]
    fold = folded(order, amended(1500, "4"))
    products = fold.changes.products
    milk = products[ProductKey(DAY, "north", "branch-n", first.sku, "EUR")]
    assert (milk.lines, milk.units) == (1, Decimal("4"))
    assert milk.net_minor == 4 * first.unit_price.amount_minor
    flour = products[ProductKey(DAY, "north", "branch-n", second.sku, "EUR")]
    assert (flour.lines, flour.units, flour.net_minor) == (0, Decimal(0), 0)
    (sales,) = fold.changes.sales.values()
    assert (sales.orders, sales.revenue_minor, sales.units) == (1, 1500, Decimal("4"))


def test_a_late_amendment_corrects_its_orders_bucket_and_is_counted_late_there() -> None:
    order = placed()
    stored = folded(order).changes.orders  # placed in an earlier batch
    fold = folded(amended(1500, "4"), late=True, orders=stored)
    (key,) = fold.changes.sales
    assert key.bucket == PLACED_AT.replace(minute=0)
    assert fold.changes.sales[key].revenue_minor == 500 and fold.changes.sales[key].orders == 0
    assert fold.changes.sales[key].late_events == 1
    count = fold.changes.counts[CountKey(PLACED_AT.replace(hour=11, minute=0), "north",
                                         "OrderAmended")]
    assert (count.records, count.late) == (1, 1)


def test_a_purchase_order_is_funnel_facts_not_a_sale() -> None:
    po = placed(OrderKind.PURCHASE_ORDER, "po-1")
    confirmed: OrderConfirmed = typed("orders.OrderConfirmed", order_id="po-1",
                                      meta={"source_box": "dairy"})
    fold = folded(po, amended(700, "10", 1, "po-1"), amended(600, "9", 1, "po-1"),
                  confirmed, cancelled("so-unknown"))
    assert not fold.changes.sales and not fold.changes.orders
    purchase = fold.changes.purchases["po-1"]
    assert purchase.placed_at == PLACED_AT and purchase.buyer == po.buyer_box
    # The second amendment with the same revision is a copy: the first one's numbers stay.
    assert (purchase.revision, purchase.ordered_units, purchase.ordered_total_minor) == (
        1, Decimal("10"), 700)
    assert purchase.confirmed_at == confirmed.meta.occurred_at
    assert purchase.supplier == "dairy"
    # A supplier's confirmation in a later batch, without the placement: only its columns.
    later = folded(confirmed).changes.purchases["po-1"]
    assert later.placed_at is None and later.revision is None and later.confirmed_at


def test_shipments_stock_receivables() -> None:
    dispatched: ShipmentDispatched = typed("logistics.ShipmentDispatched",
                                           shipment_id="sh-1", order_id="po-1")
    received: GoodsReceived = typed("logistics.GoodsReceived", shipment_id="sh-1",
                                    order_id="po-1")
    older: StockLevelChanged = typed("logistics.StockLevelChanged", on_hand=Decimal(5),
                                     meta={"occurred_at": PLACED_AT})
    newer = older.model_copy(update={"on_hand": Decimal(9), "meta": older.meta.model_copy(
        update={"occurred_at": PLACED_AT + timedelta(minutes=5), "event_id": "e-2"})})
    invoice: InvoiceIssued = typed("finance.InvoiceIssued")
    payment: PaymentRecorded = typed("finance.PaymentRecorded")
    fold = folded(dispatched, received, newer, older, invoice, payment, payment)
    shipment = fold.changes.shipments["sh-1"]
    assert shipment.dispatched_units == sum(line.quantity for line in dispatched.lines)
    assert shipment.received_units == sum(line.quantity for line in received.lines)
    (level,) = fold.changes.stock.values()
    assert level.on_hand == Decimal(9)  # the newer level, though it came first
    assert StockKey(older.meta.source_box, older.warehouse, older.sku) in fold.changes.stock
    assert fold.changes.invoices[invoice.invoice_id].total_minor == invoice.total.amount_minor
    assert list(fold.changes.payments) == [payment.payment_id]
    assert fold.changes.aggregated == 7


def test_an_older_or_repeated_amendment_changes_nothing() -> None:
    order = placed()
    fold = folded(order, amended(1500, "4", revision=2), amended(1200, "3", revision=1),
                  amended(1500, "4", revision=2))
    (sales,) = fold.changes.sales.values()
    assert (sales.orders, sales.revenue_minor, sales.units) == (1, 1500, Decimal("4"))
    assert fold.changes.orders["so-1"].revision == 2


def test_a_store_orders_confirmation_is_no_purchase_and_a_stray_cancellation_is_one() -> None:
    confirmed: OrderConfirmed = typed("orders.OrderConfirmed", order_id="so-1")
    fold = folded(placed(), confirmed)
    assert fold.changes.purchases == {}
    # Later, in its own partition: the store order's state is known, its confirmation too.
    again = folded(confirmed, orders=fold.changes.orders)
    assert again.changes.purchases == {}
    # A cancellation of an order this partition never saw placed: the supplier's, of a
    # purchase order placed in another region.
    stray = folded(cancelled("po-7"))
    assert stray.changes.purchases["po-7"].cancelled_at is not None
    assert not stray.changes.sales
