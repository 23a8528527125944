"""The whole business chain between two boxes in two regions, on real Kafka, PostgreSQL, the
registry and the object store: each box's own rules (processes, item codes, what it shares),
documents inline and by claim check, invoices and payments, stock and contacts, and the
business receipts of what each box sent."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bus import Settings, naming
from bus.devstack import StackInfo
from bus.events import EventBase
from bus.events.models import (
    DeliveryReceipt,
    DocumentAttached,
    DocumentType,
    EventMeta,
    ReceiptStatus,
)
from bus.kafka import KafkaAccess
from bus.objectstore import ObjectStore
from bus.topics import read_topic
from connectors.box.rules import apply_rules
from connectors.box.tracking import purge
from connectors.box.tracking import receipts as receipts_of
from connectors.refbox import BusinessError, LineSpec
from connectors.refbox.documents import object_key
from connectors.refbox.network import LocalNetwork
from tests.conftest import boxbus_cli
from tests.networks import running_network

pytestmark = pytest.mark.stack

NETWORK = """\
regions:
  north: {partitions: 3}
  south: {partitions: 3}
boxes:
  - {id: shop, region: south, company: shop}
  - {id: farm, region: north, company: farm}
  - {id: deli, region: north, company: deli}
  - {id: mill, region: north, company: mill}
relationships:
  - {kind: trade, buyer: shop, supplier: farm}
  - {kind: trade, buyer: shop, supplier: mill}
  - {kind: trade, buyer: deli, supplier: farm}
"""

FARM_RULES = """\
box: farm
inbound:
  orders:
    - {partner: shop, kind: PURCHASE_ORDER, pipeline: wholesale, stage: review}
  items:
    shop:
      SH-APPLE: {sku: apples-kg}
      SH-PLUMS-5: {sku: plums-kg, unit: kg, factor: 5}
outbound:
  share:
    StockLevelChanged: [shop]
    ContactUpserted: [shop]
  withhold:
    shop: {ContactUpserted: [phone]}
  codes:
    shop: {apples-kg: SH-APPLE}
