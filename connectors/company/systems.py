"""Three internal systems of one company on the bus, each a small box on the SDK with its own
database, so that data is entered once:

- **sales** keeps the clients and their contract rates and takes bookings. A booking goes to
  delivery (``BookingMade``); a rate change goes to billing (``ContractRatesChanged``). A
  salesperson on a client's profile asks billing for the client's billing period and balance
  (``BillingPeriodRequested``); sales answers billing's ``ContractRatesRequested``.
- **delivery** schedules each booked service (a conference bridge) and, when it was provided,
  tells billing what it used (``ServiceDelivered``: duration, participants, resources).
- **billing** applies the client's contract rates to the usage and issues the invoice on its
  own (``InvoiceIssued`` to the client's box, or by e-mail to a client without one). It keeps
  the rates current from sales' changes, asks sales when it has none for a client, and
  answers sales' questions about a client's billing period and balance.

Rates are per unit: ``minute`` (the service's minutes), ``participant-minute`` (minutes times
participants) and ``session`` (one per booking).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from bus.events.models import (
    BillingPeriodAnswered,
    BillingPeriodRequested,
    BookingMade,
    ContractRatesChanged,
    ContractRatesRequested,
    InvoiceIssued,
    Line,
    Money,
    PaymentRecorded,
    Rate,
    ServiceDelivered,
)
from bus.log import get_logger
from connectors.box import Applied, Handlers, Outbox, Rejected
from connectors.box.rpc import Answers, NotFound, Requester, RequestFailed
from connectors.refbox.core import BoxCore, BusinessError, _rounded

log = get_logger(__name__)
KINDS = ("sales", "delivery", "billing")


@dataclass(frozen=True)
class Peers:
    """The box ids of the company's three systems."""

    sales: str
    delivery: str
    billing: str


class System(BoxCore):
    """One of the three systems: its box, its database, its outbox, and (sales, billing) an
    asking instance for its questions."""

    kind = ""

    def __init__(self, box_id: str, region: str, dsn: str, outbox: Outbox, peers: Peers,
                 requester: Requester | None = None, currency: str = "EUR") -> None:
        super().__init__(box_id, region, dsn, outbox, currency)
        self.peers = peers
        self.requester = requester

    def handlers(self) -> Handlers:
        return Handlers()

    def answers(self) -> Answers:
        return Answers()

    async def _rows(self, query: str, *args: Any) -> list[dict[str, Any]]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return [dict(r) for r in await conn.fetch(query, *args)]
        finally:
            await conn.close()


