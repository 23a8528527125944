"""What a user of the reference box does: place, amend, cancel and confirm orders, comment,
dispatch and receive goods, send price lists and branch reports. Each action is one
transaction of the box's database that changes its tables and writes the event into the
outbox, so the change and the event commit together; the relay publishes it.

Every event of one order (placed, amended, comments, shipment, receipt) carries the order id
as its aggregate key and correlation id, so it keeps its order from box to box.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from bus.events import EventBase
from bus.events.models import (
    BranchReportSent,
    CommentAdded,
    EventMeta,
    GoodsReceived,
    ItemQuantity,
    Line,
    Money,
    OrderAmended,
    OrderCancelled,
    OrderConfirmed,
    OrderKind,
    OrderPlaced,
    Party,
    PriceEntry,
    PriceListSent,
    ShipmentDispatched,
)
from bus.log import get_logger
from connectors.box import Outbox

log = get_logger(__name__)
Change = Callable[[asyncpg.Connection], Awaitable[Any]]
WAREHOUSE = "main"


class BusinessError(Exception):
    """The action is refused by the box's rules (unknown order, not enough stock, ...)."""


@dataclass(frozen=True)
class LineSpec:
    sku: str
    quantity: Decimal
    unit_price_minor: int
    description: str = ""
    unit: str = "pcs"

    @classmethod
    def parse(cls, text: str) -> LineSpec:
        """``SKU:QUANTITY:UNIT_PRICE_MINOR`` (command-line form)."""
        try:
            sku, quantity, price = text.split(":")
            return cls(sku, Decimal(quantity), int(price))
        except (ValueError, ArithmeticError):
            raise BusinessError(f"{text!r} is not a line: write SKU:QUANTITY:UNIT_PRICE_MINOR, "
                                "e.g. milk-1l:24:89") from None


