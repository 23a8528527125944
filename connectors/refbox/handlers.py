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
    ContactUpserted,
    DocumentAttached,
    GoodsReceived,
    InvoiceIssued,
    OrderAmended,
    OrderCancelled,
    OrderConfirmed,
    OrderPlaced,
    Party,
    PaymentRecorded,
    PriceListSent,
    ShipmentDispatched,
    StockLevelChanged,
)
from bus.log import get_logger
from bus.settings import Settings
from connectors.box import Applied, Handlers, Rejected
from connectors.box.rules import current_rules
from connectors.refbox.core import (
    OPEN,
    save_comment,
    save_order,
    save_shipment,
    set_status,
)
from connectors.refbox.documents import received_document
from connectors.refbox.trade import (
    close_tasks,
    mapping_task,
    own_lines,
    save_contact,
    save_invoice,
    save_payment,
)

log = get_logger(__name__)
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
    if event.supplier_box != applied.box_id or _addressed_elsewhere(applied):
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
    if event.buyer_box != applied.envelope.source_box:
        raise Rejected(f"order {event.order_id} names buyer {event.buyer_box!r} but comes from "
                       f"box {applied.envelope.source_box!r}: a box orders only for itself")
    # The box's own rules: the process it lands in, the buyer's codes in this box's.
    rules = (await current_rules(applied.conn, applied.box_id)).rules
    pipeline, stage = rules.process_for(event.buyer_box, event.kind)
    own, unmapped = own_lines(rules, event.buyer_box, event.lines)
    await save_order(applied.conn, event.order_id, "sales", event.buyer_box,
                     "needs_mapping" if unmapped else "placed", 0, event.total, own,
                     event.notes, pipeline=pipeline, stage=stage, theirs=event.lines)
    if unmapped:
        await _task_to_map(applied, event.order_id, event.buyer_box, unmapped)


async def _task_to_map(applied: Applied, order_id: str, partner: str,
                       unmapped: list[str]) -> None:
    """The order waits for a person: never dropped, never guessed (one open task per
    order, saying what is missing now)."""
    await close_tasks(applied.conn, order_id)
    await applied.conn.execute(
        "INSERT INTO tasks (order_id, kind, detail) VALUES ($1, 'map-items', $2)", order_id,
        mapping_task(partner, unmapped))
    log.warning("order waits for item codes to be mapped", box=applied.box_id,
                order_id=order_id, partner=partner, codes=sorted(set(unmapped)),
                event_id=applied.envelope.id, correlation_id=applied.envelope.correlation_id)


@handlers.on(OrderAmended)
async def order_amended(event: OrderAmended, applied: Applied) -> None:
    if _addressed_elsewhere(applied):
        return
    status = await _order(applied, event.order_id, "sales", OPEN)
    if status is None:
        # It crossed the dispatch or a cancellation: the goods are on their way as they were.
        raise Rejected(f"order {event.order_id} cannot be amended any more (revision "
                       f"{event.revision} came after it was dispatched or cancelled)")
    buyer = applied.envelope.source_box
    rules = (await current_rules(applied.conn, applied.box_id)).rules
    own, unmapped = own_lines(rules, buyer, event.lines)
    await save_order(applied.conn, event.order_id, "sales", buyer,
                     "needs_mapping" if unmapped else "amended", event.revision, event.total,
                     own, None, theirs=event.lines)
    if unmapped:
        await _task_to_map(applied, event.order_id, buyer, unmapped)
    else:
        await close_tasks(applied.conn, event.order_id)


@handlers.on(OrderCancelled)
async def order_cancelled(event: OrderCancelled, applied: Applied) -> None:
    if _addressed_elsewhere(applied):
        return
    role = "sales" if event.cancelled_by == Party.BUYER else "purchase"
    if await _order(applied, event.order_id, role, OPEN) is None:
        raise Rejected(f"order {event.order_id} cannot be cancelled: it was dispatched or "
                       "cancelled already")
    await set_status(applied.conn, event.order_id, "cancelled")
    await close_tasks(applied.conn, event.order_id)


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


