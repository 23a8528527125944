"""The reference week of ../shared/WORKLOAD.md as real events, at any scale: what each box of
the reference network publishes in a week, in the order it publishes it.

At scale 1: 500,000 store orders into the five branches (40 stores each), each placed and
confirmed, amended in 30 %, cancelled in 5 %, commented in 50 %, with a stock level change per
line in the branch's warehouse; 20,000 purchase orders from the branches and head office to
their suppliers with the B2B chain (confirmed, comments both ways, documents by reference,
dispatched, received, invoiced, paid); a price list a day and a directive a week from head
office; a report a day from each branch; 2,000 contact upserts. Store orders follow a daily
curve (night x0.1, evening peak x3) with the Friday evening peak hour at x5 the week's mean.

Some events are late on purpose, as in life: 1 % of the amendments reach the network between
two hours and three days after they happened (their box was offline); 0.2 % of all events
reach it twice (a relay retrying after a lost acknowledgement); 10 % of the purchase orders
are amended before their confirmation and 2 % cancelled by the supplier after it. Events that
would happen after the week's end (a payment due next month) are not part of it.

The events are built as the Avro records the schemas describe (plain dicts: building a
pydantic model per event would cost more than the rest of the pipeline), with the envelope
headers a box's relay writes, and are yielded in publishing order: by the time each reaches
the network. Everything is seeded: the same scale and seed give the same week.
"""

from __future__ import annotations

import heapq
import itertools
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bus.topology import Topology

REGIONS = ("north", "south", "east", "west", "centre")
STORES_PER_REGION = 40
ARTICLES = 2000
WEEK = timedelta(days=7)
_T = "boxbus."
_DOMAIN = {"OrderPlaced": "orders", "OrderConfirmed": "orders", "OrderAmended": "orders",
           "OrderCancelled": "orders", "CommentAdded": "collaboration",
           "DocumentAttached": "collaboration", "StockLevelChanged": "logistics",
           "ShipmentDispatched": "logistics", "GoodsReceived": "logistics",
           "InvoiceIssued": "finance", "PaymentRecorded": "finance",
           "PriceListSent": "network", "BranchReportSent": "network",
           "DirectiveSent": "network", "ContactUpserted": "contacts"}
TAX_BP = 2000


def type_name(short: str) -> str:
    return f"{_T}{_DOMAIN[short]}.{short}"


@dataclass(frozen=True, order=True)
class Planned:
    """One event of the week: when it reaches the network (``at``), in a total order."""

    at: datetime
    seq: int
    type: str  # short name, e.g. OrderPlaced
    data: Any  # the Avro record (dict), meta included

    @property
    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.data["meta"]
        return meta


def last_monday(now: datetime | None = None) -> datetime:
    """Monday 00:00 UTC of the last whole week before ``now``."""
    now = now or datetime.now(UTC)
    monday = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0,
                                                           microsecond=0)
    return monday - WEEK


def hourly_weights() -> list[float]:
    """The week's 168 hours, Monday 00:00 first, as shares of the week's store orders."""
    curve = [0.1] * 6 + [0.5, 0.8] + [1.0] * 9 + [3.0] * 4 + [1.2, 0.5, 0.2]
    weights = [curve[h] * (0.6 if day >= 5 else 1.0) for day in range(7) for h in range(24)]
    friday_peak = 4 * 24 + 18
    others = sum(weights) - weights[friday_peak]
    weights[friday_peak] = 5 * others / 163  # five times the mean of all 168 hours
    total = sum(weights)
    return [w / total for w in weights]