def _now() -> datetime:
    return datetime.now(UTC)


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class RefBox:
    """One box's actions. ``currency``: what its prices are in."""

    def __init__(self, box_id: str, region: str, dsn: str, outbox: Outbox,
                 currency: str = "EUR") -> None:
        self.box_id = box_id
        self.region = region
        self.dsn = dsn
        self.outbox = outbox
        self.currency = currency

    def _meta(self, key: str, target: str | None = None, causation: str | None = None,
              correlation: str | None = None) -> EventMeta:
        return EventMeta(event_id=str(uuid.uuid4()), source_box=self.box_id,
                         region=self.region, aggregate_key=key, occurred_at=_now(),
                         target_box=target, correlation_id=correlation or key,
                         causation_id=causation)

    async def _commit(self, change: Change | None, event: EventBase) -> None:
        """Run ``change(conn)`` and publish ``event`` in one transaction."""
        encoded = await self.outbox.encode([event])  # before the transaction: no lock held
        conn = await asyncpg.connect(self.dsn)
        try:
            async with conn.transaction():
                if change is not None:
                    await change(conn)
                await self.outbox.publish_many(conn, encoded)
        finally:
            await conn.close()
        log.info("box action", box=self.box_id, type=event.TYPE,
                 event_id=event.meta.event_id,
                 correlation_id=event.meta.correlation_id)

    def _lines(self, specs: Sequence[LineSpec]) -> tuple[Line, ...]:
        if not specs:
            raise BusinessError("an order needs at least one line")
        return tuple(Line(line_no=n, sku=s.sku, description=s.description or s.sku,
                          quantity=s.quantity, unit=s.unit,
                          unit_price=Money(amount_minor=s.unit_price_minor,
                                           currency=self.currency))
                     for n, s in enumerate(specs, 1))

    def _total(self, lines: Sequence[Line]) -> Money:
        amount = sum(int(line.quantity * line.unit_price.amount_minor) for line in lines)
        return Money(amount_minor=amount, currency=self.currency)

    async def place_order(self, supplier: str, specs: Sequence[LineSpec],
                          notes: str | None = None) -> str:
        """A purchase order to ``supplier``: it arrives there as a sales order."""
        return await self._place("po", "purchase", supplier, specs, notes, target=supplier,
                                 kind=OrderKind.PURCHASE_ORDER, supplier_box=supplier)

    async def _place(self, prefix: str, role: str, counterparty: str,
                     specs: Sequence[LineSpec], notes: str | None, *,
                     target: str | None = None, **fields: Any) -> str:
        """A new order of this box (``role`` purchase or sales) and its OrderPlaced."""
        order_id = _id(f"{self.box_id}-{prefix}")
        lines = self._lines(specs)
        event = OrderPlaced(meta=self._meta(order_id, target=target), order_id=order_id,
                            buyer_box=self.box_id, lines=lines, total=self._total(lines),
                            notes=notes, **fields)

        async def change(conn: asyncpg.Connection) -> None:
            await save_order(conn, order_id, role, counterparty, "placed", 0, event.total,
                             lines, notes)

        await self._commit(change, event)
        return order_id

    async def amend_order(self, order_id: str, specs: Sequence[LineSpec],
                          reason: str | None = None) -> int:
        order = await self._order(order_id, role="purchase")
        _may(order_id, order["status"], OPEN, "amended")
        lines = self._lines(specs)
        revision = int(order["revision"]) + 1
        event = OrderAmended(meta=self._meta(order_id, target=order["counterparty"]),
                             order_id=order_id, revision=revision, lines=lines,
                             total=self._total(lines), reason=reason)

        async def change(conn: asyncpg.Connection) -> None:
            await _lock(conn, order_id, OPEN, "amended")
            await save_order(conn, order_id, "purchase", order["counterparty"], "amended",
                             revision, event.total, lines, None)

        await self._commit(change, event)
        return revision

    async def cancel_order(self, order_id: str, reason: str) -> None:
        order = await self._order(order_id)
        _may(order_id, order["status"], OPEN, "cancelled")
        party = Party.BUYER if order["role"] == "purchase" else Party.SUPPLIER
        event = OrderCancelled(meta=self._meta(order_id, target=order["counterparty"]),
                               order_id=order_id, cancelled_by=party, reason=reason)

        async def change(conn: asyncpg.Connection) -> None:
            await _lock(conn, order_id, OPEN, "cancelled")
            await set_status(conn, order_id, "cancelled")

        await self._commit(change, event)

    async def confirm_order(self, order_id: str, payment_terms: str = "net 30",
                            due_days: int = 30, delivery_days: int = 2) -> None:
        """The supplier accepts a sales order as it stands."""
        order = await self._order(order_id, role="sales")
        _may(order_id, order["status"], ("placed", "amended"), "confirmed")
        lines = await self._order_lines(order_id)
        now = _now()
        event = OrderConfirmed(
            meta=self._meta(order_id, target=order["counterparty"]), order_id=order_id,
            lines=lines, total=self._total(lines), payment_terms=payment_terms,
            payment_due_days=due_days, promised_dispatch_at=now + timedelta(days=1),
            promised_delivery_at=now + timedelta(days=delivery_days))

        async def change(conn: asyncpg.Connection) -> None:
            await _lock(conn, order_id, ("placed", "amended"), "confirmed")
            await set_status(conn, order_id, "confirmed")

        await self._commit(change, event)

    async def comment(self, order_id: str, text: str, author: str = "user") -> str:
        """A comment on an order; it appears in the other party's box too."""
        order = await self._order(order_id)
        comment_id = _id(f"{self.box_id}-c")
        event = CommentAdded(meta=self._meta(order_id, target=order["counterparty"]),
                             subject_id=order_id, comment_id=comment_id, author=author,
                             text=text)

        async def change(conn: asyncpg.Connection) -> None:
            await save_comment(conn, event, self.box_id)

        await self._commit(change, event)
        return comment_id

    async def stock_in(self, sku: str, quantity: Decimal, warehouse: str = WAREHOUSE) -> None:
        """Goods counted into the warehouse (no event: stock is the box's own business)."""
        conn = await asyncpg.connect(self.dsn)
        try:
            await add_stock(conn, warehouse, sku, quantity)
        finally:
            await conn.close()

    async def dispatch(self, order_id: str, carrier: str | None = None) -> str:
        """Ship a sales order: stock is written off this box's warehouse, and the buyer's box
        shows the goods in transit."""
        order = await self._order(order_id, role="sales")
        _may(order_id, order["status"], OPEN, "dispatched")
        lines = await self._order_lines(order_id)
        shipment_id = _id(f"{self.box_id}-sh")
        items = tuple(ItemQuantity(line_no=line.line_no, sku=line.sku, quantity=line.quantity,
                                   unit=line.unit) for line in lines)
        event = ShipmentDispatched(meta=self._meta(order_id, target=order["counterparty"]),
                                   shipment_id=shipment_id, order_id=order_id,
                                   from_warehouse=WAREHOUSE, lines=items,
                                   dispatched_at=_now(), carrier=carrier)

        async def change(conn: asyncpg.Connection) -> None:
            await _lock(conn, order_id, OPEN, "dispatched", revision=order["revision"])
            for item in items:
                left = await conn.fetchval(
                    "UPDATE stock SET quantity = quantity - $3 WHERE warehouse = $1 AND sku = $2"
                    " AND quantity >= $3 RETURNING quantity", WAREHOUSE, item.sku,
                    item.quantity)
                if left is None:
                    have = await conn.fetchval("SELECT quantity FROM stock WHERE warehouse = $1"
                                               " AND sku = $2", WAREHOUSE, item.sku) or 0
                    raise BusinessError(f"not enough {item.sku} in warehouse {WAREHOUSE}: "
                                        f"{have} in stock, {item.quantity} to dispatch")
            await save_shipment(conn, event, "outgoing", order["counterparty"])
            await set_status(conn, order_id, "in_transit")

        await self._commit(change, event)
        return shipment_id

    async def receive(self, shipment_id: str) -> None:
        """Goods in transit arrived: into the warehouse, and the supplier learns it."""
        conn = await asyncpg.connect(self.dsn)
        try:
            shipment = await conn.fetchrow(
                "SELECT * FROM shipments WHERE shipment_id = $1 AND direction = 'incoming'",
                shipment_id)
            rows = await conn.fetch("SELECT * FROM shipment_lines WHERE shipment_id = $1 "
                                    "ORDER BY line_no", shipment_id)
        finally:
            await conn.close()
        if shipment is None:
            raise BusinessError(f"no incoming shipment {shipment_id} in box {self.box_id}")
        if shipment["status"] == "received":
            raise BusinessError(f"shipment {shipment_id} was received already")
        items = tuple(ItemQuantity(line_no=r["line_no"], sku=r["sku"], quantity=r["quantity"],
                                   unit=r["unit"]) for r in rows)
        order_id = shipment["order_id"]
        event = GoodsReceived(meta=self._meta(order_id, target=shipment["counterparty"]),
                              shipment_id=shipment_id, order_id=order_id, warehouse=WAREHOUSE,
                              lines=items, received_at=_now())

        async def change(conn: asyncpg.Connection) -> None:
            received = await conn.fetchval(
                "UPDATE shipments SET status = 'received', received_at = $2 WHERE shipment_id "
                "= $1 AND status = 'in_transit' RETURNING 1", shipment_id, event.received_at)
            if not received:  # received by someone else a moment ago
                raise BusinessError(f"shipment {shipment_id} was received already")
            for item in items:
                await add_stock(conn, WAREHOUSE, item.sku, item.quantity)
            await set_status(conn, order_id, "received")

        await self._commit(change, event)

    async def send_price_list(self, prices: Sequence[tuple[str, int]]) -> str:
        """A price list (sku, unit price in minor units) for the boxes that subscribe to it
        (a head office's branches)."""
        list_id = _id(f"{self.box_id}-pl")
        event = PriceListSent(
            meta=self._meta(list_id), price_list_id=list_id, valid_from=_now(),
            entries=tuple(PriceEntry(sku=sku, unit="pcs",
                                     price=Money(amount_minor=price, currency=self.currency))
                          for sku, price in prices))
        await self._commit(None, event)
        return list_id

    async def take_store_order(self, store_id: str, specs: Sequence[LineSpec],
                               notes: str | None = None) -> str:
        """An order of one of the region's stores (not boxes themselves: their orders enter
        through their region's box): a sales order here, published for whoever subscribes
        (central analytics)."""
        return await self._place("so", "sales", store_id, specs, notes,
                                 kind=OrderKind.STORE_ORDER, store_id=store_id)

    async def send_report(self, period_start: datetime, period_end: datetime) -> str:
        """A branch's report to its head office, computed from its own tables: the sales
        orders taken in the period (cancelled ones left out) and their revenue, and the value
        of its stock now at the prices of the price lists it holds."""
        conn = await asyncpg.connect(self.dsn)
        try:
            sales = await conn.fetchrow(
                "SELECT count(*) AS n, coalesce(sum(total_minor), 0) AS revenue FROM orders "
                "WHERE role = 'sales' AND status <> 'cancelled' AND currency = $3 "
                "AND created_at >= $1 AND created_at < $2",
                period_start, period_end, self.currency)
            stock_value = await conn.fetchval(
                "SELECT coalesce(sum(s.quantity * p.price_minor), 0)::bigint FROM stock s "
                "JOIN prices p USING (sku) WHERE p.currency = $1", self.currency)
        finally:
            await conn.close()
        report_id = _id(f"{self.box_id}-rp")
        event = BranchReportSent(
            meta=self._meta(report_id), report_id=report_id, branch_box=self.box_id,
            period_start=period_start, period_end=period_end, orders_count=sales["n"],
            revenue=Money(amount_minor=int(sales["revenue"]), currency=self.currency),
            stock_value=Money(amount_minor=int(stock_value), currency=self.currency))
        await self._commit(None, event)
        return report_id

    async def send_daily_report(self, day: date | None = None) -> str:
        """The report of one UTC day (today by default), midnight to midnight."""
        start = datetime.combine(day or _now().date(), time.min, tzinfo=UTC)
        return await self.send_report(start, start + timedelta(days=1))

    async def _order(self, order_id: str, role: str | None = None) -> asyncpg.Record:
        conn = await asyncpg.connect(self.dsn)
        try:
            order = await conn.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id)
        finally:
            await conn.close()
        if order is None or (role is not None and order["role"] != role):
            kind = {"purchase": "purchase order", "sales": "sales order"}.get(role or "", "order")
            raise BusinessError(f"no {kind} {order_id} in box {self.box_id}")
        return order

    async def _order_lines(self, order_id: str) -> tuple[Line, ...]:
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch("SELECT l.*, o.currency FROM order_lines l JOIN orders o "
                                    "USING (order_id) WHERE order_id = $1 ORDER BY line_no",
                                    order_id)
        finally:
            await conn.close()
        return tuple(Line(line_no=r["line_no"], sku=r["sku"], description=r["description"],
                          quantity=r["quantity"], unit=r["unit"],
                          unit_price=Money(amount_minor=r["unit_price_minor"],
                                           currency=r["currency"])) for r in rows)


