"""The reference box's core: what every action shares (the box's identity, how an action
commits its change and its events in one transaction under the box's rules) and the writes
shared by the actions (this box's own changes) and the inbox handlers (changes that arrive
from other boxes).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import asyncpg

from bus.events import EventBase
from bus.events.models import (
    CommentAdded,
    EventMeta,
    Line,
    Money,
    ShipmentDispatched,
)
from bus.log import get_logger
from bus.settings import Settings
from connectors.box import Outbox
from connectors.box.rules import RulesVersion, current_rules

log = get_logger(__name__)
Change = Callable[[asyncpg.Connection], Awaitable[Any]]
Follow = Callable[[asyncpg.Connection], Awaitable[Sequence[EventBase]]]
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


class BoxCore:
    """One box: its identity, its outbox and the database it acts on. ``currency``: what its
    prices are in."""

    def __init__(self, box_id: str, region: str, dsn: str, outbox: Outbox,
                 currency: str = "EUR", *, settings: Settings | None = None) -> None:
        self.box_id = box_id
        self.region = region
        self.dsn = dsn
        self.outbox = outbox
        self.currency = currency
        self.settings = settings  # where the network's services are (the object store)

    def _meta(self, key: str, target: str | None = None, causation: str | None = None,
              correlation: str | None = None) -> EventMeta:
        return EventMeta(event_id=str(uuid.uuid4()), source_box=self.box_id,
                         region=self.region, aggregate_key=key, occurred_at=_now(),
                         target_box=target, correlation_id=correlation or key,
                         causation_id=causation)

    async def _commit(self, change: Change | None, *events: EventBase,
                      follow: Follow | None = None, optional: bool = False) -> int:
        """Run ``change(conn)`` and publish ``events`` (and the events ``follow(conn)`` makes
        after the change, e.g. the stock levels it left) in one transaction, as the box's
        rules shape them: held back, narrowed to listed partners, fields withheld, codes
        translated. An event addressed to a partner the rules do not share it with refuses
        the action, unless it is ``optional`` (then only the local change is made). The number
        of events written."""
        conn = await asyncpg.connect(self.dsn)
        try:
            rules = await current_rules(conn, self.box_id)
            shaped = self._shape(rules, events, optional)
            # Encoded before the transaction: a first schema look-up holds no row lock.
            encoded = await self.outbox.encode(shaped) if shaped else []
            async with conn.transaction():
                if change is not None:
                    await change(conn)
                more = self._shape(rules, await follow(conn), True) if follow else []
                if encoded or more:
                    await self.outbox.publish_many(conn, [*encoded, *await self.outbox.encode(
                        more)] if more else encoded)
        finally:
            await conn.close()
        for event in events:
            log.info("box action", box=self.box_id, type=event.TYPE,
                     event_id=event.meta.event_id, correlation_id=event.meta.correlation_id,
                     rules_version=rules.version)
        return len(encoded) + len(more)

    def _shape(self, rules: RulesVersion, events: Sequence[EventBase],
               optional: bool) -> list[EventBase]:
        shaped: list[EventBase] = []
        for event in events:
            out = rules.rules.outgoing(event)
            target = event.meta.target_box
            if not out and target is not None and not optional:
                kind = event.TYPE.rsplit(".", 1)[-1]
                raise BusinessError(
                    f"the rules of box {self.box_id} (version {rules.version}) do not share "
                    f"{kind} with {target}: add {target} to outbound.share.{kind} and apply "
                    "the rules again (boxbus box rules apply)")
            shaped.extend(out)
        return shaped

    def _lines(self, specs: Sequence[LineSpec]) -> tuple[Line, ...]:
        if not specs:
            raise BusinessError("an order needs at least one line")
        return tuple(Line(line_no=n, sku=s.sku, description=s.description or s.sku,
                          quantity=s.quantity, unit=s.unit,
                          unit_price=Money(amount_minor=s.unit_price_minor,
                                           currency=self.currency))
                     for n, s in enumerate(specs, 1))

    def _total(self, lines: Sequence[Line]) -> Money:
        return Money(amount_minor=sum(line_total(line) for line in lines),
                     currency=self.currency)

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

    async def _order_lines(self, order_id: str, theirs: bool = False) -> tuple[Line, ...]:
        """The order's lines in this box's codes, units and prices; with ``theirs``, as the
        partner wrote them where the box's rules mapped them (what goes back to the partner:
        its confirmation, shipment and invoice in its own terms, to the cent)."""
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch("SELECT l.*, o.currency FROM order_lines l JOIN orders o "
                                    "USING (order_id) WHERE order_id = $1 ORDER BY line_no",
                                    order_id)
        finally:
            await conn.close()
        mapped = [theirs and r["partner_sku"] is not None for r in rows]
        return tuple(Line(line_no=r["line_no"], sku=r["partner_sku"] if m else r["sku"],
                          description=r["description"],
                          quantity=r["partner_quantity"] if m else r["quantity"],
                          unit=r["partner_unit"] if m else r["unit"],
                          unit_price=Money(amount_minor=r["partner_price_minor"] if m
                                           else r["unit_price_minor"], currency=r["currency"]))
                     for r, m in zip(rows, mapped, strict=True))


def _rounded(amount: Decimal) -> int:
    """Money in minor units, rounded half to even (banker's rounding)."""
    return int(amount.to_integral_value(ROUND_HALF_EVEN))


def line_total(line: Line) -> int:
    """A line's amount in minor units: its quantity (to the thousandth) times its unit
    price, rounded once, half to even."""
    return _rounded(line.quantity * line.unit_price.amount_minor)


# Not dispatched, not cancelled (an order waiting for item codes may still change).
OPEN = ("placed", "confirmed", "amended", "needs_mapping")


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
                     notes: str | None, *, pipeline: str | None = None,
                     stage: str | None = None, theirs: Sequence[Line] | None = None) -> None:
    """An order and its lines (in this box's codes; ``theirs``: as the partner sent them).
    ``pipeline`` and ``stage`` are set when the order is new (the box's rules chose them)."""
    await conn.execute(
        "INSERT INTO orders (order_id, role, counterparty, status, revision, total_minor, "
        "currency, notes, pipeline, stage) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
        "coalesce($9, CASE WHEN $2 = 'sales' THEN 'sales' ELSE 'purchasing' END), $10) "
        "ON CONFLICT (order_id) DO UPDATE SET status = $4, revision = $5, total_minor = $6, "
        "currency = $7, updated_at = now()", order_id, role, counterparty, status, revision,
        total.amount_minor, total.currency, notes, pipeline, stage)
    await save_lines(conn, order_id, lines, theirs)


async def save_lines(conn: asyncpg.Connection, order_id: str, lines: Sequence[Line],
                     theirs: Sequence[Line | None] | None = None) -> None:
    """An order's lines in this box's codes; ``theirs``: the same lines as the partner sent
    them (its codes, units and prices), kept beside them."""
    await conn.execute("DELETE FROM order_lines WHERE order_id = $1", order_id)
    await conn.executemany(
        "INSERT INTO order_lines (order_id, line_no, sku, description, quantity, unit, "
        "unit_price_minor, partner_sku, partner_unit, partner_quantity, partner_price_minor) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        [(order_id, line.line_no, line.sku, line.description, line.quantity, line.unit,
          line.unit_price.amount_minor,
          *((p.sku, p.unit, p.quantity, p.unit_price.amount_minor) if p is not None
            else (None, None, None, None)))
         for line, p in zip(lines, theirs or _nothing(len(lines)), strict=True)])


def _nothing(n: int) -> list[Line | None]:
    return [None] * n


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
