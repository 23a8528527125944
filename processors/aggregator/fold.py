"""The aggregator's fold: one batch of decoded events, in log order, as the changes it makes to
the aggregates (pure: no I/O; :mod:`processors.aggregator.store` writes them).

What each event type changes, always in the bucket of its own event time (``occurred_at``):

- ``OrderPlaced`` of a store order (``STORE_ORDER``, taken by a branch's box): sales of the
  hour by region, branch and store (orders, revenue with tax, units) and of the day by
  product (units, net line value); the order's state remembers where and with what it was
  counted.
- ``OrderAmended`` / ``OrderCancelled`` of a counted store order: the *difference* (or the
  whole order, negated) in the buckets where the order was counted; a copy of an event, an
  amendment older than the lines counted (by ``revision``), or an event after the
  cancellation, changes nothing.
- ``OrderPlaced`` of a purchase order, its amendments and cancellation (the buyer's),
  ``OrderConfirmed`` and ``ShipmentDispatched`` (the supplier's), ``GoodsReceived`` (the
  buyer's): the facts of the purchase-order funnel, merged column by column (a column given
  wins over none; the ordered quantities go by revision). A cancellation of an order the
  partition never saw placed is a purchase order's (the supplier's, in its own region).
- ``StockLevelChanged``: the latest level per box, warehouse and article (the newest by event
  time wins, whatever the arrival order).
- ``InvoiceIssued`` / ``PaymentRecorded``: receivables, one row per invoice and per payment
  (a copy adds nothing).
- ``BranchReportSent``: the branch's report as sent, beside what the aggregates say.
- every event: the records of its type in its hour, and whether it came late.

An event is *late* when its event time is an hour or more behind the newest event time seen
before it from the same source box in its partition (the source's watermark, stored with the
partition's position so that a restart judges the same). Per source, because the router
interleaves the boxes of a region: one box's backlog must not make another's events late.
Late events are applied to their own bucket all the same, and counted there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from bus.events.base import EventBase
from bus.events.models import (
    BranchReportSent,
    GoodsReceived,
    InvoiceIssued,
    Line,
    OrderAmended,
    OrderCancelled,
    OrderConfirmed,
    OrderKind,
    OrderPlaced,
    PaymentRecorded,
    ShipmentDispatched,
    StockLevelChanged,
)

LATE = timedelta(hours=1)  # this far behind its source's watermark, an event is late


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def day_of(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True, order=True)
class SalesKey:
    bucket: datetime  # the hour of the order's placement, UTC
    region: str
    box: str  # the branch's box that took the order
    store: str  # '' for an order without a store
    currency: str


@dataclass
class Sales:
    orders: int = 0
    revenue_minor: int = 0  # order totals, tax included
    units: Decimal = Decimal(0)
    late_events: int = 0  # events that changed this bucket late

    def add(self, orders: int, revenue_minor: int, units: Decimal, *, late: bool = False
            ) -> None:
        self.orders += orders
        self.revenue_minor += revenue_minor
        self.units += units
        self.late_events += late


@dataclass(frozen=True, order=True)
class ProductKey:
    day: datetime  # the day of the order's placement, UTC
    region: str
    box: str
    sku: str
    currency: str


@dataclass
class ProductSales:
    lines: int = 0  # order lines of the article (a line of a cancelled order counts -1)
    units: Decimal = Decimal(0)
    net_minor: int = 0  # quantity times unit price, tax excluded

    def add(self, lines: int, units: Decimal, net_minor: int) -> None:
        self.lines += lines
        self.units += units
        self.net_minor += net_minor


# Per article of an order: (its lines, units, net value in minor units).
Articles = dict[str, tuple[int, Decimal, int]]


@dataclass
class OrderState:
    """What the aggregates hold of one store order: where it was counted (the bucket of its
    placement) and with what, so an amendment or a cancellation corrects that bucket."""

    key: SalesKey
    revenue_minor: int
    units: Decimal
    articles: Articles
    cancelled: bool = False
    revision: int = 0  # of the lines counted: 0 placed, n the n-th amendment


@dataclass
class Purchase:
    """Facts of one purchase order, each column set by the side that knows it; ``None``
    leaves the stored value as it is."""

    buyer: str | None = None
    supplier: str | None = None
    region: str | None = None  # the buyer's
    currency: str | None = None
    placed_at: datetime | None = None
    revision: int | None = None  # of ordered_units/ordered_total: 0 placed, n the n-th amendment
    ordered_units: Decimal | None = None
    ordered_total_minor: int | None = None
    confirmed_at: datetime | None = None
    confirmed_units: Decimal | None = None
    cancelled_at: datetime | None = None


@dataclass
class Shipment:
    """One shipment of a purchase order: its dispatch (supplier) and receipt (buyer)."""

    order_id: str
    dispatched_at: datetime | None = None
    dispatched_units: Decimal | None = None
    received_at: datetime | None = None
    received_units: Decimal | None = None


@dataclass(frozen=True, order=True)
class StockKey:
    box: str
    warehouse: str
    sku: str


@dataclass
class StockLevel:
    region: str
    unit: str
    on_hand: Decimal
    in_transit: Decimal
    reserved: Decimal
    occurred_at: datetime
    event_id: str  # breaks a tie of event times


@dataclass
class Invoice:
    order_id: str
    supplier: str
    buyer: str | None  # the invoice's addressee; else the purchase order's buyer
    region: str
    currency: str
    total_minor: int
    issued_at: datetime
    due_at: datetime


@dataclass
class Payment:
    invoice_id: str
    payer: str
    currency: str
    amount_minor: int
    paid_at: datetime


@dataclass
class BranchReport:
    branch: str
    region: str
    period_start: datetime
    period_end: datetime
    orders_count: int
    revenue_minor: int
    currency: str
    stock_value_minor: int
    sent_at: datetime


@dataclass(frozen=True, order=True)
class CountKey:
    bucket: datetime  # the hour of the event's occurred_at
    region: str
    type: str  # the short type name, e.g. OrderPlaced


@dataclass
class Count:
    records: int = 0
    late: int = 0


@dataclass
class Changes:
    """One batch's changes to the aggregates."""

    sales: dict[SalesKey, Sales] = field(default_factory=lambda: defaultdict(Sales))
    products: dict[ProductKey, ProductSales] = field(
        default_factory=lambda: defaultdict(ProductSales))
    orders: dict[str, OrderState] = field(default_factory=dict)
    purchases: dict[str, Purchase] = field(default_factory=dict)
    shipments: dict[str, Shipment] = field(default_factory=dict)
    stock: dict[StockKey, StockLevel] = field(default_factory=dict)
    invoices: dict[str, Invoice] = field(default_factory=dict)
    payments: dict[str, Payment] = field(default_factory=dict)
    reports: dict[str, BranchReport] = field(default_factory=dict)
    counts: dict[CountKey, Count] = field(default_factory=lambda: defaultdict(Count))

    @property
    def aggregated(self) -> int:
        return sum(c.records for c in self.counts.values())


