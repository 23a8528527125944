"""What a user of the reference box does: place, amend, cancel and confirm orders, comment,
dispatch and receive goods, send price lists and branch reports. Each action is one
transaction of the box's database that changes its tables and writes the event into the
outbox, so the change and the event commit together; the relay publishes it.

Every event of one order (placed, amended, comments, shipment, receipt) carries the order id
as its aggregate key and correlation id, so it keeps its order from box to box.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from bus.events import EventBase
from bus.events.models import (
    BranchReportSent,
    CommentAdded,
    GoodsReceived,
    ItemQuantity,
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
    StockChangeReason,
)
from bus.log import get_logger
from connectors.refbox.core import (
    OPEN,
    WAREHOUSE,
    BusinessError,
    LineSpec,
    _id,
    _lock,
    _may,
    _now,
    add_stock,
    save_comment,
    save_order,
    save_shipment,
    set_status,
)
from connectors.refbox.documents import DocumentActions
from connectors.refbox.trade import TradeActions, stock_levels

__all__ = ["OPEN", "BusinessError", "LineSpec", "RefBox"]
# An order waiting for item codes is not shipped until a person mapped them.
SHIPPABLE = ("placed", "confirmed", "amended")

log = get_logger(__name__)


class RefBox(TradeActions, DocumentActions):
    """One box's actions."""

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
        lines = await self._order_lines(order_id, theirs=True)
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

    async def stock_in(self, sku: str, quantity: Decimal, warehouse: str = WAREHOUSE,
                       unit: str | None = None) -> None:
        """Goods counted into the warehouse (``unit``: what the article is counted in). The
        stock level goes to the partners the box's rules share stock with (nobody by
        default: stock is the box's own business)."""

        async def change(conn: asyncpg.Connection) -> None:
            await add_stock(conn, warehouse, sku, quantity)
            if unit is not None:
                await conn.execute("UPDATE stock SET unit = $3 WHERE warehouse = $1 AND "
                                   "sku = $2", warehouse, sku, unit)

        async def levels(conn: asyncpg.Connection) -> list[EventBase]:
            return await stock_levels(conn, self, [sku], StockChangeReason.ADJUSTMENT)

        await self._commit(change, follow=levels)

    async def share_stock(self) -> int:
        """Send the levels of every article in stock now to the partners the box's rules
        share stock with (after the rules changed, or to bring a new buyer up to date); the
        number of events written."""

        async def levels(conn: asyncpg.Connection) -> list[EventBase]:
            skus = [r["sku"] for r in await conn.fetch(
                "SELECT sku FROM stock WHERE warehouse = $1", WAREHOUSE)]
            return await stock_levels(conn, self, skus, StockChangeReason.COUNT)

        return await self._commit(None, follow=levels)

    async def dispatch(self, order_id: str, carrier: str | None = None) -> str:
        """Ship a sales order: stock is written off this box's warehouse, and the buyer's box
        shows the goods in transit."""
        order = await self._order(order_id, role="sales")
        _may(order_id, order["status"], SHIPPABLE, "dispatched")
        own = await self._order_lines(order_id)
        shipment_id = _id(f"{self.box_id}-sh")
        # The buyer reads the shipment in its own codes and units; the stock goes out in ours.
        items = tuple(ItemQuantity(line_no=line.line_no, sku=line.sku, quantity=line.quantity,
                                   unit=line.unit)
                      for line in await self._order_lines(order_id, theirs=True))
        event = ShipmentDispatched(meta=self._meta(order_id, target=order["counterparty"]),
                                   shipment_id=shipment_id, order_id=order_id,
                                   from_warehouse=WAREHOUSE, lines=items,
                                   dispatched_at=_now(), carrier=carrier)

        async def change(conn: asyncpg.Connection) -> None:
            await _lock(conn, order_id, SHIPPABLE, "dispatched", revision=order["revision"])
            for item in own:
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

        async def levels(conn: asyncpg.Connection) -> list[EventBase]:
            return await stock_levels(conn, self, [i.sku for i in own],
                                      StockChangeReason.DISPATCH)

        await self._commit(change, event, follow=levels)
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

        async def levels(conn: asyncpg.Connection) -> list[EventBase]:
            return await stock_levels(conn, self, [i.sku for i in items],
                                      StockChangeReason.RECEIPT)

        await self._commit(change, event, follow=levels)

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