class Sales(System):
    kind = "sales"

    async def add_client(self, client_id: str, name: str, client_box: str | None = None,
                         client_email: str | None = None) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(
                "INSERT INTO clients VALUES ($1, $2, $3, $4) ON CONFLICT (client_id) DO UPDATE "
                "SET name = $2, client_box = $3, client_email = $4", client_id, name,
                client_box, client_email)
        finally:
            await conn.close()

    async def set_rates(self, client_id: str, rates: Sequence[Rate],
                        valid_from: datetime | None = None) -> None:
        """New contract rates of a client, entered once: billing learns them at once."""
        valid_from = valid_from or datetime.now(UTC)
        event = ContractRatesChanged(meta=self._meta(client_id, target=self.peers.billing),
                                     client_id=client_id, rates=tuple(rates),
                                     valid_from=valid_from)

        async def change(conn: asyncpg.Connection) -> None:
            if not await conn.fetchval("SELECT 1 FROM clients WHERE client_id = $1", client_id):
                raise BusinessError(f"no client {client_id} in sales")
            await conn.executemany(
                "INSERT INTO rates VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (client_id, "
                "service, unit, valid_from) DO UPDATE SET price_minor = $4, currency = $5, "
                "tax_rate_bp = $6",
                [(client_id, r.service, r.unit, r.price.amount_minor, r.price.currency,
                  r.tax_rate_bp, valid_from) for r in rates])

        await self._commit(change, event)

    async def book(self, client_id: str, service: str, starts_at: datetime,
                   duration_minutes: int, participants: int, notes: str | None = None) -> str:
        """A booking entered once in sales: delivery schedules it."""
        client = await self._rows("SELECT * FROM clients WHERE client_id = $1", client_id)
        if not client:
            raise BusinessError(f"no client {client_id} in sales: add it first")
        booking_id = f"bk-{uuid.uuid4().hex[:10]}"
        event = BookingMade(
            meta=self._meta(booking_id, target=self.peers.delivery), booking_id=booking_id,
            client_id=client_id, client_box=client[0]["client_box"],
            client_email=client[0]["client_email"], service=service, starts_at=starts_at,
            duration_minutes=duration_minutes, participants=participants, notes=notes)

        async def change(conn: asyncpg.Connection) -> None:
            await conn.execute("INSERT INTO bookings (booking_id, client_id, service, "
                               "starts_at, duration_minutes, participants) VALUES ($1, $2, $3, "
                               "$4, $5, $6)", booking_id, client_id, service, starts_at,
                               duration_minutes, participants)

        await self._commit(change, event)
        return booking_id

    async def billing_period(self, client_id: str, timeout: float = 2.0) -> BillingPeriodAnswered:
        """What a salesperson sees on the client's profile: billing's answer, asked now."""
        if self.requester is None:
            raise BusinessError("sales runs without an asking instance")
        answer = await self.requester.ask(BillingPeriodRequested, self.peers.billing,
                                          timeout=timeout, key=client_id, client_id=client_id)
        assert isinstance(answer, BillingPeriodAnswered)
        return answer

    def answers(self) -> Answers:
        answers = Answers()

        @answers.to(ContractRatesRequested)
        async def rates_in_force(question: ContractRatesRequested,
                                 applied: Applied) -> dict[str, Any]:
            # The set in force: the latest change per service replaces the one before.
            rows = await applied.conn.fetch(
                "SELECT r.* FROM rates r WHERE client_id = $1 AND valid_from = (SELECT "
                "max(valid_from) FROM rates x WHERE x.client_id = r.client_id AND "
                "x.service = r.service AND x.valid_from <= now()) ORDER BY service, unit",
                question.client_id)
            if not rows:
                raise NotFound(f"sales has no contract rates for client {question.client_id}")
            return {"client_id": question.client_id,
                    "rates": tuple(_rate(r) for r in rows),
                    "valid_from": max(r["valid_from"] for r in rows)}

        return answers


class Delivery(System):
    kind = "delivery"

    def handlers(self) -> Handlers:
        handlers = Handlers()

        @handlers.on(BookingMade)
        async def schedule(event: BookingMade, applied: Applied) -> None:
            if applied.envelope.source_box != self.peers.sales:
                raise Rejected(f"bookings come from sales ({self.peers.sales}), not from "
                               f"{applied.envelope.source_box}")
            await applied.conn.execute(
                "INSERT INTO scheduled (booking_id, client_id, client_box, client_email, "
                "service, starts_at, duration_minutes, participants, status) VALUES ($1, $2, "
                "$3, $4, $5, $6, $7, $8, 'scheduled') ON CONFLICT DO NOTHING", event.booking_id,
                event.client_id, event.client_box, event.client_email, event.service,
                event.starts_at, event.duration_minutes, event.participants)

        return handlers

    async def deliver(self, booking_id: str, used_minutes: int, attended: int,
                      resources: Sequence[str] = ()) -> None:
        """The service was provided: its usage goes to billing (nobody types it again)."""
        rows = await self._rows("SELECT * FROM scheduled WHERE booking_id = $1", booking_id)
        if not rows:
            raise BusinessError(f"no booking {booking_id} scheduled in delivery")
        booked = rows[0]
        if booked["status"] == "delivered":
            raise BusinessError(f"booking {booking_id} was delivered already")
        started = booked["starts_at"]
        ended = started + timedelta(minutes=used_minutes)
        event = ServiceDelivered(
            meta=self._meta(booking_id, target=self.peers.billing), booking_id=booking_id,
            client_id=booked["client_id"], client_box=booked["client_box"],
            client_email=booked["client_email"], service=booked["service"],
            started_at=started, ended_at=ended, duration_minutes=used_minutes,
            participants=attended, resources=tuple(resources))

        async def change(conn: asyncpg.Connection) -> None:
            done = await conn.fetchval(
                "UPDATE scheduled SET status = 'delivered', started_at = $2, ended_at = $3, "
                "used_minutes = $4, attended = $5, resources = $6 WHERE booking_id = $1 AND "
                "status = 'scheduled' RETURNING 1", booking_id, started, ended, used_minutes,
                attended, list(resources))
            if not done:
                raise BusinessError(f"booking {booking_id} was delivered a moment ago")

        await self._commit(change, event)


