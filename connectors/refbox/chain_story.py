"""The demo's chapter on the whole business chain between a buyer and a supplier in two regions:
the supplier's admin sets its box's rules (no code), the buyer orders in its own item codes and
the order lands in the supplier's chosen process in the supplier's codes, the buyer sees the
supplier's stock, a 2 MB waybill travels by claim check and the buyer opens it, an invoice and
a partial payment leave both sides with the same open balance, and the receipts show every
event accepted. What a person can open is written into ``out``."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from bus.events.models import DocumentType
from bus.resources import deploy_dir
from connectors.box.rules import apply_rules
from connectors.box.tracking import receipts, summary
from connectors.refbox.actions import LineSpec
from connectors.refbox.network import LocalNetwork

Step = Callable[..., Awaitable[bool]]


def supplier_rules(supplier: str) -> str:
    """The supplier's rules as its admin wrote them (deploy/rules/<supplier>.yaml)."""
    return (deploy_dir() / "rules" / f"{supplier}.yaml").read_text()


def waybill_pdf(order_id: str, size: int = 2 * 1024 * 1024) -> bytes:
    """A real PDF of about ``size`` bytes: the waybill's text and a scanned page (noise, so
    that it does not compress)."""
    from PIL import Image
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen.canvas import Canvas

    side = int((size / 3) ** 0.5)
    scan = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=A4)
    canvas.setFont("Helvetica-Bold", 16)
    canvas.drawString(72, 780, f"Waybill for order {order_id}")
    canvas.setFont("Helvetica", 10)
    canvas.drawString(72, 760, "Carrier: FreshTruck; the signed delivery note is scanned below.")
    canvas.drawImage(ImageReader(scan), 72, 200, width=450, height=450)
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()


