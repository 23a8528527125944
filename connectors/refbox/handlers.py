"""The reference box's inbox handlers: what an event from another box changes here. Each runs
in the inbox's transaction, so the change and the inbox's progress commit together, once.

Nothing applied here is published again: a comment from the other party is stored with its
origin and stays local, so comments cross once in each direction and never echo (the router's
loop guard is the second line of defence).
"""

from __future__ import annotations

from bus.events.models import (
    BranchReportSent,
    CommentAdded,
    DeliveryReceipt,
    GoodsReceived,
    OrderAmended,
    OrderCancelled,
    OrderConfirmed,
    OrderPlaced,
    Party,
    PriceListSent,
    ShipmentDispatched,
)
from connectors.box import Applied, Handlers, Rejected
from connectors.refbox.actions import (
    OPEN,
    save_comment,
    save_order,
    save_shipment,
    set_status,
)

handlers = Handlers()


def _addressed_elsewhere(applied: Applied) -> bool:
    """An order event seen through a subscription (billing, analytics) rather than sent to
    this box as a party of the order: nothing of this box's orders changes."""
    target = applied.envelope.target_box
    return target is not None and target != applied.box_id


async def _order(applied: Applied, order_id: str, role: str,
                 allowed: tuple[str, ...] | None = None) -> str | None:
    """The order's status, locked for this transaction, after checking that the sender is the
    other party of this box's ``role`` order. None when the change no longer applies (it
    crossed a later one: a confirmation after a cancellation)."""
    row = await applied.conn.fetchrow(
        "SELECT status, role, counterparty FROM orders WHERE order_id = $1 FOR UPDATE",
        order_id)
    if row is None:
        raise Rejected(f"order {order_id} is not known in this box (its OrderPlaced never "
                       "arrived here)")
    sender = applied.envelope.source_box
    if row["role"] != role or row["counterparty"] != sender:
        raise Rejected(f"box {sender!r} is not the other party of {row['role']} order "
                       f"{order_id} (that is {row['counterparty']!r})")
    if allowed is not None and row["status"] not in allowed:
        return None
    return str(row["status"])


@handlers.on(OrderPlaced)
async def purchase_order_becomes_sales_order(event: OrderPlaced, applied: Applied) -> None:
    if event.supplier_box != applied.box_id:
        # Seen through a subscription (central analytics), not addressed to this box.
        await applied.conn.execute(
            "INSERT INTO observed_orders (order_id, buyer_box, supplier_box, region, "
            "total_minor, currency) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            event.order_id, event.buyer_box, event.supplier_box or event.supplier_email or "",
            event.meta.region, event.total.amount_minor, event.total.currency)
        return
    if await applied.conn.fetchval("SELECT 1 FROM orders WHERE order_id = $1",
                                   event.order_id):
        return  # placed once: a second OrderPlaced changes nothing
    await save_order(applied.conn, event.order_id, "sales", event.buyer_box, "placed", 0,
                     event.total, event.lines, event.notes)


@handlers.on(OrderAmended)
async def order_amended(event: OrderAmended, applied: Applied) -> None:
    if _addressed_elsewhere(applied):
        return
    status = await _order(applied, event.order_id, "sales", OPEN)
    if status is None:
        # It crossed the dispatch or a cancellation: the goods are on their way as they were.
        raise Rejected(f"order {event.order_id} cannot be amended any more (revision "
                       f"{event.revision} came after it was dispatched or cancelled)")
    await save_order(applied.conn, event.order_id, "sales", applied.envelope.source_box,
                     "amended", event.revision, event.total, event.lines, None)


@handlers.on(OrderCancelled)
async def order_cancelled(event: OrderCancelled, applied: Applied) -> None:
    if _addressed_elsewhere(applied):
        return
    role = "sales" if event.cancelled_by == Party.BUYER else "purchase"
    if await _order(applied, event.order_id, role, OPEN) is None:
        raise Rejected(f"order {event.order_id} cannot be cancelled: it was dispatched or "
                       "cancelled already")
    await set_status(applied.conn, event.order_id, "cancelled")


@handlers.on(OrderConfirmed)
async def order_confirmed(event: OrderConfirmed, applied: Applied) -> None:
    if _addressed_elsewhere(applied):
        return
    if await _order(applied, event.order_id, "purchase", ("placed", "amended")) is not None:
        await set_status(applied.conn, event.order_id, "confirmed")


@handlers.on(CommentAdded)
async def comment_from_the_other_party(event: CommentAdded, applied: Applied) -> None:
    if _addressed_elsewhere(applied):
        return
    await save_comment(applied.conn, event, applied.envelope.source_box)


@handlers.on(DeliveryReceipt)
async def receipt_for_what_this_box_sent(event: DeliveryReceipt, applied: Applied) -> None:
    """What became of an event this box sent (a partner's box refused it, or its e-mail could
    not be delivered): kept beside the order, for the box's people to see."""
    await applied.conn.execute(
        "INSERT INTO receipts (event_id, from_box, event_type, status, reason, processed_at) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id, from_box) DO UPDATE SET "
        "status = excluded.status, reason = excluded.reason, "
        "processed_at = excluded.processed_at",
        event.receipt_for_event_id, applied.envelope.source_box, event.receipt_for_type,
        event.status.value, event.reason, event.processed_at)


@handlers.on(ShipmentDispatched)
async def goods_in_transit(event: ShipmentDispatched, applied: Applied) -> None:
    if _addressed_elsewhere(applied):
        return
    # Goods already on the road are recorded even if the order was cancelled meanwhile.
    await _order(applied, event.order_id, "purchase")
    await save_shipment(applied.conn, event, "incoming", applied.envelope.source_box)
    await set_status(applied.conn, event.order_id, "in_transit")


@handlers.on(GoodsReceived)
async def goods_delivered(event: GoodsReceived, applied: Applied) -> None:
    if _addressed_elsewhere(applied):
        return
    await _order(applied, event.order_id, "sales")
    await applied.conn.execute(
        "UPDATE shipments SET status = 'received', received_at = $2 WHERE shipment_id = $1",
        event.shipment_id, event.received_at)
    await set_status(applied.conn, event.order_id, "received")


@handlers.on(PriceListSent)
async def price_list(event: PriceListSent, applied: Applied) -> None:
    await applied.conn.execute(
        "INSERT INTO price_lists (price_list_id, from_box, valid_from, entries) VALUES "
        "($1, $2, $3, $4) ON CONFLICT DO NOTHING", event.price_list_id,
        applied.envelope.source_box, event.valid_from, len(event.entries))
    await applied.conn.executemany(
        "INSERT INTO prices (sku, unit, price_minor, currency, price_list_id) VALUES "
        "($1, $2, $3, $4, $5) ON CONFLICT (sku) DO UPDATE SET unit = $2, price_minor = $3, "
        "currency = $4, price_list_id = $5",
        [(e.sku, e.unit, e.price.amount_minor, e.price.currency, event.price_list_id)
         for e in event.entries])


@handlers.on(BranchReportSent)
async def branch_report(event: BranchReportSent, applied: Applied) -> None:
    await applied.conn.execute(
        "INSERT INTO branch_reports (report_id, branch_box, period_start, period_end, "
        "orders_count, revenue_minor, currency, stock_value_minor) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        event.report_id, event.branch_box, event.period_start, event.period_end,
        event.orders_count, event.revenue.amount_minor, event.revenue.currency,
        event.stock_value.amount_minor)
