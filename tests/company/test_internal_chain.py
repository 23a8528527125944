"""Integration inside one company, on the real stack: a booking entered once in sales is
scheduled in delivery, its usage billed by billing at the client's contract rates (known from
sales' changes, or asked of sales when billing has none), the invoice lands in the client's own
box, and sales shows the client's billing period and balance by asking billing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from bus import Settings
from bus.devstack import StackInfo
from bus.events.models import AnswerStatus, Money, Rate
from bus.kafka import KafkaAccess
from connectors.company import Billing, Delivery, Sales
from connectors.refbox.network import LocalNetwork
from tests.networks import running_network

pytestmark = pytest.mark.stack

NETWORK = """\
regions:
  central: {partitions: 3}
boxes:
  - {id: sales, region: central, company: acme, rpc: true}
  - {id: delivery, region: central, company: acme}
  - {id: billing, region: central, company: acme, rpc: true}
  - {id: travel, region: central, company: travel}
relationships:
  - {kind: internal, systems: [sales, delivery, billing]}
  - {kind: trade, buyer: travel, supplier: billing}
"""
SYSTEMS = {"sales": "sales", "delivery": "delivery", "billing": "billing"}


def eur(minor: int) -> Money:
    return Money(amount_minor=minor, currency="EUR")


@pytest.fixture(scope="module")
async def network(settings: Settings, stack: StackInfo, kafka: KafkaAccess
                  ) -> AsyncIterator[LocalNetwork]:
    async with running_network(settings, stack, kafka, NETWORK, "ic",
                               systems=SYSTEMS) as running:
        yield running


def systems(network: LocalNetwork) -> tuple[Sales, Delivery, Billing]:
    found = [network.systems[b].system for b in ("sales", "delivery", "billing")]
    assert isinstance(found[0], Sales) and isinstance(found[1], Delivery)
    assert isinstance(found[2], Billing)
    return found[0], found[1], found[2]


async def rows(network: LocalNetwork, box: str, query: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(network.dsns[box])
    try:
        return [dict(r) for r in await conn.fetch(query, *args)]
    finally:
        await conn.close()


async def test_a_booking_entered_once_ends_as_an_invoice_in_the_clients_box(
        network: LocalNetwork) -> None:
    sales, delivery, _ = systems(network)
    await sales.add_client("c-travel", "Travel Ltd", client_box="travel")
    await sales.set_rates("c-travel", [
        Rate(service="conference-bridge", unit="minute", price=eur(12), tax_rate_bp=2100),
        Rate(service="conference-bridge", unit="participant-minute", price=eur(3),
             tax_rate_bp=2100)], valid_from=datetime.now(UTC) - timedelta(days=1))

    async def learned() -> bool:
        return bool(await rows(network, "billing", "SELECT 1 FROM client_rates WHERE "
                               "client_id = 'c-travel' AND learned = 'changed'"))
    await network.until(learned, what="billing learning the client's rates from sales")

    booking = await sales.book("c-travel", "conference-bridge", datetime.now(UTC), 60, 12,
                               notes="board meeting")

    async def scheduled() -> bool:
        return bool(await rows(network, "delivery", "SELECT 1 FROM scheduled WHERE "
                               "booking_id = $1", booking))
    await network.until(scheduled, what="the booking scheduled in delivery")
    await delivery.deliver(booking, used_minutes=65, attended=11, resources=["bridge-4"])

    # 65 min at 0.12 + 65 x 11 participant-minutes at 0.03, and 21 % tax.
    net = 65 * 12 + 65 * 11 * 3
    total = net + round(net * 0.21)

    async def invoiced() -> bool:
        view = await network.view("travel")
        return any(i["order_id"] == booking for i in view["invoices"])
    await network.until(invoiced, what="the invoice in the client's own box")
    invoice = next(i for i in (await network.view("travel"))["invoices"]
                   if i["order_id"] == booking)
    assert (invoice["role"], invoice["counterparty"], invoice["total_minor"]) == (
        "payable", "billing", total)
    usage = await rows(network, "billing", "SELECT * FROM usage WHERE booking_id = $1", booking)
    assert (usage[0]["duration_minutes"], usage[0]["participants"]) == (65, 11)

    # The salesperson, on the client's profile, asks billing.
    period = await sales.billing_period("c-travel", timeout=10)
    assert period.answer.status is AnswerStatus.OK
    assert period.balance == eur(total) and period.open_invoices == 1
    assert period.period_start and period.period_start <= datetime.now(UTC)


async def test_billing_asks_sales_for_rates_it_has_none_of_and_keeps_them(
        network: LocalNetwork) -> None:
    sales, delivery, _ = systems(network)
    await sales.add_client("c-old", "Old Client", client_box="travel")
    # Rates entered in sales before billing was on the bus: billing never heard of them.
    conn = await asyncpg.connect(network.dsns["sales"])
    try:
        await conn.execute("INSERT INTO rates VALUES ('c-old', 'conference-bridge', 'session', "
                           "2500, 'EUR', 0, now() - interval '30 days')")
    finally:
        await conn.close()
    booking = await sales.book("c-old", "conference-bridge", datetime.now(UTC), 30, 4)

    async def scheduled() -> bool:
        return bool(await rows(network, "delivery", "SELECT 1 FROM scheduled WHERE "
                               "booking_id = $1", booking))
    await network.until(scheduled, what="the booking scheduled in delivery")
    await delivery.deliver(booking, used_minutes=31, attended=4)

    async def billed() -> bool:
        return bool(await rows(network, "billing", "SELECT 1 FROM bills WHERE booking_id = $1",
                               booking))
    await network.until(billed, what="billing's invoice after asking sales for the rates")
    (bill,) = await rows(network, "billing", "SELECT * FROM bills WHERE booking_id = $1", booking)
    assert bill["total_minor"] == 2500
    cached = await rows(network, "billing", "SELECT learned FROM client_rates WHERE "
                        "client_id = 'c-old'")
    assert [c["learned"] for c in cached] == ["asked"]
    # A client billing has never heard of: not found, said plainly.
    missing = await sales.billing_period("c-nobody", timeout=10)
    assert missing.answer.status is AnswerStatus.NOT_FOUND
    assert "c-nobody" in (missing.answer.error or "")