def articles_of(lines: Iterable[Line]) -> Articles:
    found: Articles = {}
    for line in lines:
        count, units, net = found.get(line.sku, (0, Decimal(0), 0))
        found[line.sku] = (count + 1, units + line.quantity,
                           net + round(line.quantity * line.unit_price.amount_minor))
    return found


def units_of(lines: Iterable[Line]) -> Decimal:
    return sum((line.quantity for line in lines), start=Decimal(0))


class Fold:
    """Folds one fetch's events into :class:`Changes`, given the stored state of the store
    orders they touch (``orders``) and the revision of the purchase orders (``purchases``),
    and whether each event is late (judged by the caller, who keeps the watermarks)."""

    def __init__(self, orders: Mapping[str, OrderState], purchases: Mapping[str, int]) -> None:
        self.changes = Changes()
        self._orders = dict(orders)
        self._revisions = dict(purchases)

    def add(self, event: EventBase, *, late: bool) -> None:
        meta = event.meta
        count = self.changes.counts[CountKey(hour_of(meta.occurred_at), meta.region,
                                             event.TYPE.rsplit(".", 1)[-1])]
        count.records += 1
        count.late += late
        match event:
            case OrderPlaced() | OrderAmended() | OrderCancelled():
                self._order(event, late)
            case OrderConfirmed():
                if event.order_id in self._orders:
                    return  # a branch confirming its store's order: not a purchase
                self._purchase(event.order_id).confirmed_at = meta.occurred_at
                self._purchase(event.order_id).confirmed_units = units_of(event.lines)
                self._purchase(event.order_id).supplier = meta.source_box
            case ShipmentDispatched():
                shipment = self._shipment(event.shipment_id, event.order_id)
                shipment.dispatched_at = event.dispatched_at
                shipment.dispatched_units = sum((i.quantity for i in event.lines), Decimal(0))
            case GoodsReceived():
                shipment = self._shipment(event.shipment_id, event.order_id)
                shipment.received_at = event.received_at
                shipment.received_units = sum((i.quantity for i in event.lines), Decimal(0))
            case StockLevelChanged():
                key = StockKey(meta.source_box, event.warehouse, event.sku)
                level = StockLevel(meta.region, event.unit, event.on_hand, event.in_transit,
                                   event.reserved, meta.occurred_at, meta.event_id)
                known = self.changes.stock.get(key)
                if known is None or (known.occurred_at, known.event_id) < (
                        level.occurred_at, level.event_id):
                    self.changes.stock[key] = level
            case InvoiceIssued():
                self.changes.invoices[event.invoice_id] = Invoice(
                    event.order_id, meta.source_box, meta.target_box, meta.region,
                    event.total.currency, event.total.amount_minor, event.issued_at,
                    event.due_at)
            case PaymentRecorded():
                self.changes.payments[event.payment_id] = Payment(
                    event.invoice_id, meta.source_box, event.amount.currency,
                    event.amount.amount_minor, event.paid_at)
            case BranchReportSent():
                self.changes.reports[event.report_id] = BranchReport(
                    event.branch_box, meta.region, event.period_start, event.period_end,
                    event.orders_count, event.revenue.amount_minor, event.revenue.currency,
                    event.stock_value.amount_minor, meta.occurred_at)
            case _:
                pass  # comments, documents, price lists, ...: counted above only

    def _purchase(self, order_id: str) -> Purchase:
        return self.changes.purchases.setdefault(order_id, Purchase())

    def _shipment(self, shipment_id: str, order_id: str) -> Shipment:
        return self.changes.shipments.setdefault(shipment_id, Shipment(order_id))

    def _order(self, event: OrderPlaced | OrderAmended | OrderCancelled, late: bool) -> None:
        meta = event.meta
        if isinstance(event, OrderPlaced) and event.kind is OrderKind.PURCHASE_ORDER:
            if event.order_id in self._revisions:
                return  # a copy: the placement is known
            self._revisions[event.order_id] = 0
            purchase = self._purchase(event.order_id)
            purchase.buyer, purchase.region = event.buyer_box, meta.region
            purchase.supplier = purchase.supplier or event.supplier_box or event.supplier_email
            purchase.placed_at, purchase.revision = meta.occurred_at, 0
            purchase.ordered_units = units_of(event.lines)
            purchase.ordered_total_minor = event.total.amount_minor
            purchase.currency = event.total.currency
            return
        state = self._orders.get(event.order_id)
        if not isinstance(event, OrderPlaced) and (
                event.order_id in self._revisions
                or (state is None and isinstance(event, OrderCancelled))):
            # A purchase order's change; or a cancellation of an order this partition never
            # saw placed: the supplier's cancellation of a purchase order, which lives in the
            # supplier's region (a store order's events all share its partition).
            self._purchase_changed(event)
            return
        if isinstance(event, OrderPlaced):
            if state is not None:
                return  # a copy: counted already
            key = SalesKey(hour_of(meta.occurred_at), meta.region, meta.source_box,
                           event.store_id or "", event.total.currency)
            state = OrderState(key, event.total.amount_minor, units_of(event.lines),
                               articles_of(event.lines))
            self.changes.sales[key].add(1, state.revenue_minor, state.units, late=late)
            self._articles(state, state.articles, +1)
        elif state is None or state.cancelled:
            return  # not a store order this aggregator counted, or cancelled already
        elif isinstance(event, OrderAmended):
            if event.revision <= state.revision:
                return  # a copy, or older than the lines counted
            revenue, units = event.total.amount_minor, units_of(event.lines)
            self.changes.sales[state.key].add(0, revenue - state.revenue_minor,
                                              units - state.units, late=late)
            articles = articles_of(event.lines)
            self._articles(state, state.articles, -1)
            self._articles(state, articles, +1)
            state = replace(state, revenue_minor=revenue, units=units, articles=articles,
                            revision=event.revision)
        else:
            self.changes.sales[state.key].add(-1, -state.revenue_minor, -state.units,
                                              late=late)
            self._articles(state, state.articles, -1)
            state = replace(state, cancelled=True)
        self._orders[event.order_id] = self.changes.orders[event.order_id] = state

    def _articles(self, state: OrderState, articles: Articles, sign: int) -> None:
        key = state.key
        for sku, (lines, units, net) in articles.items():
            self.changes.products[ProductKey(day_of(key.bucket), key.region, key.box, sku,
                                             key.currency)].add(sign * lines, sign * units,
                                                                sign * net)

    def _purchase_changed(self, event: OrderAmended | OrderCancelled) -> None:
        purchase = self._purchase(event.order_id)
        if isinstance(event, OrderCancelled):
            purchase.cancelled_at = event.meta.occurred_at
            return
        if event.revision <= self._revisions.get(event.order_id, 0):
            return  # a copy, or older than what is known
        self._revisions[event.order_id] = event.revision
        purchase.revision = event.revision
        purchase.ordered_units = units_of(event.lines)
        purchase.ordered_total_minor = event.total.amount_minor
