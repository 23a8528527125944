"""The reference box's money and shared data: invoices and payments (each side keeps its
receivables or payables, and both sides show the same open balance per partner), the stock
levels a supplier shares with the buyers its rules list, the contact persons of an order, and
the item codes a person maps when a buyer's order arrives with codes the box does not know.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import asyncpg

from bus.events import EventBase
from bus.events.models import (
    ContactKind,
    ContactUpserted,
    InvoiceIssued,
    Line,
    Money,
    PaymentMethod,
    PaymentRecorded,
    StockChangeReason,
    StockLevelChanged,
)
from bus.log import get_logger
from connectors.box.rules import Rules, current_rules
from connectors.refbox.core import (
    WAREHOUSE,
    BoxCore,
    BusinessError,
    _id,
    _now,
    _rounded,
    line_total,
    save_lines,
)

log = get_logger(__name__)
THOUSANDTH = Decimal("0.001")


def own_lines(rules: Rules, partner: str, lines: Sequence[Line]
              ) -> tuple[list[Line], list[str]]:
    """The partner's lines in this box's item codes and units (by the box's rules), and the
    codes that have no mapping (the line is kept as it came, for a person to map)."""
    own, unmapped = [], []
    for line in lines:
        found = rules.own_item(partner, line.sku, line.unit)
        if found is None:
            unmapped.append(line.sku)
            own.append(line)
            continue
        sku, unit, factor = found
        price = (Decimal(line.unit_price.amount_minor) / factor).to_integral_value(
            ROUND_HALF_EVEN)
        own.append(line.model_copy(update={
            "sku": sku, "unit": unit, "quantity": (line.quantity * factor).quantize(THOUSANDTH),
            "unit_price": line.unit_price.model_copy(update={"amount_minor": int(price)})}))
    return own, unmapped


def mapping_task(partner: str, unmapped: Sequence[str]) -> str:
    codes = ", ".join(sorted(set(unmapped)))
    return (f"map the item code(s) {codes} of {partner} to this box's articles: add them under "
            f"inbound.items.{partner} in the box's rules, apply them (boxbus box rules apply), "
            "and the order goes on")


async def stock_levels(conn: asyncpg.Connection, box: BoxCore, skus: Sequence[str],
                       reason: StockChangeReason) -> list[EventBase]:
    """The stock of ``skus`` in the box's warehouse as it is now in this transaction: on hand,
    promised to open sales orders, and on its way in. Whom it reaches is the box's rules'
    choice (no one unless they list partners)."""
    levels: list[EventBase] = []
    for sku in sorted(set(skus)):
        row = await conn.fetchrow(
            """SELECT coalesce((SELECT quantity FROM stock WHERE warehouse = $1 AND sku = $2), 0)
                          AS on_hand,
                      coalesce((SELECT sum(l.quantity) FROM order_lines l JOIN orders o
                                USING (order_id) WHERE o.role = 'sales' AND l.sku = $2 AND
                                o.status IN ('placed', 'confirmed', 'amended')), 0) AS reserved,
                      coalesce((SELECT sum(quantity) FROM goods_in_transit WHERE sku = $2), 0)
                          AS in_transit,
                      coalesce((SELECT unit FROM stock WHERE warehouse = $1 AND sku = $2),
                               (SELECT unit FROM order_lines WHERE sku = $2 ORDER BY order_id
                                LIMIT 1)) AS unit""",
            WAREHOUSE, sku)
        levels.append(StockLevelChanged(
            meta=box._meta(f"stock/{WAREHOUSE}/{sku}"), warehouse=WAREHOUSE, sku=sku,
            unit=row["unit"] or "pcs", on_hand=Decimal(row["on_hand"]).quantize(THOUSANDTH),
            in_transit=Decimal(row["in_transit"]).quantize(THOUSANDTH),
            reserved=Decimal(row["reserved"]).quantize(THOUSANDTH), reason=reason))
    return levels


class TradeActions(BoxCore):
    """Invoices, payments, shared stock and contacts."""

    async def issue_invoice(self, order_id: str, due_days: int = 30,
                            tax_rate_bp: int = 0) -> str:
        """The supplier invoices a sales order as it stands: a receivable here, a payable in
        the buyer's box."""
        order = await self._order(order_id, role="sales")
        if order["status"] in ("cancelled", "needs_mapping"):
            raise BusinessError(f"order {order_id} is {order['status']}: it cannot be invoiced")
        # In the buyer's terms (its codes, units and prices): the invoice matches its order.
        lines = tuple(line.model_copy(update={"tax_rate_bp": tax_rate_bp})
                      for line in await self._order_lines(order_id, theirs=True))
        net = sum(line_total(line) for line in lines)
        tax = sum(_rounded(Decimal(line_total(line)) * tax_rate_bp / 10_000) for line in lines)
        return await self._invoice(order_id, order["counterparty"], lines, net, tax,
                                   due_days, "INV")

    async def credit_invoice(self, invoice_id: str, reason: str) -> str:
        """Cancel an invoice with a credit note for its whole amount: an invoice of negative
        total, so the open balance of both sides drops by it."""
        invoice = await self._invoice_row(invoice_id, "receivable")
        if invoice["total_minor"] <= 0:
            raise BusinessError(f"{invoice_id} is a credit note already")
        net, tax = invoice["net_minor"], invoice["tax_minor"]
        # One line: the invoice's net amount taken back (its tax with it).
        lines = (Line(line_no=1, sku="credit", description=f"Credit note for invoice "
                      f"{invoice['number']}: {reason}"[:200], quantity=Decimal(-1), unit="pcs",
                      unit_price=Money(amount_minor=net, currency=invoice["currency"]),
                      tax_rate_bp=_rounded(Decimal(tax) * 10_000 / net) if net else 0),)
        log.info("invoice credited", box=self.box_id, invoice_id=invoice_id, reason=reason)
        return await self._invoice(invoice["order_id"], invoice["counterparty"], lines,
                                   -net, -tax, 0, f"CN-{invoice['number']}")

    async def _invoice(self, order_id: str, buyer: str, lines: Sequence[Line], net: int,
                       tax: int, due_days: int, number: str) -> str:
        invoice_id = _id(f"{self.box_id}-inv")
        if number == "INV":
            number = f"INV-{uuid.uuid4().hex[:8].upper()}"
        now = _now()

        currency = lines[0].unit_price.currency if lines else self.currency

        def money(minor: int) -> Money:
            return Money(amount_minor=minor, currency=currency)

        event = InvoiceIssued(meta=self._meta(order_id, target=buyer), invoice_id=invoice_id,
                              order_id=order_id, number=number, issued_at=now,
                              due_at=now + timedelta(days=due_days), lines=tuple(lines),
                              net=money(net), tax=money(tax), total=money(net + tax))

        async def change(conn: asyncpg.Connection) -> None:
            # One invoicing of an order at a time: the checks below hold until the commit.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                               f"invoice:{order_id}")
            if number.startswith("CN-") and await conn.fetchval(
                    "SELECT 1 FROM invoices WHERE role = 'receivable' AND number = $1", number):
                raise BusinessError(f"invoice {number[3:]} was credited already")
            if not number.startswith("CN-") and await conn.fetchval(
                    "SELECT sum(total_minor) > 0 FROM invoices WHERE role = 'receivable' AND "
                    "order_id = $1", order_id):
                raise BusinessError(f"order {order_id} is invoiced already: credit that "
                                    "invoice first to invoice it again")
            await save_invoice(conn, event, "receivable", buyer)

        try:
            await self._commit(change, event)
        except asyncpg.UniqueViolationError:
            raise BusinessError(f"invoice {number} exists already (issued a moment ago)"
                                ) from None
        return invoice_id

    async def pay(self, invoice_id: str, amount_minor: int,
                  method: PaymentMethod = PaymentMethod.BANK_TRANSFER,
                  reference: str | None = None) -> str:
        """The buyer pays (part of) an invoice it holds: the supplier's receivable is
        settled by it."""
        invoice = await self._invoice_row(invoice_id, "payable")
        if amount_minor <= 0:
            raise BusinessError("a payment is a positive amount")
        if invoice["total_minor"] <= 0:
            raise BusinessError(f"{invoice['number']} is a credit note: there is nothing to pay")
        number, total, currency = invoice["number"], invoice["total_minor"], invoice["currency"]
        payment_id = _id(f"{self.box_id}-pay")
        event = PaymentRecorded(
            meta=self._meta(invoice["order_id"], target=invoice["counterparty"]),
            payment_id=payment_id, invoice_id=invoice_id,
            amount=Money(amount_minor=amount_minor, currency=invoice["currency"]),
            paid_at=_now(), method=method, reference=reference)

        async def change(conn: asyncpg.Connection) -> None:
            # What is open, with the invoice locked: two payments at once cannot both pass,
            # and a credit note for it counts.
            await conn.execute("SELECT 1 FROM invoices WHERE invoice_id = $1 FOR UPDATE",
                               invoice_id)
            left = total + await conn.fetchval(
                "SELECT coalesce(sum(total_minor), 0) FROM invoices WHERE role = 'payable' AND "
                "counterparty = $1 AND number = $2", invoice["counterparty"], f"CN-{number}"
            ) - await conn.fetchval("SELECT coalesce(sum(amount_minor), 0) FROM payments "
                                    "WHERE invoice_id = $1", invoice_id)
            if amount_minor > left:
                raise BusinessError(f"invoice {number} has {left / 100:,.2f} {currency} open: "
                                    f"{amount_minor / 100:,.2f} is more")
            await save_payment(conn, event, "outgoing", invoice["counterparty"])

        await self._commit(change, event)
        return payment_id

    async def _invoice_row(self, invoice_id: str, role: str) -> asyncpg.Record:
        conn = await asyncpg.connect(self.dsn)
        try:
            row = await conn.fetchrow("SELECT * FROM invoices WHERE invoice_id = $1 AND "
                                      "role = $2", invoice_id, role)
        finally:
            await conn.close()
        if row is None:
            what = "invoice issued by" if role == "receivable" else "invoice received by"
            raise BusinessError(f"no {what} box {self.box_id} with id {invoice_id}")
        return row

    async def share_contact(self, order_id: str, name: str, *, email: str | None = None,
                            phone: str | None = None, company: str | None = None
                            ) -> tuple[str, bool]:
        """The contact person of an order on this side, kept here, and sent to the other
        party where the box's rules share contacts with it; (contact id, whether it went)."""
        order = await self._order(order_id)
        contact_id = _id(f"{self.box_id}-ct")
        event = ContactUpserted(meta=self._meta(order_id, target=order["counterparty"]),
                                contact_id=contact_id, kind=ContactKind.PERSON, name=name,
                                email=email, phone=phone, company=company)

        async def change(conn: asyncpg.Connection) -> None:
            await save_contact(conn, event, self.box_id, order_id)

        sent = await self._commit(change, event, optional=True)
        return contact_id, sent > 0

    async def remap(self, order_id: str) -> list[str]:
        """Map a waiting sales order's lines again with the box's rules as they are now (a
        person added the missing item codes): it goes on as placed (or amended) when every
        line maps; the codes still missing otherwise."""
        conn = await asyncpg.connect(self.dsn)
        try:
            return await remap_order(conn, self.box_id, order_id)
        finally:
            await conn.close()


async def remap_order(conn: asyncpg.Connection, box: str, order_id: str) -> list[str]:
    async with conn.transaction():
        order = await conn.fetchrow("SELECT * FROM orders WHERE order_id = $1 FOR UPDATE",
                                    order_id)
        if order is None or order["status"] != "needs_mapping":
            raise BusinessError(f"order {order_id} does not wait for item codes in box {box}")
        rows = await conn.fetch("SELECT * FROM order_lines WHERE order_id = $1 ORDER BY "
                                "line_no", order_id)
        theirs = [Line(line_no=r["line_no"], sku=r["partner_sku"] or r["sku"],
                       description=r["description"],
                       quantity=r["partner_quantity"] or r["quantity"],
                       unit=r["partner_unit"] or r["unit"],
                       unit_price=Money(amount_minor=r["partner_price_minor"]
                                        if r["partner_price_minor"] is not None
                                        else r["unit_price_minor"], currency=order["currency"]))
                  for r in rows]
        rules = (await current_rules(conn, box)).rules
        own, unmapped = own_lines(rules, order["counterparty"], theirs)
        if unmapped:
            return unmapped
        await save_lines(conn, order_id, own, theirs)
        await conn.execute(
            "UPDATE orders SET status = $2, updated_at = now() WHERE order_id = $1", order_id,
            "amended" if order["revision"] else "placed")
        await close_tasks(conn, order_id)
        return []


async def close_tasks(conn: asyncpg.Connection, order_id: str) -> None:
    """The order's item-mapping task is done (mapped, or the order is gone)."""
    await conn.execute("UPDATE tasks SET done_at = now() WHERE order_id = $1 AND "
                       "kind = 'map-items' AND done_at IS NULL", order_id)


async def waiting_for_mapping(conn: asyncpg.Connection) -> list[str]:
    return [r["order_id"] for r in await conn.fetch(
        "SELECT order_id FROM orders WHERE status = 'needs_mapping' ORDER BY created_at")]


async def save_invoice(conn: asyncpg.Connection, event: InvoiceIssued, role: str,
                       counterparty: str) -> None:
    await conn.execute(
        "INSERT INTO invoices (invoice_id, order_id, role, counterparty, number, issued_at, "
        "due_at, net_minor, tax_minor, total_minor, currency) VALUES ($1, $2, $3, $4, $5, $6, "
        "$7, $8, $9, $10, $11) ON CONFLICT (invoice_id) DO NOTHING", event.invoice_id,
        event.order_id, role, counterparty, event.number, event.issued_at, event.due_at,
        event.net.amount_minor, event.tax.amount_minor, event.total.amount_minor,
        event.total.currency)


async def save_payment(conn: asyncpg.Connection, event: PaymentRecorded, role: str,
                       counterparty: str) -> None:
    await conn.execute(
        "INSERT INTO payments (payment_id, invoice_id, role, counterparty, amount_minor, "
        "currency, paid_at, method, reference) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
        "ON CONFLICT (payment_id) DO NOTHING", event.payment_id, event.invoice_id, role,
        counterparty, event.amount.amount_minor, event.amount.currency, event.paid_at,
        event.method.value, event.reference)


async def save_contact(conn: asyncpg.Connection, event: ContactUpserted, owner: str,
                       order_id: str | None) -> None:
    await conn.execute(
        "INSERT INTO contacts (contact_id, owner_box, order_id, kind, name, email, phone, "
        "company, changed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT "
        "(contact_id, owner_box) DO UPDATE SET name = $5, email = $6, phone = $7, "
        "company = $8, changed_at = $9", event.contact_id, owner, order_id, event.kind.value,
        event.name, event.email, event.phone, event.company, event.meta.occurred_at)