"""


@pytest.fixture(scope="module")
async def network(settings: Settings, stack: StackInfo, kafka: KafkaAccess
                  ) -> AsyncIterator[LocalNetwork]:
    async with running_network(settings, stack, kafka, NETWORK, "bc",
                               object_store=True) as running:
        conn = await asyncpg.connect(running.dsns["farm"])
        try:
            await apply_rules(conn, FARM_RULES, "farm-rules.yaml", "farm")
        finally:
            await conn.close()
        yield running


def cli(env: dict[str, str], network: LocalNetwork, *args: str
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*boxbus_cli(), *args, "--namespace", network.settings.topic_namespace],
        env=env, capture_output=True, text=True, timeout=120)


async def order_in(network: LocalNetwork, box: str, order_id: str) -> dict[str, Any] | None:
    return next((o for o in (await network.view(box))["orders"]
                 if o["order_id"] == order_id), None)


async def arrived(network: LocalNetwork, box: str, order_id: str) -> dict[str, Any]:
    async def there() -> bool:
        return await order_in(network, box, order_id) is not None
    await network.until(there, what=f"order {order_id} in {box}")
    order = await order_in(network, box, order_id)
    assert order is not None
    return order


async def test_an_order_lands_in_the_suppliers_process_with_its_own_codes(
        network: LocalNetwork) -> None:
    shop = network.boxes["shop"]
    order_id = await shop.place_order("farm", [
        LineSpec("SH-APPLE", Decimal(10), 180, "Apples", "kg"),
        LineSpec("SH-PLUMS-5", Decimal(2), 1450, "Plums, box of 5 kg", "box")])
    order = await arrived(network, "farm", order_id)
    assert (order["status"], order["pipeline"], order["stage"]) == (
        "placed", "wholesale", "review")
    lines = [line for line in (await network.view("farm"))["order_lines"]
             if line["order_id"] == order_id]
    assert [(x["sku"], x["quantity"], x["unit"], x["unit_price_minor"], x["partner_sku"])
            for x in lines] == [("apples-kg", "10", "kg", 180, "SH-APPLE"),
                                ("plums-kg", "10", "kg", 290, "SH-PLUMS-5")]


async def test_an_unmapped_item_makes_the_order_wait_for_a_person_and_a_rule_change_frees_it(
        env_for_cli: dict[str, str], network: LocalNetwork, tmp_path: Path) -> None:
    shop, farm = network.boxes["shop"], network.boxes["farm"]
    order_id = await shop.place_order("farm", [
        LineSpec("SH-APPLE", Decimal(5), 180, "Apples", "kg"),
        LineSpec("SH-PEARS", Decimal(3), 240, "Pears", "kg")])
    order = await arrived(network, "farm", order_id)
    assert order["status"] == "needs_mapping"
    view = await network.view("farm")
    (task,) = [t for t in view["tasks"] if t["order_id"] == order_id]
    assert "SH-PEARS" in task["detail"] and "inbound.items.shop" in task["detail"]
    with pytest.raises(BusinessError, match="needs_mapping"):
        await farm.confirm_order(order_id)

    # A mistake in the new rules is refused with its line and field; nothing changes.
    bad = tmp_path / "bad.yaml"
    bad.write_text(FARM_RULES.replace("SH-PLUMS-5: {sku: plums-kg, unit: kg, factor: 5}",
                                      "SH-PLUMS-5: {sku: plums-kg, unit: kg, factor: -5}"))
    refused = cli(env_for_cli, network, "box", "rules", "apply", str(bad), "--box", "farm")
    assert refused.returncode != 0
    line = bad.read_text().splitlines().index(
        "      SH-PLUMS-5: {sku: plums-kg, unit: kg, factor: -5}") + 1
    assert f"{bad}:{line}: inbound.items.shop.SH-PLUMS-5.factor" in refused.stderr

    # The admin maps the code: the running box takes the new rules, the order goes on.
    good = tmp_path / "rules.yaml"
    good.write_text(FARM_RULES.replace("      SH-APPLE: {sku: apples-kg}\n",
                                       "      SH-APPLE: {sku: apples-kg}\n"
                                       "      SH-PEARS: {sku: pears-kg}\n"))
    applied = cli(env_for_cli, network, "box", "rules", "apply", str(good), "--box", "farm",
                  "--json")
    assert applied.returncode == 0, applied.stderr
    result = json.loads(applied.stdout)
    assert result["changed"] and order_id in result["orders_mapped"]
    freed = await order_in(network, "farm", order_id)
    assert freed and freed["status"] == "placed"
    assert not [t for t in (await network.view("farm"))["tasks"] if t["order_id"] == order_id]
    await farm.confirm_order(order_id)  # a person's work is done: the order flows again
    # The running box's inbox maps the next order with the new rules: no restart.
    next_order = await shop.place_order("farm", [LineSpec("SH-PEARS", Decimal(7), 240)])
    landed = await arrived(network, "farm", next_order)
    assert landed["status"] == "placed"

    shown = cli(env_for_cli, network, "box", "rules", "show", "--box", "farm", "--json")
    assert json.loads(shown.stdout)["version"] >= 2 and "SH-PEARS" in shown.stdout


async def test_invoices_partial_payments_and_a_credit_note_leave_both_sides_agreeing(
        network: LocalNetwork) -> None:
    shop, farm = network.boxes["shop"], network.boxes["farm"]
    first = await shop.place_order("farm", [LineSpec("SH-APPLE", Decimal(100), 180)])
    second = await shop.place_order("farm", [LineSpec("SH-APPLE", Decimal(20), 200)])
    for order_id in (first, second):
        await arrived(network, "farm", order_id)
    invoice_1 = await farm.issue_invoice(first, tax_rate_bp=1000)  # 18,000 + 1,800
    invoice_2 = await farm.issue_invoice(second)  # 4,000

    async def payable(invoice_id: str) -> bool:
        return any(i["invoice_id"] == invoice_id and i["role"] == "payable"
                   for i in (await network.view("shop"))["invoices"])
    await network.until(lambda: payable(invoice_2), what="the invoices as payables in shop")
    await shop.pay(invoice_1, 5_000)
    await shop.pay(invoice_1, 7_500, reference="second instalment")
    await farm.credit_invoice(invoice_2, "the pears were not delivered")
    with pytest.raises(BusinessError, match="credited already"):
        await farm.credit_invoice(invoice_2, "twice")

    def balance(view: dict[str, Any], partner: str, role: str) -> dict[str, Any] | None:
        return next((b for b in view["balances"]
                     if b["counterparty"] == partner and b["role"] == role), None)

    expected = 18_000 + 1_800 + 4_000 - 4_000 - 5_000 - 7_500

    async def agree() -> bool:
        theirs = balance(await network.view("farm"), "shop", "receivable")
        ours = balance(await network.view("shop"), "farm", "payable")
        return bool(theirs and ours and theirs["open_minor"] == ours["open_minor"] == expected
                    and theirs["paid_minor"] == ours["paid_minor"] == 12_500)
    await network.until(agree, what="the same open balance on both sides")
    with pytest.raises(BusinessError, match="positive"):
        await shop.pay(invoice_1, 0)


async def test_stock_and_contacts_reach_only_whom_the_rules_name_and_withheld_fields_never_leave(
        network: LocalNetwork, kafka: KafkaAccess) -> None:
    shop, farm, deli = network.boxes["shop"], network.boxes["farm"], network.boxes["deli"]
    await farm.stock_in("apples-kg", Decimal(500))

    async def seen() -> bool:
        return any(s["sku"] == "SH-APPLE" for s in (await network.view("shop"))["partner_stock"])
    await network.until(seen, what="the farm's stock in shop, in shop's codes")
    stock = next(s for s in (await network.view("shop"))["partner_stock"]
                 if s["sku"] == "SH-APPLE")
    assert stock["supplier"] == "farm" and Decimal(stock["on_hand"]) >= 500

    order_id = await shop.place_order("farm", [LineSpec("SH-APPLE", Decimal(1), 180)])
    await arrived(network, "farm", order_id)
    phone = f"+420 777 {uuid.uuid4().int % 1_000_000:06d}"
    contact_id, sent = await farm.share_contact(order_id, "Olga Novak",
                                                email="olga@farm.example", phone=phone)
    assert sent

    async def contact() -> bool:
        return any(c["contact_id"] == contact_id for c in (await network.view("shop"))["contacts"])
    await network.until(contact, what="the farm's contact person in shop")
    found = next(c for c in (await network.view("shop"))["contacts"]
                 if c["contact_id"] == contact_id)
    assert (found["name"], found["email"], found["phone"], found["order_id"]) == (
        "Olga Novak", "olga@farm.example", None, order_id)
    inbox = await read_topic(kafka, naming.inbox_topic(network.settings.topic_namespace, "shop"))
    assert any(b"Olga Novak" in (r.value or b"") for r in inbox)
    assert not any(phone.encode() in (r.value or b"") for r in inbox)  # never left the farm

    # deli trades with the farm too, but its rules share neither stock nor contacts with it.
    deli_order = await deli.place_order("farm", [LineSpec("apples-kg", Decimal(1), 180)])
    await arrived(network, "farm", deli_order)
    _, sent = await farm.share_contact(deli_order, "Olga Novak", phone=phone)
    assert not sent
    view = await network.view("deli")
    assert view["partner_stock"] == [] and view["contacts"] == []


async def test_a_large_document_travels_by_claim_check_and_a_tampered_one_is_rejected(
        env_for_cli: dict[str, str], network: LocalNetwork, tmp_path: Path) -> None:
    shop, farm = network.boxes["shop"], network.boxes["farm"]
    order_id = await shop.place_order("farm", [LineSpec("SH-APPLE", Decimal(1), 180)])
    await arrived(network, "farm", order_id)
    waybill = os.urandom(2 * 1024 * 1024)
    document_id = await farm.attach_document(order_id, waybill, "waybill.pdf",
                                             document_type=DocumentType.WAYBILL)
    small = b"%PDF-1.4 small contract"
    inline_id = await farm.attach_document(order_id, small, "contract.pdf",
                                           document_type=DocumentType.CONTRACT)

    async def both() -> bool:
        ids = {d["document_id"] for d in (await network.view("shop"))["documents"]}
        return {document_id, inline_id} <= ids
    await network.until(both, what="both documents in shop")
    docs = {d["document_id"]: d for d in (await network.view("shop"))["documents"]}
    assert docs[document_id]["carried"] == "claim-check"
    assert docs[inline_id]["carried"] == "inline"
    out = tmp_path / "waybill.pdf"
    got = cli(env_for_cli, network, "box", "documents", "--box", "shop", "--get",
              document_id, "--out", str(out))
    assert got.returncode == 0, got.stderr
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(waybill).digest()

    # deli trades with the farm, but the document was not addressed to it.
    refused = cli(env_for_cli, network, "box", "documents", "--box", "deli", "--get",
                  document_id, "--out", str(tmp_path / "stolen.pdf"))
    assert refused.returncode != 0 and "has no document" in refused.stderr
    assert not (tmp_path / "stolen.pdf").exists()

    # The object is changed in the store after the sender hashed it: rejected with its reason.
    photo = os.urandom(300 * 1024)
    async with ObjectStore.from_settings(network.settings) as store:
        await store.put(object_key("farm", hashlib.sha256(photo).hexdigest()),
                        os.urandom(300 * 1024))
    tampered = await farm.attach_document(order_id, photo, "photo.jpg", "image/jpeg")

    async def rejected() -> bool:
        return any(r["status"] == "REJECTED" for r in (await network.view("farm"))["receipts"])
    await network.until(rejected, what="shop's rejection of the tampered document")
    receipt = next(r for r in (await network.view("farm"))["receipts"]
                   if r["status"] == "REJECTED")
    assert receipt["from_box"] == "shop"
    assert "does not match its SHA-256" in (receipt["reason"] or "")
    assert tampered not in {d["document_id"] for d in (await network.view("shop"))["documents"]}


async def test_receipts_show_each_event_accepted_rejected_or_refused_with_its_reason(
        env_for_cli: dict[str, str], network: LocalNetwork) -> None:
    shop = network.boxes["shop"]
    order_id = await shop.place_order("farm", [LineSpec("SH-APPLE", Decimal(2), 180)])
    await shop.comment(order_id, "Ring at the back door.")
    # No relationship between shop and deli: the router refuses, and says why.
    stray = await shop.place_order("deli", [LineSpec("cheese", Decimal(1), 900)])

    async def settled() -> bool:
        done = {(r["event_type"], r["state"]) for r in await receipts(env_for_cli, network)}
        return {("boxbus.orders.OrderPlaced", "accepted"),
                ("boxbus.collaboration.CommentAdded", "accepted"),
                ("boxbus.orders.OrderPlaced", "refused")} <= done
    await network.until(settled, what="shop's receipts")
    rows = await receipts(env_for_cli, network)
    placed = next(r for r in rows if r["aggregate_key"] == order_id
                  and r["event_type"] == "boxbus.orders.OrderPlaced")
    assert (placed["recipient"], placed["state"]) == ("farm", "accepted")
    assert placed["sent_at"] and placed["routed_at"]
    refused = next(r for r in rows if r["aggregate_key"] == stray)
    assert refused["state"] == "refused" and refused["recipient"] is None
    assert "deli" in refused["refused_reason"]
    pending = cli(env_for_cli, network, "box", "receipts", "--box", "shop", "--pending",
                  "--json")
    assert pending.returncode == 0, pending.stderr  # nothing overdue
    assert all(r["state"] in ("waiting", "sent", "delivered")
               for r in json.loads(pending.stdout)["receipts"])
    # Receipts are kept until a box forgets the old ones.
    conn = await asyncpg.connect(network.dsns["shop"])
    try:
        assert await purge(conn, timedelta(days=3650)) == 0
        assert await purge(conn, timedelta(microseconds=1)) >= 3
        assert await receipts_of(conn) == []
    finally:
        await conn.close()


async def receipts(env_for_cli: dict[str, str], network: LocalNetwork
                   ) -> list[dict[str, Any]]:
    done = cli(env_for_cli, network, "box", "receipts", "--box", "shop", "--json")
    assert done.returncode in (0, 1), done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)["receipts"]
    return rows


async def publish_as(network: LocalNetwork, box: str, event: EventBase) -> None:
    """An event written straight into a box's outbox, past the reference box's actions: what
    a faulty or hostile connector of that box could send."""
    conn = await asyncpg.connect(network.dsns[box])
    try:
        async with conn.transaction():
            await network.boxes[box].outbox.publish(conn, event)
    finally:
        await conn.close()


def meta_of(box: str, target: str, key: str) -> EventMeta:
    return EventMeta(event_id=str(uuid.uuid4()), source_box=box, region="north",
                     aggregate_key=key, occurred_at=datetime.now(UTC), target_box=target,
                     correlation_id=key)


async def test_a_related_box_cannot_forge_receipts_nor_point_a_document_outside_the_store(
        network: LocalNetwork, kafka: KafkaAccess) -> None:
    shop = network.boxes["shop"]
    order_id = await shop.place_order("mill", [LineSpec("flour-kg", Decimal(50), 90)])

    async def shops(state: str) -> dict[str, Any] | None:
        conn = await asyncpg.connect(network.dsns["shop"])
        try:
            rows = await receipts_of(conn)
        finally:
            await conn.close()
        return next((r for r in rows if r["aggregate_key"] == order_id
                     and r["state"] == state), None)

    async def answered() -> bool:
        return await shops("accepted") is not None
    await network.until(answered, what="mill's answer in shop's receipts")
    accepted = await shops("accepted")
    assert accepted is not None and accepted["recipient"] == "mill"

    # farm trades with shop, and claims shop's order to mill was rejected: refused.
    await publish_as(network, "farm", DeliveryReceipt(
        meta=meta_of("farm", "shop", order_id), receipt_for_event_id=accepted["event_id"],
        receipt_for_type="boxbus.orders.OrderPlaced", status=ReceiptStatus.REJECTED,
        reason="forged", processed_at=datetime.now(UTC)))
    # ... and sends a document whose link points somewhere else than the object store.
    farm_order = await shop.place_order("farm", [LineSpec("SH-APPLE", Decimal(1), 180)])
    await arrived(network, "farm", farm_order)
    digest = hashlib.sha256(b"secret").hexdigest()
    await publish_as(network, "farm", DocumentAttached(
        meta=meta_of("farm", "shop", farm_order), subject_id=farm_order, document_id="doc-x",
        document_type=DocumentType.OTHER, file_name="x.pdf", media_type="application/pdf",
        sha256=digest, size_bytes=6, content_ref="http://127.0.0.1:9/latest/meta-data"))

    dlq = naming.dlq_topic(naming.inbox_topic(network.settings.topic_namespace, "shop"))

    async def refused() -> list[str]:
        return [dict(r.headers).get("dlq_reason", b"").decode()
                for r in await read_topic(kafka, dlq)]

    async def both() -> bool:
        reasons = await refused()
        return (any("addressed to 'mill'" in r for r in reasons)
                and any("does not point to the network's object store" in r for r in reasons))
    await network.until(both, what="shop refusing the forged receipt and the outside link")
    still = await shops("accepted")
    assert still is not None and still["recipient"] == "mill"
    assert await shops("rejected") is None

    async def farm_told() -> bool:
        return any(r["status"] == "REJECTED" and "object store" in (r["reason"] or "")
                   for r in (await network.view("farm"))["receipts"])
    await network.until(farm_told, what="farm's receipt of the refused document")