class Week:
    """The reference week of a network (``workload_topology``) at ``scale``."""

    def __init__(self, topology: Topology, scale: float, *, seed: int = 17,
                 start: datetime | None = None) -> None:
        self.topology = topology
        self.scale = scale
        self.start = start or last_monday()
        self.end = self.start + WEEK
        self.rng = random.Random(seed)
        self.store_orders = round(500_000 * scale)
        self.purchase_orders = round(20_000 * scale)
        self.contacts = round(2_000 * scale)
        self.trade: dict[str, list[str]] = {}
        for r in topology.relationships:
            if r.kind == "trade":
                self.trade.setdefault(r.buyer, []).append(r.supplier)
        self.boxes = {b.id: b for b in topology.boxes}
        self.region_of = {b.id: b.region for b in topology.boxes}
        self.with_box = [b.id for b in topology.boxes if b.kind != "partner"]
        skus = [f"SKU-{n:04d}" for n in range(ARTICLES)]
        self.articles = [(sku, 50 + (n * 7919) % 4950) for n, sku in enumerate(skus)]
        zipf = [1 / (n + 1) ** 0.9 for n in range(ARTICLES)]
        self.cumulative = list(itertools.accumulate(zipf))
        self.stock: dict[tuple[str, str], Decimal] = {}  # level per (warehouse, sku)
        self._stock_changes: dict[str, tuple[str, str, Decimal]] = {}  # by event id
        self._seq = itertools.count()
        self._heap: list[Planned] = []
        self.daily: dict[tuple[str, int], list[int]] = {}  # (branch, day) -> [orders, revenue]
        self.late = 0  # events that reach the network an hour or more after they happened
        self.copies = 0  # events that reach it twice

    # -- the events -------------------------------------------------------------------------

    def events(self) -> Iterator[Planned]:
        """Every event of the week, by the time it reaches the network."""
        weights = hourly_weights()
        counts = [int(self.store_orders * w) for w in weights]
        for i in range(self.store_orders - sum(counts)):
            counts[i * 7 % 168] += 1
        po_hours = [h for h in range(168) if 8 <= h % 24 < 18 and h // 24 < 5]
        pos = [0] * 168
        for n in range(self.purchase_orders):
            pos[po_hours[n % len(po_hours)]] += 1
        contacts = [0] * 168
        for n in range(self.contacts):
            contacts[(n * 37) % 168] += 1
        for hour in range(168):
            begin = self.start + timedelta(hours=hour)
            if hour % 24 == 0:
                self._daily_network(hour // 24, begin)
            if hour % 24 == 6 and hour >= 24:
                self._report(hour // 24 - 1)  # yesterday's, in the morning
            for _ in range(counts[hour]):
                self._store_order(self._moment(begin, 3600))
            for _ in range(pos[hour]):
                self._purchase_order(self._moment(begin, 3600))
            for _ in range(contacts[hour]):
                self._contact(self._moment(begin, 3600))
            horizon = begin + timedelta(hours=1)
            while self._heap and self._heap[0].at < horizon:
                yield self._maybe_again(self._settled(heapq.heappop(self._heap)))
        self._report(6)  # the last day's, at the week's very end
        while self._heap:
            planned = heapq.heappop(self._heap)
            if planned.at < self.end + timedelta(days=3):  # late ones still arrive
                yield self._settled(planned)

    def _settled(self, planned: Planned) -> Planned:
        """A stock change gets its level when it is published, in time order, so the newest
        level of an article is the one after all its changes."""
        change = self._stock_changes.pop(planned.meta["event_id"], None)
        if change is not None:
            warehouse, sku, delta = change
            level = self.stock.get((warehouse, sku), Decimal(200)) + delta
            reason = "SALE" if delta < 0 else "RECEIPT"
            if level < 0:
                level, reason = level + 500, "RECEIPT"  # restocked
            self.stock[(warehouse, sku)] = level
            planned.data["on_hand"] = level.quantize(Decimal("0.001"))
            planned.data["reason"] = reason
        return planned

    def _maybe_again(self, planned: Planned) -> Planned:
        """Now and then an event reaches the network twice (a relay that retried after a lost
        acknowledgement): the same event, again, seconds later."""
        if self.rng.random() < 0.002:
            self.copies += 1
            heapq.heappush(self._heap, Planned(
                planned.at + timedelta(milliseconds=self.rng.randint(100, 30_000)),
                next(self._seq), planned.type, planned.data))
        return planned

    def _moment(self, begin: datetime, seconds: int) -> datetime:
        return begin + timedelta(milliseconds=self.rng.randrange(seconds * 1000))

    def _plan(self, short: str, at: datetime, data: dict[str, Any], *,
              arrives: datetime | None = None) -> None:
        if data["meta"]["occurred_at"] >= self.end:
            return  # happens after the week
        if arrives is not None and arrives - at >= timedelta(hours=1):
            self.late += 1
        heapq.heappush(self._heap, Planned(arrives or at, next(self._seq), short, data))

    def _meta(self, source: str, key: str, at: datetime, *, target: str | None = None,
              correlation: str | None = None) -> dict[str, Any]:
        return {"event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                "source_box": source, "region": self.region_of[source], "aggregate_key": key,
                "occurred_at": at, "target_box": target, "correlation_id": correlation,
                "causation_id": None}

    def _lines(self, count: int) -> list[dict[str, Any]]:
        picked = self.rng.choices(self.articles, cum_weights=self.cumulative, k=count)
        return [{"line_no": n, "sku": sku, "description": f"Article {sku}",
                 "quantity": Decimal(self.rng.randint(1, 12)).quantize(Decimal("0.001")),
                 "unit": "pcs", "unit_price": {"amount_minor": price, "currency": "EUR"},
                 "tax_rate_bp": TAX_BP}
                for n, (sku, price) in enumerate(picked, start=1)]

    @staticmethod
    def _total(lines: list[dict[str, Any]]) -> dict[str, Any]:
        net = sum(round(line["quantity"] * line["unit_price"]["amount_minor"])
                  for line in lines)
        return {"amount_minor": net + net * TAX_BP // 10_000, "currency": "EUR"}

    def _store_order(self, at: datetime) -> None:
        rng = self.rng
        region = REGIONS[rng.randrange(5)]
        branch = f"branch-{region}"
        store = f"store-{region}-{rng.randrange(STORES_PER_REGION):02d}"
        order_id = f"so-{uuid.UUID(int=rng.getrandbits(128), version=4).hex[:16]}"
        lines = self._lines(max(1, min(40, round(rng.lognormvariate(1.6, 0.6)))))
        total = self._total(lines)
        self._plan("OrderPlaced", at, {
            "meta": self._meta(branch, order_id, at, correlation=order_id),
            "order_id": order_id, "kind": "STORE_ORDER", "buyer_box": branch,
            "supplier_box": None, "supplier_email": None, "store_id": store, "lines": lines,
            "total": total, "requested_delivery_at": None, "delivery_address": None,
            "notes": None})
        confirmed = at + timedelta(seconds=rng.randint(30, 600))
        self._plan("OrderConfirmed", confirmed, self._confirmation(
            branch, order_id, confirmed, lines, total, None))
        cancelled = rng.random() < 0.05
        day = (at - self.start).days
        tally = self.daily.setdefault((branch, day), [0, 0])
        final = total["amount_minor"]
        if rng.random() < 0.3:
            when = at + timedelta(seconds=rng.randint(300, 5400))
            late = not cancelled and rng.random() < 0.01
            arrives = when + timedelta(seconds=rng.randint(7200, 3 * 86400)) if late else None
            new_lines = self._lines(len(lines))
            new_total = self._total(new_lines)
            self._plan("OrderAmended", when, {
                "meta": self._meta(branch, order_id, when, correlation=order_id),
                "order_id": order_id, "revision": 1, "lines": new_lines, "total": new_total,
                "reason": "store changed quantities"}, arrives=arrives)
            final = new_total["amount_minor"]
        if rng.random() < 0.5:
            when = at + timedelta(seconds=rng.randint(60, 3600))
            self._plan("CommentAdded", when, self._comment(branch, order_id, when, None))
        if cancelled:
            when = at + timedelta(seconds=rng.randint(5400, 7200))
            self._plan("OrderCancelled", when, {
                "meta": self._meta(branch, order_id, when, correlation=order_id),
                "order_id": order_id, "cancelled_by": "BUYER", "reason": "store cancelled"})
        else:
            tally[0] += 1
            tally[1] += final
        for line in lines:
            when = at + timedelta(milliseconds=rng.randint(10, 120_000))
            self._stock_change(branch, f"wh-{region}", line["sku"], -line["quantity"], when)

    def _stock_change(self, box: str, warehouse: str, sku: str, change: Decimal,
                      at: datetime) -> None:
        """Plan a stock change; its level is set when it is published (``_settled``)."""
        key = f"{warehouse}/{sku}"
        meta = self._meta(box, key, at)
        self._stock_changes[meta["event_id"]] = (warehouse, sku, change)
        self._plan("StockLevelChanged", at, {
            "meta": meta, "warehouse": warehouse, "sku": sku, "unit": "pcs",
            "on_hand": Decimal("0.000"), "in_transit": Decimal("0.000"),
            "reserved": Decimal(self.rng.randint(0, 3)).quantize(Decimal("0.001")),
            "reason": "SALE"})

    def _confirmation(self, source: str, order_id: str, at: datetime,
                      lines: list[dict[str, Any]], total: dict[str, Any], target: str | None
                      ) -> dict[str, Any]:
        return {"meta": self._meta(source, order_id, at, target=target, correlation=order_id),
                "order_id": order_id, "lines": lines, "total": total,
                "payment_terms": "NET30", "payment_due_days": 30,
                "promised_dispatch_at": at + timedelta(days=1),
                "promised_delivery_at": at + timedelta(days=3), "notes": None}

    def _comment(self, source: str, subject: str, at: datetime, target: str | None
                 ) -> dict[str, Any]:
        return {"meta": self._meta(source, subject, at, target=target, correlation=subject),
                "subject_id": subject, "comment_id": f"c-{next(self._seq)}",
                "author": f"staff of {source}", "text": "Please keep the agreed dates.",
                "in_reply_to": None}

    def _purchase_order(self, at: datetime) -> None:
        rng = self.rng
        buyer = "hq" if rng.random() < 0.2 else f"branch-{REGIONS[rng.randrange(5)]}"
        supplier = rng.choice(self.trade[buyer])
        partner = self.boxes[supplier].kind == "partner"
        order_id = f"po-{uuid.UUID(int=rng.getrandbits(128), version=4).hex[:16]}"
        lines = self._lines(rng.randint(2, 20))
        for line in lines:
            line["quantity"] = (line["quantity"] * 20).quantize(Decimal("0.001"))
        total = self._total(lines)
        self._plan("OrderPlaced", at, {
            "meta": self._meta(buyer, order_id, at, target=None if partner else supplier,
                               correlation=order_id),
            "order_id": order_id, "kind": "PURCHASE_ORDER", "buyer_box": buyer,
            "supplier_box": None if partner else supplier,
            "supplier_email": self.boxes[supplier].email if partner else None,
            "store_id": None, "lines": lines, "total": total,
            "requested_delivery_at": at + timedelta(days=4), "delivery_address": None,
            "notes": None})
        if partner:
            return  # by e-mail: its answers are not events of this network (yet)
        if rng.random() < 0.1:  # the buyer changes its mind before the confirmation
            when = at + timedelta(seconds=rng.randint(60, 1700))
            lines = [{**line, "quantity": line["quantity"] + 10} for line in lines]
            total = self._total(lines)
            self._plan("OrderAmended", when, {
                "meta": self._meta(buyer, order_id, when, target=supplier,
                                   correlation=order_id),
                "order_id": order_id, "revision": 1, "lines": lines, "total": total,
                "reason": "more needed"})
        confirmed = at + timedelta(seconds=rng.randint(1800, 86400))
        self._plan("OrderConfirmed", confirmed, self._confirmation(
            supplier, order_id, confirmed, lines, total, buyer))
        if rng.random() < 0.02:  # the supplier cannot deliver after all
            when = confirmed + timedelta(seconds=rng.randint(600, 7200))
            self._plan("OrderCancelled", when, {
                "meta": self._meta(supplier, order_id, when, target=buyer,
                                   correlation=order_id),
                "order_id": order_id, "cancelled_by": "SUPPLIER",
                "reason": "out of stock"})
            return
        for n in range(4):
            when = at + timedelta(seconds=rng.randint(600, 172800))
            source, target = (buyer, supplier) if n % 2 == 0 else (supplier, buyer)
            self._plan("CommentAdded", when, self._comment(source, order_id, when, target))
        dispatched = confirmed + timedelta(seconds=rng.randint(43200, 172800))
        for n in range(rng.randint(1, 3)):
            when = dispatched - timedelta(seconds=rng.randint(60, 3600))
            size = rng.randint(20_000, 500_000)  # by reference: the bytes are elsewhere
            digest = f"{rng.getrandbits(256):064x}"
            self._plan("DocumentAttached", when, {
                "meta": self._meta(supplier, order_id, when, target=buyer,
                                   correlation=order_id),
                "subject_id": order_id, "document_id": f"doc-{order_id}-{n}",
                "document_type": "WAYBILL" if n else "INVOICE",
                "file_name": f"{order_id}-{n}.pdf", "media_type": "application/pdf",
                "sha256": digest, "size_bytes": size, "content": None,
                "content_ref": f"documents/{digest}"})
        shipment = f"sh-{order_id[3:]}"
        shipped = [{"line_no": line["line_no"], "sku": line["sku"],
                    "quantity": line["quantity"], "unit": line["unit"]} for line in lines]
        self._plan("ShipmentDispatched", dispatched, {
            "meta": self._meta(supplier, shipment, dispatched, target=buyer,
                               correlation=order_id),
            "shipment_id": shipment, "order_id": order_id, "from_warehouse": f"wh-{supplier}",
            "lines": shipped, "dispatched_at": dispatched,
            "expected_at": dispatched + timedelta(days=1), "carrier": "RoadCo",
            "tracking_id": None})
        received = dispatched + timedelta(seconds=rng.randint(21600, 129600))
        got = [{**line, "quantity": (line["quantity"] * Decimal("0.9")).quantize(
            Decimal("0.001")) if rng.random() < 0.03 else line["quantity"]}
            for line in shipped]
        self._plan("GoodsReceived", received, {
            "meta": self._meta(buyer, shipment, received, target=supplier,
                               correlation=order_id),
            "shipment_id": shipment, "order_id": order_id, "warehouse": f"wh-{buyer}",
            "lines": got, "received_at": received, "discrepancy_note": None})
        invoiced = dispatched + timedelta(seconds=rng.randint(600, 7200))
        invoice_id = f"inv-{order_id[3:]}"
        net = total["amount_minor"] * 10_000 // (10_000 + TAX_BP)
        self._plan("InvoiceIssued", invoiced, {
            "meta": self._meta(supplier, order_id, invoiced, target=buyer,
                               correlation=order_id),
            "invoice_id": invoice_id, "order_id": order_id, "number": invoice_id.upper(),
            "issued_at": invoiced, "due_at": invoiced + timedelta(days=rng.choice((7, 14, 30))),
            "lines": lines, "net": {"amount_minor": net, "currency": "EUR"},
            "tax": {"amount_minor": total["amount_minor"] - net, "currency": "EUR"},
            "total": total})
        if rng.random() < 0.7:
            paid = invoiced + timedelta(seconds=rng.randint(3600, 10 * 86400))
            self._plan("PaymentRecorded", paid, {
                "meta": self._meta(buyer, order_id, paid, target=supplier,
                                   correlation=order_id),
                "payment_id": f"pay-{order_id[3:]}", "invoice_id": invoice_id,
                "amount": total, "paid_at": paid, "method": "BANK_TRANSFER",
                "reference": invoice_id})

    def _contact(self, at: datetime) -> None:
        box = self.rng.choice(self.with_box)
        contact = f"ct-{self.rng.randrange(10_000)}"
        self._plan("ContactUpserted", at, {
            "meta": self._meta(box, contact, at), "contact_id": contact, "kind": "PERSON",
            "name": f"Contact {contact}", "email": f"{contact}@example.com", "phone": None,
            "company": None, "tax_id": None, "address": None, "tags": []})

    def _daily_network(self, day: int, begin: datetime) -> None:
        at = begin + timedelta(hours=5)
        price_list = f"pl-{day}"
        self._plan("PriceListSent", at, {
            "meta": self._meta("hq", price_list, at), "price_list_id": price_list,
            "valid_from": begin + timedelta(days=1), "valid_until": None,
            "entries": [{"sku": sku, "unit": "pcs",
                         "price": {"amount_minor": price, "currency": "EUR"},
                         "tax_rate_bp": TAX_BP} for sku, price in self.articles]})
        if day == 0:
            self._plan("DirectiveSent", at, {
                "meta": self._meta("hq", "dir-week", at), "directive_id": "dir-week",
                "title": "Weekly directive", "body": "Keep the shelves full on Friday.",
                "effective_from": begin, "branches": []})

    def _report(self, day: int) -> None:
        period_start = self.start + timedelta(days=day)
        at = min(period_start + timedelta(days=1, hours=6, minutes=5),
                 self.end - timedelta(minutes=1))
        for region in REGIONS:
            branch = f"branch-{region}"
            orders, revenue = self.daily.get((branch, day), [0, 0])
            report_id = f"rp-{branch}-{day}"
            self._plan("BranchReportSent", at, {
                "meta": self._meta(branch, report_id, at, target="hq"),
                "report_id": report_id, "branch_box": branch,
                "period_start": period_start, "period_end": period_start + timedelta(days=1),
                "orders_count": orders, "revenue": {"amount_minor": revenue, "currency": "EUR"},
                "stock_value": {"amount_minor": 0, "currency": "EUR"}, "notes": None})