@handlers.on(InvoiceIssued)
async def invoice_becomes_payable(event: InvoiceIssued, applied: Applied) -> None:
    """A supplier's invoice: for an order of this box (its other party must be the sender),
    or for a service booked outside the bus (a booking by phone, a subscription)."""
    if _addressed_elsewhere(applied):
        return
    if await applied.conn.fetchval("SELECT 1 FROM orders WHERE order_id = $1", event.order_id):
        await _order(applied, event.order_id, "purchase")
    else:
        # Not for an order of this box: kept, and a person checks it before it is paid.
        await applied.conn.execute(
            "INSERT INTO tasks (order_id, kind, detail) VALUES ($1, 'check-invoice', $2)",
            event.order_id, f"check invoice {event.number} of {applied.envelope.source_box} "
            f"({event.total.amount_minor / 100:,.2f} {event.total.currency}): it is for "
            f"{event.order_id}, which is no order of this box (a service booked outside the "
            "bus?)")
    await save_invoice(applied.conn, event, "payable", applied.envelope.source_box)


@handlers.on(PaymentRecorded)
async def payment_settles_receivable(event: PaymentRecorded, applied: Applied) -> None:
    if _addressed_elsewhere(applied):
        return
    sender = applied.envelope.source_box
    invoice = await applied.conn.fetchrow(
        "SELECT counterparty, currency FROM invoices WHERE invoice_id = $1 AND "
        "role = 'receivable'", event.invoice_id)
    if invoice is None:
        raise Rejected(f"invoice {event.invoice_id} was not issued by this box")
    if invoice["counterparty"] != sender:
        raise Rejected(f"invoice {event.invoice_id} was issued to {invoice['counterparty']!r}, "
                       f"not to {sender!r}")
    if event.amount.currency != invoice["currency"]:
        raise Rejected(f"the payment is in {event.amount.currency} but invoice "
                       f"{event.invoice_id} is in {invoice['currency']}")
    if event.amount.amount_minor <= 0:
        raise Rejected("a payment must be a positive amount")
    await save_payment(applied.conn, event, "incoming", sender)


@handlers.on(StockLevelChanged)
async def supplier_stock(event: StockLevelChanged, applied: Applied) -> None:
    """What a supplier shares of its stock: what this box can order from it."""
    if _addressed_elsewhere(applied) or applied.envelope.target_box is None:
        return  # a subscriber's copy (analytics): not this box's business
    await applied.conn.execute(
        "INSERT INTO partner_stock (supplier, warehouse, sku, unit, on_hand, reserved, "
        "in_transit, changed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT "
        "(supplier, warehouse, sku) DO UPDATE SET unit = $4, on_hand = $5, reserved = $6, "
        "in_transit = $7, changed_at = $8 WHERE partner_stock.changed_at <= $8",
        applied.envelope.source_box, event.warehouse, event.sku, event.unit, event.on_hand,
        event.reserved, event.in_transit, event.meta.occurred_at)


@handlers.on(ContactUpserted)
async def partner_contact(event: ContactUpserted, applied: Applied) -> None:
    if _addressed_elsewhere(applied) or applied.envelope.target_box is None:
        return
    await save_contact(applied.conn, event, applied.envelope.source_box,
                       event.meta.correlation_id)


async def document_of_an_order(event: DocumentAttached, applied: Applied,
                               settings: Settings | None = None) -> None:
    """Without ``settings`` (the module's handlers as they are, e.g. for `boxbus inbox run`)
    only inline documents are taken: a claim check needs the network's object store, which
    ``box_handlers(settings)`` binds."""
    if _addressed_elsewhere(applied):
        return
    row = await applied.conn.fetchrow("SELECT counterparty FROM orders WHERE order_id = $1",
                                      event.subject_id)
    if row is None or row["counterparty"] != applied.envelope.source_box:
        raise Rejected(f"document {event.document_id} belongs to order {event.subject_id}, "
                       f"which box {applied.envelope.source_box!r} has no part in here")
    await received_document(event, applied, settings)


@handlers.on(DocumentAttached)
async def inline_document(event: DocumentAttached, applied: Applied) -> None:
    await document_of_an_order(event, applied)


def box_handlers(settings: Settings | None) -> Handlers:
    """The reference box's handlers, with what needs the box's settings bound: documents are
    fetched only from the network's object store that ``settings`` name."""
    bound = Handlers(dict(handlers.by_type), dict(handlers.batch_by_type))

    async def document(event: DocumentAttached, applied: Applied) -> None:
        await document_of_an_order(event, applied, settings)

    bound.by_type[DocumentAttached.TYPE] = document
    return bound
