"""The demo's chapter on integration inside the head office: sales sets a client's contract
rates (billing learns them), a booking entered once in sales is scheduled in delivery, the
delivered service is invoiced by billing at those rates into the client's own box, and a
salesperson on the client's profile asks billing for the client's billing period."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bus.events.models import Money, Rate
from connectors.company.systems import Delivery, Sales
from connectors.refbox.network import LocalNetwork

Step = Callable[..., Awaitable[bool]]
CLIENT = "c-sun-dairy"


async def play_company(network: LocalNetwork, step: Step, facts: dict[str, Any], *,
                       sales_box: str, delivery_box: str, billing_box: str,
                       client_box: str) -> None:
    sales = network.systems[sales_box].system
    delivery = network.systems[delivery_box].system
    assert isinstance(sales, Sales) and isinstance(delivery, Delivery)
    found: dict[str, Any] = {}
    facts["company"] = found

    async def one(box: str, query: str, *args: Any) -> Any:
        conn = await asyncpg.connect(network.dsns[box])
        try:
            return await conn.fetchrow(query, *args)
        finally:
            await conn.close()

    async def rates() -> str:
        await sales.add_client(CLIENT, "Sun Dairy", client_box=client_box)
        await sales.set_rates(CLIENT, [
            Rate(service="conference-bridge", unit="minute",
                 price=Money(amount_minor=12, currency="EUR"), tax_rate_bp=2100),
            Rate(service="conference-bridge", unit="participant-minute",
                 price=Money(amount_minor=3, currency="EUR"), tax_rate_bp=2100)],
            valid_from=datetime.now(UTC) - timedelta(days=1))
        return (f"{sales_box} entered {client_box}'s contract rates: conference bridge 0.12 "
                "EUR a minute and 0.03 EUR a participant-minute")

    async def learned() -> bool:
        return await one(billing_box, "SELECT 1 FROM client_rates WHERE client_id = $1",
                         CLIENT) is not None

    await step(f"{billing_box} learns the client's rates from {sales_box}", rates, learned)

    async def book() -> str:
        found["booking"] = await sales.book(CLIENT, "conference-bridge",
                                            datetime.now(UTC) - timedelta(hours=1), 60, 12,
                                            notes="quarterly review")
        return f"{sales_box} took booking {found['booking']}: 60 minutes, 12 participants"

    async def scheduled() -> bool:
        return await one(delivery_box, "SELECT 1 FROM scheduled WHERE booking_id = $1",
                         found.get("booking")) is not None

    await step(f"a booking entered once in {sales_box} is scheduled in {delivery_box}", book,
               scheduled)

    async def deliver() -> str:
        await delivery.deliver(found["booking"], used_minutes=65, attended=11,
                               resources=["bridge-line-4", "recording"])
        return f"{delivery_box} delivered it: 65 minutes, 11 participants"

    async def invoiced() -> bool:
        return any(i["order_id"] == found.get("booking")
                   for i in (await network.view(client_box))["invoices"])

    async def invoice() -> str:
        row = next(i for i in (await network.view(client_box))["invoices"]
                   if i["order_id"] == found["booking"])
        found["invoice_total_minor"] = row["total_minor"]
        return (f"{client_box} holds invoice {row['number']} from {billing_box}: "
                f"{row['total_minor'] / 100:,.2f} {row['currency']} to pay")

    await step(f"{billing_box} invoices the usage at the contract rates, into "
               f"{client_box}'s box", deliver, invoiced, invoice)

    async def ask() -> str:
        started = time.perf_counter()
        answer = await sales.billing_period(CLIENT, timeout=5)
        found["asked_ms"] = round((time.perf_counter() - started) * 1000, 1)
        found["balance_minor"] = answer.balance.amount_minor if answer.balance else None
        return (f"{sales_box} asked {billing_box} on the client's profile: period "
                f"{answer.period_start:%Y-%m-%d} to {answer.period_end:%Y-%m-%d}, balance "
                f"{(found['balance_minor'] or 0) / 100:,.2f} EUR, {answer.open_invoices} open "
                f"invoice(s), answered in {found['asked_ms']} ms")

    async def answered() -> bool:
        return found.get("balance_minor") == found.get("invoice_total_minor")

    await step("a salesperson's question is answered by billing", ask, answered)