class Billing(System):
    kind = "billing"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wake = asyncio.Event()  # usage waits for rates: the pricer looks now

    def handlers(self) -> Handlers:
        handlers = Handlers()

        @handlers.on(ContractRatesChanged)
        async def rates_changed(event: ContractRatesChanged, applied: Applied) -> None:
            if applied.envelope.source_box != self.peers.sales:
                raise Rejected("contract rates come from sales only")
            await save_rates(applied.conn, event.client_id, event.rates, event.valid_from,
                             "changed")
            # Usage that could not be priced with the old rates is tried with these.
            await applied.conn.execute("UPDATE usage SET status = 'unpriced', problem = NULL "
                                       "WHERE client_id = $1 AND status = 'failed'",
                                       event.client_id)
            self.wake.set()  # usage waiting for these rates is priced now

        @handlers.on(ServiceDelivered)
        async def bill(event: ServiceDelivered, applied: Applied) -> None:
            if applied.envelope.source_box != self.peers.delivery:
                raise Rejected("usage comes from delivery only")
            await self._bill(event, applied)

        @handlers.on(PaymentRecorded)
        async def paid(event: PaymentRecorded, applied: Applied) -> None:
            bill_row = await applied.conn.fetchrow(
                "SELECT sent_to, currency FROM bills WHERE invoice_id = $1", event.invoice_id)
            if bill_row is None or bill_row["sent_to"] != applied.envelope.source_box:
                raise Rejected(f"invoice {event.invoice_id} was not sent to "
                               f"{applied.envelope.source_box}")
            await applied.conn.execute(
                "INSERT INTO received_payments VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                event.payment_id, event.invoice_id, event.amount.amount_minor, event.paid_at)

        return handlers

    async def _bill(self, event: ServiceDelivered, applied: Applied) -> None:
        """The usage is kept; priced and invoiced at once when billing has the client's
        rates, else by the pricer (:meth:`price_waiting`), which asks sales outside any
        transaction: a sales outage delays the invoice, it never holds billing's inbox."""
        conn = applied.conn
        if event.client_box is None:
            raise Rejected(f"client {event.client_id} has neither a box nor a partner entry "
                           "in the network: there is nobody to send its invoice to")
        await conn.execute(
            "INSERT INTO usage (booking_id, client_id, service, started_at, duration_minutes, "
            "participants, client_box, status) VALUES ($1, $2, $3, $4, $5, $6, $7, "
            "'unpriced') ON CONFLICT (booking_id) DO NOTHING", event.booking_id,
            event.client_id, event.service, event.started_at, event.duration_minutes,
            event.participants, event.client_box)
        rates = await _rates_at(conn, event.client_id, event.service, event.started_at)
        if rates:
            await self._invoice(conn, event.booking_id, rates)
        else:
            self.wake.set()

    async def _invoice(self, conn: asyncpg.Connection, booking_id: str,
                       rates: Sequence[Rate]) -> str | None:
        """Invoice one unpriced usage at ``rates``, in the caller's transaction (the usage row
        locked); None when it is priced already or cannot be (marked failed, with why)."""
        usage = await conn.fetchrow("SELECT * FROM usage WHERE booking_id = $1 AND "
                                    "status = 'unpriced' FOR UPDATE", booking_id)
        if usage is None:
            return None
        quantities = {"minute": usage["duration_minutes"], "session": 1,
                      "participant-minute": usage["duration_minutes"] * usage["participants"]}
        unknown = sorted({r.unit for r in rates} - set(quantities))
        currencies = {r.price.currency for r in rates}
        if unknown or len(currencies) != 1:
            problem = (f"rate unit(s) {', '.join(unknown)} cannot be billed (minute, "
                       "participant-minute, session)" if unknown else
                       f"the rates mix currencies {sorted(currencies)}")
            await conn.execute("UPDATE usage SET status = 'failed', problem = $2 WHERE "
                               "booking_id = $1", booking_id, problem)
            log.warning("usage not invoiced", box=self.box_id, booking_id=booking_id,
                        problem=problem, correlation_id=booking_id)
            return None
        lines = tuple(
            Line(line_no=n, sku=f"{rate.service}/{rate.unit}",
                 description=f"{rate.service}, per {rate.unit}",
                 quantity=Decimal(quantities[rate.unit]), unit=rate.unit,
                 unit_price=rate.price, tax_rate_bp=rate.tax_rate_bp)
            for n, rate in enumerate(rates, 1))
        net = sum(_rounded(x.quantity * x.unit_price.amount_minor) for x in lines)
        tax = sum(_rounded(x.quantity * x.unit_price.amount_minor * x.tax_rate_bp / 10_000)
                  for x in lines)
        currency = currencies.pop()
        client = usage["client_box"]
        invoice_id = f"{self.box_id}-inv-{uuid.uuid4().hex[:10]}"
        number = f"SRV-{booking_id.removeprefix('bk-').upper()}"
        now = datetime.now(UTC)
        invoice = InvoiceIssued(
            meta=self._meta(booking_id, target=client), invoice_id=invoice_id,
            order_id=booking_id, number=number, issued_at=now,
            due_at=now + timedelta(days=14), lines=lines,
            net=Money(amount_minor=net, currency=currency),
            tax=Money(amount_minor=tax, currency=currency),
            total=Money(amount_minor=net + tax, currency=currency))
        await conn.execute("UPDATE usage SET status = 'priced', invoice_id = $2 WHERE "
                           "booking_id = $1", booking_id, invoice_id)
        await conn.execute(
            "INSERT INTO bills VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", invoice_id,
            usage["client_id"], booking_id, number, now, net, tax, net + tax, currency, client)
        await self.outbox.publish(conn, invoice)
        log.info("service invoiced", box=self.box_id, booking_id=booking_id,
                 invoice_id=invoice_id, total_minor=net + tax, client=client,
                 event_id=invoice.meta.event_id, correlation_id=booking_id)
        return invoice_id

    async def price_waiting(self, stop: asyncio.Event, every: float = 2.0) -> None:
        """The pricer: usage that came before its client's rates is priced once billing has
        them, asked of sales when the cache has none (outside any transaction). A sales
        outage only delays the invoice; the usage waits, nothing is dropped."""
        while not stop.is_set():
            self.wake.clear()
            try:
                await self._price_round()
            except Exception as exc:  # a database or broker hiccup: the next round retries
                log.warning("pricing waiting usage failed; trying again", box=self.box_id,
                            error=repr(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await asyncio.wait([asyncio.ensure_future(self.wake.wait()),
                                        asyncio.ensure_future(stop.wait())],
                                       return_when=asyncio.FIRST_COMPLETED)

    async def _price_round(self) -> None:
        waiting = await self._rows("SELECT booking_id, client_id, service, started_at FROM "
                                   "usage WHERE status = 'unpriced' ORDER BY started_at")
        asked: dict[str, list[Rate] | None] = {}
        for usage in waiting:
            conn = await asyncpg.connect(self.dsn)
            try:
                rates = await _rates_at(conn, usage["client_id"], usage["service"],
                                        usage["started_at"])
                if not rates and usage["client_id"] not in asked:
                    asked[usage["client_id"]] = await self._ask_rates(conn,
                                                                      usage["client_id"])
                if not rates:
                    rates = [r for r in asked.get(usage["client_id"]) or []
                             if r.service == usage["service"]]
                if not rates:
                    continue  # sales has none yet, or did not answer: asked again later
                async with conn.transaction():
                    await self._invoice(conn, usage["booking_id"], rates)
            finally:
                await conn.close()

    async def _ask_rates(self, conn: asyncpg.Connection, client_id: str) -> list[Rate] | None:
        """Sales' rates of a client (kept for the next time); None when sales has none or
        does not answer now (the usage waits and is asked about again)."""
        if self.requester is None:
            return None
        try:
            answer = await self.requester.ask(ContractRatesRequested, self.peers.sales,
                                              timeout=5, key=client_id, client_id=client_id)
        except RequestFailed as exc:
            log.warning("sales did not give the rates of a client; its usage waits",
                        box=self.box_id, client=client_id, error=exc.message)
            return None
        if answer.answer.status.value != "OK":  # type: ignore[attr-defined]
            log.warning("sales has no contract rates for a client; its usage waits until "
                        "sales sets them", box=self.box_id, client=client_id)
            return None
        rates = list(answer.rates)  # type: ignore[attr-defined]
        await save_rates(conn, client_id, rates, answer.valid_from, "asked")  # type: ignore[attr-defined]
        return rates

    def answers(self) -> Answers:
        answers = Answers()

        @answers.to(BillingPeriodRequested)
        async def period(question: BillingPeriodRequested, applied: Applied) -> dict[str, Any]:
            return await billing_period(applied.conn, question.client_id, self.currency)

        return answers


async def billing_period(conn: asyncpg.Connection, client_id: str,
                         currency: str) -> dict[str, Any]:
    """The client's current calendar month: invoiced and paid in it, and what is open."""
    now = datetime.now(UTC)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    row = await conn.fetchrow(
        """SELECT
             (SELECT count(*) FROM bills WHERE client_id = $1) AS bills,
             (SELECT coalesce(sum(total_minor), 0) FROM bills WHERE client_id = $1
                AND issued_at >= $2 AND issued_at < $3)::bigint AS invoiced,
             (SELECT coalesce(sum(p.amount_minor), 0) FROM received_payments p JOIN bills b
                USING (invoice_id) WHERE b.client_id = $1 AND p.paid_at >= $2
                AND p.paid_at < $3)::bigint AS paid,
             (SELECT coalesce(sum(total_minor), 0) FROM bills WHERE client_id = $1)::bigint
               - (SELECT coalesce(sum(p.amount_minor), 0) FROM received_payments p JOIN bills b
                  USING (invoice_id) WHERE b.client_id = $1)::bigint AS balance,
             (SELECT count(*) FROM bills b WHERE client_id = $1 AND total_minor >
                (SELECT coalesce(sum(amount_minor), 0) FROM received_payments p
                 WHERE p.invoice_id = b.invoice_id))::int AS open""", client_id, start, end)
    if not row["bills"] and not await conn.fetchval(
            "SELECT 1 FROM client_rates WHERE client_id = $1", client_id):
        raise NotFound(f"billing knows no client {client_id}")

    def money(minor: int) -> Money:
        return Money(amount_minor=minor, currency=currency)

    return {"client_id": client_id, "period_start": start, "period_end": end,
            "invoiced": money(row["invoiced"]), "paid": money(row["paid"]),
            "balance": money(row["balance"]), "open_invoices": row["open"]}


async def _rates_at(conn: asyncpg.Connection, client_id: str, service: str,
                    at: datetime) -> list[Rate]:
    # A change is the whole set of a service's rates from its date: the latest set in force.
    rows = await conn.fetch(
        "SELECT * FROM client_rates WHERE client_id = $1 AND service = $2 AND valid_from = "
        "(SELECT max(valid_from) FROM client_rates WHERE client_id = $1 AND service = $2 AND "
        "valid_from <= $3) ORDER BY unit", client_id, service, at)
    return [_rate(r) for r in rows]


async def save_rates(conn: asyncpg.Connection, client_id: str, rates: Sequence[Rate],
                     valid_from: datetime | None, learned: str) -> None:
    at = valid_from or datetime.now(UTC)
    await conn.executemany(
        "INSERT INTO client_rates VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (client_id,"
        " service, unit, valid_from) DO UPDATE SET price_minor = $4, currency = $5, "
        "tax_rate_bp = $6", [(client_id, r.service, r.unit, r.price.amount_minor,
                              r.price.currency, r.tax_rate_bp, at, learned) for r in rates])


def _rate(row: Any) -> Rate:
    return Rate(service=row["service"], unit=row["unit"],
                price=Money(amount_minor=row["price_minor"], currency=row["currency"]),
                tax_rate_bp=row["tax_rate_bp"])


SYSTEMS: dict[str, type[System]] = {"sales": Sales, "delivery": Delivery, "billing": Billing}
