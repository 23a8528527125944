"""The network's flows end to end, on real Kafka, PostgreSQL and the registry: reference boxes
in two regions with their relays and inboxes, and the router between them."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from bus import Settings, naming
from bus.devstack import StackInfo
from bus.events.models import Money, OrderAmended, OrderKind, OrderPlaced
from bus.kafka import KafkaAccess
from bus.signing import HEADER, Signer
from bus.topics import read_topic
from connectors.box import Outbox
from connectors.refbox import BusinessError, LineSpec
from connectors.refbox.network import LocalNetwork
from tests.conftest import boxbus_cli
from tests.networks import running_network

pytestmark = pytest.mark.stack

NETWORK = """\
regions:
  north: {partitions: 3}
  south: {partitions: 3}
boxes:
  - {id: hq, region: north, company: chain}
  - {id: branch-n, region: north, company: chain}
  - {id: branch-s, region: south, company: chain}
  - {id: shop, region: north, company: shop}
  - {id: dairy, region: south, company: dairy}
  - {id: stranger, region: south, company: other}
  - {id: farm, region: south, company: farm, kind: partner, email: orders@farm.example}
relationships:
  - {kind: trade, buyer: shop, supplier: dairy}
  - {kind: trade, buyer: shop, supplier: farm}
  - {kind: branch, head_office: hq, branch: branch-n}
  - {kind: branch, head_office: hq, branch: branch-s}
subscriptions:
  - {box: branch-n, name: prices, types: [PriceListSent], where: {source: [hq]}}
  - {box: branch-s, name: prices, types: [PriceListSent], where: {source: [hq]}}
  - {box: hq, name: reports, types: [BranchReportSent]}