OPEN = ("placed", "confirmed", "amended")  # not dispatched, not cancelled


def _may(order_id: str, status: str, allowed: tuple[str, ...], action: str) -> None:
    if status not in allowed:
        why = {"cancelled": "was cancelled", "in_transit": "was dispatched already",
               "received": "was dispatched already and received"}.get(status, f"is {status}")
        raise BusinessError(f"order {order_id} {why}: it cannot be {action}")


async def _lock(conn: asyncpg.Connection, order_id: str, allowed: tuple[str, ...],
                action: str, revision: int | None = None) -> None:
    """Check the order's status again inside the action's transaction, with the row locked:
    an event applied by the inbox meanwhile (a cancellation, an amendment) wins over a stale
    read."""
    row = await conn.fetchrow("SELECT status, revision FROM orders WHERE order_id = $1 "
                              "FOR UPDATE", order_id)
    _may(order_id, row["status"], allowed, action)
    if revision is not None and row["revision"] != revision:
        raise BusinessError(f"order {order_id} was amended a moment ago (revision "
                            f"{row['revision']}): look at it again before it is {action}")


# Writes shared by the actions (this box's own changes) and the inbox handlers (changes that
# arrive from other boxes).

async def save_order(conn: asyncpg.Connection, order_id: str, role: str, counterparty: str,
                     status: str, revision: int, total: Money, lines: Sequence[Line],
                     notes: str | None) -> None:
    await conn.execute(
        "INSERT INTO orders (order_id, role, counterparty, status, revision, total_minor, "
        "currency, notes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (order_id) DO "
        "UPDATE SET status = $4, revision = $5, total_minor = $6, currency = $7, "
        "updated_at = now()", order_id, role, counterparty, status, revision,
        total.amount_minor, total.currency, notes)
    await conn.execute("DELETE FROM order_lines WHERE order_id = $1", order_id)
    await conn.executemany(
        "INSERT INTO order_lines (order_id, line_no, sku, description, quantity, unit, "
        "unit_price_minor) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [(order_id, line.line_no, line.sku, line.description, line.quantity, line.unit,
          line.unit_price.amount_minor) for line in lines])