async def play_chain(network: LocalNetwork, step: Step, facts: dict[str, Any], *, buyer: str,
                     supplier: str, out: Path) -> None:
    shop, farm = network.boxes[buyer], network.boxes[supplier]
    chain: dict[str, Any] = {}
    facts["chain"] = chain
    out.mkdir(parents=True, exist_ok=True)

    async def view(box: str) -> dict[str, Any]:
        return await network.view(box)

    async def order_at(box: str) -> dict[str, Any] | None:
        return next((o for o in (await view(box))["orders"]
                     if o["order_id"] == chain.get("order")), None)

    async def rules_and_order() -> str:
        conn = await asyncpg.connect(network.dsns[supplier])
        try:
            version, _ = await apply_rules(conn, supplier_rules(supplier),
                                           f"{supplier}-rules.yaml", supplier, "admin")
        finally:
            await conn.close()
        (out / f"{supplier}-rules.yaml").write_text(supplier_rules(supplier))
        for sku, quantity, unit in (("apples-kg", 900, "kg"), ("pears-kg", 300, "kg"),
                                    ("plums-box", 40, "box")):
            await farm.stock_in(sku, Decimal(quantity), unit=unit)
        chain["order"] = await shop.place_order(supplier, [
            LineSpec("SB-APPLE", Decimal(150), 175, "Apples", "kg"),
            LineSpec("SB-PEAR-6", Decimal(10), 1500, "Pears, crate of 6 kg", "crate"),
            LineSpec("SB-PLUM-5", Decimal(8), 1400, "Plums, box of 5 kg", "box")],
            notes="for the weekend market")
        return (f"{supplier}'s admin applied its rules (version {version}); {buyer} ordered "
                f"{chain['order']} in its own item codes")

    async def landed() -> bool:
        order = await order_at(supplier)
        return order is not None and order["status"] == "placed"

    async def process() -> str:
        order = await order_at(supplier)
        assert order is not None
        lines = [x for x in (await view(supplier))["order_lines"]
                 if x["order_id"] == chain["order"]]
        chain["process"] = f"{order['pipeline']}/{order['stage']}"
        chain["lines"] = [f"{x['partner_sku']} {x['partner_quantity']} {x['partner_unit']} -> "
                          f"{x['sku']} {x['quantity']} {x['unit']}" for x in lines]
        return f"{supplier} shows it in {chain['process']}: " + "; ".join(chain["lines"])

    await step(f"{buyer}'s order lands in {supplier}'s chosen process, in its own codes",
               rules_and_order, landed, process)

    async def stock_seen() -> bool:
        return len((await view(buyer))["partner_stock"]) >= 3

    async def stock() -> str:
        rows = (await view(buyer))["partner_stock"]
        chain["stock"] = {r["sku"]: f"{r['available']} {r['unit']}" for r in rows}
        return f"{buyer} sees what it can order from {supplier}: " + ", ".join(
            f"{sku} {available}" for sku, available in sorted(chain["stock"].items()))

    async def share() -> str:
        sent = await farm.share_stock()
        return f"{supplier} shared its stock ({sent} levels, only with {buyer}: its rules)"

    await step(f"{buyer} sees {supplier}'s stock", share, stock_seen, stock)

    async def waybill() -> str:
        await farm.confirm_order(chain["order"])
        content = waybill_pdf(chain["order"])
        chain["waybill_sha256"] = hashlib.sha256(content).hexdigest()
        chain["waybill"] = await farm.attach_document(
            chain["order"], content, "waybill.pdf", document_type=DocumentType.WAYBILL)
        return (f"{supplier} confirmed and attached a {len(content) / 1_048_576:.1f} MB "
                "waybill (by claim check: the bytes in the object store, a link in the event)")

    async def opened() -> bool:
        return any(d["document_id"] == chain.get("waybill")
                   for d in (await view(buyer))["documents"])

    async def read_waybill() -> str:
        conn = await asyncpg.connect(network.dsns[buyer])
        try:
            content = await conn.fetchval("SELECT content FROM documents WHERE document_id = $1"
                                          " AND direction = 'incoming'", chain["waybill"])
        finally:
            await conn.close()
        path = out / "waybill.pdf"
        path.write_bytes(content)
        same = hashlib.sha256(content).hexdigest() == chain["waybill_sha256"]
        chain["waybill_file"] = str(path)
        return (f"{buyer} fetched and checked it (SHA-256 {'matches' if same else 'DIFFERS'}),"
                f" opened as {path}")

    await step("a 2 MB waybill travels by claim check and the buyer opens it", waybill,
               opened, read_waybill)

    async def bill() -> str:
        chain["invoice"] = await farm.issue_invoice(chain["order"], tax_rate_bp=1000)
        return f"{supplier} issued invoice {chain['invoice']}"

    async def payable() -> bool:
        return any(i["invoice_id"] == chain.get("invoice")
                   for i in (await view(buyer))["invoices"])

    async def pay() -> str:
        total = next(i["total_minor"] for i in (await view(buyer))["invoices"]
                     if i["invoice_id"] == chain["invoice"])
        await shop.pay(chain["invoice"], total // 2, reference="first half")
        chain["paid"] = total // 2
        return f"{buyer} paid half of it ({total // 200:.2f} EUR)"

    await step(f"{supplier}'s invoice becomes a payable in {buyer}'s box", bill, payable)

    def open_of(rows: list[dict[str, Any]], partner: str, role: str) -> int | None:
        return next((b["open_minor"] for b in rows
                     if b["counterparty"] == partner and b["role"] == role), None)

    async def agree() -> bool:
        rows = (await view(supplier))["balances"]
        theirs = open_of(rows, buyer, "receivable")
        ours = open_of((await view(buyer))["balances"], supplier, "payable")
        paid = next((b["paid_minor"] for b in rows if b["counterparty"] == buyer), None)
        return theirs is not None and theirs == ours and paid == chain.get("paid")

    async def balances() -> str:
        chain["open_minor"] = open_of((await view(buyer))["balances"], supplier, "payable")
        return (f"both sides show {chain['open_minor'] / 100:,.2f} EUR open "
                f"({supplier}: owed by {buyer}; {buyer}: owed to {supplier})")

    await step("the payment leaves both sides with the same open balance", pay, agree,
               balances)

    async def nothing() -> str:
        return f"{buyer} and {supplier} look at their receipts"

    async def all_accepted() -> bool:
        counts: dict[str, dict[str, int]] = {}
        for box in (buyer, supplier):
            conn = await asyncpg.connect(network.dsns[box])
            try:
                rows = await receipts(conn)
            finally:
                await conn.close()
            counts[box] = summary(r for r in rows if r["recipient"] in (buyer, supplier))
        chain["receipts"] = counts
        return all(c["accepted"] > 0 and c["delivered"] == c["sent"] == c["waiting"] == 0
                   and c["rejected"] == 0 for c in counts.values())

    async def accepted() -> str:
        return "; ".join(f"{box}: {c['accepted']} event(s) sent to the other, all accepted"
                         for box, c in chain["receipts"].items())

    await step("the receipts show every event accepted by the other side", nothing,
               all_accepted, accepted)