"""
LINES = [LineSpec("milk-1l", Decimal(24), 89, "Milk 1 l"),
         LineSpec("butter-250g", Decimal("12.5"), 249, "Butter 250 g"),
         LineSpec("yogurt", Decimal(40), 55)]


@pytest.fixture(scope="module")
async def network(settings: Settings, stack: StackInfo, kafka: KafkaAccess
                  ) -> AsyncIterator[LocalNetwork]:
    async with running_network(settings, stack, kafka, NETWORK, "nw") as running:
        yield running


def order_of(view: dict[str, Any], order_id: str) -> dict[str, Any] | None:
    return next((o for o in view["orders"] if o["order_id"] == order_id), None)


async def status_in(network: LocalNetwork, box: str, order_id: str) -> str | None:
    order = order_of(await network.view(box), order_id)
    return order["status"] if order else None


async def test_purchase_order_comments_shipment_and_receipt(network: LocalNetwork) -> None:
    shop, dairy = network.boxes["shop"], network.boxes["dairy"]
    await dairy.stock_in("milk-1l", Decimal(100))
    await dairy.stock_in("butter-250g", Decimal(20))
    await dairy.stock_in("yogurt", Decimal(40))
    order_id = await shop.place_order("dairy", LINES, notes="ramp 2")

    # The purchase order arrives in the supplier's box as a sales order with all its lines.
    async def arrived() -> bool:
        return await status_in(network, "dairy", order_id) == "placed"
    await network.until(arrived, what="the sales order in dairy")
    sales = order_of(await network.view("dairy"), order_id)
    assert sales and (sales["role"], sales["counterparty"], sales["lines"]) == (
        "sales", "shop", 3)
    assert sales["total_minor"] == 24 * 89 + int(Decimal("12.5") * 249) + 40 * 55

    # Comments both ways, each once in each box, no echo.
    await shop.comment(order_id, "Please deliver before 9:00.")
    await dairy.comment(order_id, "Fine, the truck leaves at 6:00.")
    await shop.comment(order_id, "Thank you!")

    async def talked() -> bool:
        views = [await network.view(b) for b in ("shop", "dairy")]
        return all(len(v["comments"]) == 3 for v in views)
    await network.until(talked, what="three comments in both boxes")
    for box in ("shop", "dairy"):
        comments = (await network.view(box))["comments"]
        assert [c["origin_box"] for c in comments] == ["shop", "dairy", "shop"]
        assert len({c["comment_id"] for c in comments}) == 3

    # The supplier confirms, then dispatches: its stock is written off, the buyer sees the
    # goods in transit.
    await dairy.confirm_order(order_id)
    shipment_id = await dairy.dispatch(order_id, carrier="ColdTruck")
    stock = {s["sku"]: s["quantity"] for s in (await network.view("dairy"))["stock"]}
    assert stock == {"milk-1l": "76", "butter-250g": "7.5", "yogurt": "0"}

    async def in_transit() -> bool:
        return bool((await network.view("shop"))["goods_in_transit"])
    await network.until(in_transit, what="goods in transit in shop")
    transit = (await network.view("shop"))["goods_in_transit"]
    assert {(g["sku"], g["quantity"], g["supplier"]) for g in transit} == {
        ("milk-1l", "24", "dairy"), ("butter-250g", "12.5", "dairy"), ("yogurt", "40", "dairy")}
    assert await status_in(network, "shop", order_id) == "in_transit"
    with pytest.raises(BusinessError, match="dispatched already"):
        await dairy.dispatch(order_id)

    # Goods received closes it on both sides and fills the buyer's warehouse.
    await shop.receive(shipment_id)
    assert (await network.view("shop"))["goods_in_transit"] == []

    async def closed() -> bool:
        return await status_in(network, "dairy", order_id) == "received"
    await network.until(closed, what="the sales order closed in dairy")
    stock = {s["sku"]: s["quantity"] for s in (await network.view("shop"))["stock"]}
    assert stock == {"milk-1l": "24", "butter-250g": "12.5", "yogurt": "40"}

    # The box without a relationship saw none of it; the router dropped no echo.
    stranger = await network.view("stranger")
    assert stranger["orders"] == [] and stranger["comments"] == []
    assert await read_topic(network.kafka,
                            naming.inbox_topic(network.settings.topic_namespace,
                                               "stranger")) == []
    assert sum(r.stats.echoes_dropped for r in network.routers) == 0


async def test_amendments_and_cancellation_arrive_in_order(network: LocalNetwork) -> None:
    shop = network.boxes["shop"]
    order_id = await shop.place_order("dairy", LINES[:1])
    for quantity in (10, 20, 30, 40):
        await shop.amend_order(order_id, [LineSpec("milk-1l", Decimal(quantity), 89)],
                               reason=f"now {quantity}")
    await shop.cancel_order(order_id, "the store closed")

    async def cancelled() -> bool:
        return await status_in(network, "dairy", order_id) == "cancelled"
    await network.until(cancelled, what="the cancellation in dairy")
    sales = order_of(await network.view("dairy"), order_id)
    assert sales and sales["revision"] == 4 and sales["total_minor"] == 40 * 89
    with pytest.raises(BusinessError, match="cancelled"):
        await network.boxes["dairy"].dispatch(order_id)


async def test_price_list_to_branches_and_reports_back(network: LocalNetwork) -> None:
    hq = network.boxes["hq"]
    price_list = await hq.send_price_list([(f"sku-{n:04d}", 100 + n) for n in range(500)])

    async def everywhere() -> bool:
        views = [await network.view(b) for b in ("branch-n", "branch-s")]
        return all(v["price_lists"] for v in views)
    await network.until(everywhere, what="the price list in both branches")
    for box in ("branch-n", "branch-s"):
        (got,) = (await network.view(box))["price_lists"]
        assert (got["price_list_id"], got["from_box"], got["entries"]) == (price_list, "hq", 500)
    assert (await network.view("shop"))["price_lists"] == []  # not a branch of hq

    # The branches' stores order during the day; a branch's own purchases are not sales.
    north, south = network.boxes["branch-n"], network.boxes["branch-s"]
    await north.take_store_order("store-n-01", LINES[:2])  # 24 * 89 + 12.5 * 249 = 5248.5
    await north.take_store_order("store-n-02", [LineSpec("sku-0007", Decimal(3), 107)])
    await south.take_store_order("store-s-01", [LineSpec("sku-0001", Decimal(10), 101)])
    await north.place_order("hq", [LineSpec("sku-0001", Decimal(100), 101)])
    await north.stock_in("sku-0002", Decimal(5))  # priced 102 by the price list
    await north.stock_in("unpriced", Decimal(9))
    for branch in (north, south):
        await branch.send_daily_report()
    # Yesterday's report of the same branch: nothing was taken then.
    await south.send_daily_report(datetime.now(UTC).date() - timedelta(days=1))

    async def reported() -> bool:
        return len((await network.view("hq"))["branch_reports"]) == 3
    await network.until(reported, what="three branch reports in hq")
    got = {(r["branch_box"], r["period_start"].date()): r
           for r in (await network.view("hq"))["branch_reports"]}
    today = datetime.now(UTC).date()
    assert (got["branch-n", today]["orders_count"], got["branch-n", today]["revenue_minor"],
            got["branch-n", today]["stock_value_minor"]) == (2, 5248 + 321, 5 * 102)
    assert (got["branch-s", today]["orders_count"], got["branch-s", today]["revenue_minor"]
            ) == (1, 1010)
    yesterday = got["branch-s", today - timedelta(days=1)]
    assert (yesterday["orders_count"], yesterday["revenue_minor"]) == (0, 0)
    assert yesterday["period_end"] - yesterday["period_start"] == timedelta(days=1)


async def test_order_to_a_partner_without_a_box_goes_to_the_mail_topic(network: LocalNetwork,
) -> None:
    order_id = await network.boxes["shop"].place_order("farm", LINES[:2])
    mail = naming.mail_topic(network.settings.topic_namespace)

    async def mailed() -> bool:
        records = await read_topic(network.kafka, mail)
        return any(r.key == order_id.encode() for r in records)
    await network.until(mailed, what="the order on the mail topic")
    record = next(r for r in await read_topic(network.kafka, mail)
                  if r.key == order_id.encode())
    assert dict(record.headers)["boxbus_recipient"] == b"farm"


async def test_router_instances_joining_and_leaving_lose_and_duplicate_nothing(
    network: LocalNetwork,
) -> None:
    shop = network.boxes["shop"]
    orders: list[str] = []

    async def burst(n: int) -> None:
        for _ in range(n):
            order_id = await shop.place_order("dairy", LINES[:2])
            await shop.comment(order_id, "as usual")
            orders.append(order_id)

    await burst(5)
    await network.add_router()  # a second instance joins: the partitions are split
    await burst(5)
    await network.remove_router()  # ... and leaves: the first takes them back
    await burst(5)

    async def all_there() -> bool:
        view = await network.view("dairy")
        have = {o["order_id"] for o in view["orders"]}
        return set(orders) <= have
    await network.until(all_there, what="15 sales orders in dairy")
    view = await network.view("dairy")
    mine = [o for o in view["orders"] if o["order_id"] in orders]
    assert len(mine) == 15 and all(o["lines"] == 2 for o in mine)

    async def commented() -> bool:
        view = await network.view("dairy")
        return len([c for c in view["comments"] if c["order_id"] in orders]) >= 15
    await network.until(commented, what="15 comments in dairy")
    comments = [c for c in (await network.view("dairy"))["comments"] if c["order_id"] in orders]
    assert len(comments) == 15  # a copy routed twice during a hand-over is applied once


async def test_an_amendment_crossing_the_dispatch_is_refused_with_its_reason(network: LocalNetwork,
) -> None:
    shop, dairy = network.boxes["shop"], network.boxes["dairy"]
    await dairy.stock_in("cream-1l", Decimal(30))
    order_id = await shop.place_order("dairy", [LineSpec("cream-1l", Decimal(10), 89)])

    async def arrived() -> bool:
        return await status_in(network, "dairy", order_id) == "placed"
    await network.until(arrived, what="the sales order in dairy")
    await dairy.dispatch(order_id)
    # The buyer's amendment was on its way before the shipment reached it (sent here
    # without the buyer's own check, as a crossing would be).
    crossing = OrderAmended(
        meta=shop._meta(order_id, target="dairy"), order_id=order_id, revision=1,
        lines=shop._lines([LineSpec("cream-1l", Decimal(25), 89)]),
        total=Money(amount_minor=25 * 89, currency="EUR"))
    await shop._commit(None, crossing)
    dlq = naming.dlq_topic(naming.inbox_topic(network.settings.topic_namespace, "dairy"))

    async def refused() -> bool:
        letters = await read_topic(network.kafka, dlq)
        return any(dict(r.headers).get("ce_id") == crossing.meta.event_id.encode()
                   for r in letters)
    await network.until(refused, what="the amendment in dairy's dead-letter topic")
    letter = next(r for r in await read_topic(network.kafka, dlq)
                  if dict(r.headers).get("ce_id") == crossing.meta.event_id.encode())
    assert b"cannot be amended any more" in dict(letter.headers)["dlq_reason"]
    sales = order_of(await network.view("dairy"), order_id)
    assert sales and (sales["status"], sales["revision"]) == ("in_transit", 0)
    stock = {s["sku"]: s["quantity"] for s in (await network.view("dairy"))["stock"]}
    assert stock["cream-1l"] == "20"  # written off once
    with pytest.raises(BusinessError, match="dispatched already"):
        await dairy.dispatch(order_id)


async def test_signed_documents_are_verified_and_forgeries_refused(
    network: LocalNetwork, kafka: KafkaAccess, env_for_cli: dict[str, str],
) -> None:
    ns = network.settings.topic_namespace
    shop = network.boxes["shop"]
    signed = await shop.place_order("dairy", LINES[:1])

    async def placed() -> bool:
        return await status_in(network, "dairy", signed) == "placed"
    await network.until(placed, what="the signed order in dairy")
    (delivered,) = [r for r in await read_topic(kafka, naming.inbox_topic(ns, "dairy"))
                    if r.key == signed.encode()]
    material = dict(delivered.headers)[HEADER]
    assert json.loads(base64.b64decode(material))["signatures"][0]["keyid"].startswith("shop-")

    # Written into shop's own ingress as shop, so the router passes them on: one signed with
    # a key shop never published, one not signed at all.
    def order(order_id: str) -> OrderPlaced:
        lines = shop._lines(LINES[:1])
        return OrderPlaced(meta=shop._meta(order_id, target="dairy"), order_id=order_id,
                           kind=OrderKind.PURCHASE_ORDER, buyer_box="shop",
                           supplier_box="dairy", lines=lines, total=shop._total(lines))

    forger = Outbox(network.settings, network.serde, signer=Signer.new("shop"),
                    signed_types=["boxbus.orders.OrderPlaced"])
    unsigned = Outbox(network.settings, network.serde)
    records = [*(await forger.encode([order("forged-1")])),
               *(await unsigned.encode([order("unsigned-1")]))]
    as_shop = network.identity(naming.box_principal(ns, "shop"))
    producer = as_shop.producer(acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for encoded in records:
            await producer.send_and_wait(encoded.topic, encoded.value, key=encoded.key,
                                         headers=encoded.headers)
    finally:
        await producer.stop()

    dead: list[Any] = []

    async def refused() -> bool:
        letters = await read_topic(kafka, naming.dlq_topic(naming.inbox_topic(ns, "dairy")))
        dead[:] = [r for r in letters if r.key in (b"forged-1", b"unsigned-1")]
        return len(dead) == 2
    await network.until(refused, what="two refused orders in dairy's dead letters")
    reasons = {r.key.decode(): dict(r.headers) for r in dead}
    assert {k: v["dlq_code"] for k, v in reasons.items()} == {
        "forged-1": b"bad-signature", "unsigned-1": b"bad-signature"}
    assert b"has no published key" in reasons["forged-1"]["dlq_reason"]
    assert b"not signed" in reasons["unsigned-1"]["dlq_reason"]
    for order_id in ("forged-1", "unsigned-1"):
        assert await status_in(network, "dairy", order_id) is None  # nothing applied

    # An auditor checks any record later: who signed it, with which key.
    def verify(topic: str, record: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*boxbus_cli(), "events", "verify", topic, str(record.offset), "--partition",
             str(record.partition), "--json"],
            env={**env_for_cli, "BOXBUS_TOPIC_NAMESPACE": ns}, capture_output=True,
            text=True, timeout=60, check=False)
    good = verify(naming.inbox_topic(ns, "dairy"), delivered)
    assert good.returncode == 0, good.stderr
    seen = json.loads(good.stdout)
    assert (seen["ok"], seen["signed_by"]) == (True, "shop")
    assert seen["covered"]["id"] and seen["covered"]["type"] == "boxbus.orders.OrderPlaced"
    forged = next(r for r in dead if r.key == b"forged-1")
    bad = verify(naming.dlq_topic(naming.inbox_topic(ns, "dairy")), forged)
    assert bad.returncode == 1 and json.loads(bad.stdout)["ok"] is False