async def set_status(conn: asyncpg.Connection, order_id: str, status: str) -> None:
    await conn.execute("UPDATE orders SET status = $2, updated_at = now() WHERE order_id = $1",
                       order_id, status)


async def save_comment(conn: asyncpg.Connection, event: CommentAdded, origin: str) -> None:
    await conn.execute(
        "INSERT INTO comments (comment_id, order_id, author, text, origin_box, written_at) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (comment_id) DO NOTHING",
        event.comment_id, event.subject_id, event.author, event.text, origin,
        event.meta.occurred_at)


async def save_shipment(conn: asyncpg.Connection, event: ShipmentDispatched, direction: str,
                        counterparty: str) -> None:
    await conn.execute(
        "INSERT INTO shipments (shipment_id, order_id, direction, counterparty, status, "
        "dispatched_at) VALUES ($1, $2, $3, $4, 'in_transit', $5) "
        "ON CONFLICT (shipment_id) DO NOTHING", event.shipment_id, event.order_id, direction,
        counterparty, event.dispatched_at)
    await conn.executemany(
        "INSERT INTO shipment_lines (shipment_id, line_no, sku, quantity, unit) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        [(event.shipment_id, i.line_no, i.sku, i.quantity, i.unit) for i in event.lines])


async def add_stock(conn: asyncpg.Connection, warehouse: str, sku: str,
                    quantity: Decimal) -> None:
    await conn.execute(
        "INSERT INTO stock (warehouse, sku, quantity) VALUES ($1, $2, $3) ON CONFLICT "
        "(warehouse, sku) DO UPDATE SET quantity = stock.quantity + $3", warehouse, sku,
        quantity)
