"""A box's view of its business, as data (``--json``) or as text for people."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

import asyncpg
from rich.console import Group
from rich.table import Table
from rich.text import Text


async def box_view(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)

    async def rows(query: str) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(query)]

    try:
        orders = await rows(
            "SELECT o.order_id, o.role, o.counterparty, o.status, o.revision, o.total_minor, "
            "o.currency, o.pipeline, o.stage, (SELECT count(*) FROM order_lines l WHERE "
            "l.order_id = o.order_id) AS lines FROM orders o ORDER BY o.created_at, o.order_id")
        order_lines = await rows(
            "SELECT order_id, line_no, sku, quantity, unit, unit_price_minor, partner_sku, "
            "partner_quantity, partner_unit FROM order_lines ORDER BY order_id, line_no")
        tasks = await rows(
            "SELECT task_id, order_id, kind, detail FROM tasks WHERE done_at IS NULL "
            "ORDER BY task_id")
        invoices = await rows(
            "SELECT i.invoice_id, i.order_id, i.role, i.counterparty, i.number, i.total_minor, "
            "i.currency, coalesce((SELECT sum(amount_minor) FROM payments p WHERE "
            "p.invoice_id = i.invoice_id), 0)::bigint AS paid_minor FROM invoices i "
            "ORDER BY i.created_at, i.invoice_id")
        balances = await rows(
            "SELECT counterparty, role, currency, invoices, invoiced_minor, paid_minor, "
            "open_minor FROM balances ORDER BY counterparty, role, currency")
        partner_stock = await rows(
            "SELECT supplier, warehouse, sku, unit, on_hand, reserved, in_transit, "
            "on_hand - reserved AS available FROM partner_stock ORDER BY supplier, sku")
        contacts = await rows(
            "SELECT contact_id, owner_box, order_id, name, email, phone, company FROM contacts "
            "ORDER BY changed_at, contact_id")
        documents = await rows(
            "SELECT document_id, direction, order_id, counterparty, document_type, file_name, "
            "size_bytes, carried, sha256 FROM documents ORDER BY at, document_id")
        comments = await rows(
            "SELECT order_id, comment_id, origin_box, author, text FROM comments "
            "ORDER BY written_at, seq")
        stock = await rows(
            "SELECT warehouse, sku, quantity FROM stock ORDER BY warehouse, sku")
        transit = await rows(
            "SELECT shipment_id, order_id, supplier, sku, quantity, unit FROM goods_in_transit "
            "ORDER BY dispatched_at, shipment_id, sku")
        shipments = await rows(
            "SELECT shipment_id, order_id, direction, counterparty, status FROM shipments "
            "ORDER BY dispatched_at")
        price_lists = await rows(
            "SELECT price_list_id, from_box, entries FROM price_lists ORDER BY valid_from")
        reports = await rows(
            "SELECT report_id, branch_box, period_start, period_end, orders_count, "
            "revenue_minor, stock_value_minor, currency "
            "FROM branch_reports ORDER BY period_end, branch_box")
        observed = await rows(
            "SELECT region, count(*) AS orders, sum(total_minor) AS total_minor, currency "
            "FROM observed_orders GROUP BY region, currency ORDER BY region")
        # What became of what this box sent: the answers of its recipients, and what the
        # router refused (the SDK's business receipts).
        receipts = await rows(
            "SELECT t.event_id, t.recipient AS from_box, coalesce(s.event_type, '') AS "
            "event_type, upper(t.status) AS status, t.reason FROM boxbus_sent_to t LEFT JOIN "
            "boxbus_sent s USING (event_id) WHERE t.status <> 'delivered' UNION ALL "
            "SELECT event_id, 'router', event_type, 'REFUSED', refused_reason FROM boxbus_sent "
            "WHERE refused_code IS NOT NULL ORDER BY 1, 2")
    finally:
        await conn.close()
    for row in stock + transit + order_lines:
        row["quantity"] = _decimal(row["quantity"])
    for row in order_lines:
        row["partner_quantity"] = _decimal(row["partner_quantity"])
    for row in partner_stock:
        for name in ("on_hand", "reserved", "in_transit", "available"):
            row[name] = _decimal(row[name])
    return {"orders": orders, "order_lines": order_lines, "tasks": tasks,
            "invoices": invoices, "balances": balances, "partner_stock": partner_stock,
            "contacts": contacts, "documents": documents, "comments": comments, "stock": stock,
            "goods_in_transit": transit, "shipments": shipments, "price_lists": price_lists,
            "branch_reports": reports, "network_orders": observed, "receipts": receipts}


def _decimal(value: Any) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _money(minor: int, currency: str) -> str:
    return f"{minor / 100:,.2f} {currency}"


def _period(report: dict[str, Any]) -> str:
    """A report's period: one day as its date, anything else as its two ends."""
    start: datetime = report["period_start"]
    end: datetime = report["period_end"]
    if end - start == timedelta(days=1) and start.time() == time.min:
        return start.date().isoformat()
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}"


def render_view(box_id: str, view: dict[str, Any]) -> Group:
    parts: list[Any] = [Text(f"box {box_id}", style="bold")]
    if view["orders"]:
        table = Table("order", "role", "with", "status", "process", "rev", "lines", "total",
                      title="orders", title_justify="left")
        for o in view["orders"]:
            process = f"{o['pipeline']}/{o['stage']}" if o["stage"] else o["pipeline"]
            table.add_row(o["order_id"], o["role"], o["counterparty"], o["status"], process,
                          str(o["revision"]), str(o["lines"]),
                          _money(o["total_minor"], o["currency"]))
        parts.append(table)
    if view["tasks"]:
        table = Table("order", "task", title="tasks for a person", title_justify="left")
        for t in view["tasks"]:
            table.add_row(t["order_id"], t["detail"])
        parts.append(table)
    if view["balances"]:
        table = Table("partner", "side", "invoices", "invoiced", "paid", "open",
                      title="open balances", title_justify="left")
        for b in view["balances"]:
            table.add_row(b["counterparty"], "owed to us" if b["role"] == "receivable"
                          else "we owe", str(b["invoices"]),
                          _money(b["invoiced_minor"], b["currency"]),
                          _money(b["paid_minor"], b["currency"]),
                          _money(b["open_minor"], b["currency"]))
        parts.append(table)
    if view["partner_stock"]:
        table = Table("supplier", "sku", "available", "on hand", "reserved", "in transit",
                      title="suppliers' stock", title_justify="left")
        for p in view["partner_stock"]:
            table.add_row(p["supplier"], p["sku"], f"{p['available']} {p['unit']}",
                          p["on_hand"], p["reserved"], p["in_transit"])
        parts.append(table)
    if view["documents"]:
        table = Table("document", "order", "direction", "with", "file", "size", "carried",
                      title="documents", title_justify="left")
        for d in view["documents"]:
            table.add_row(d["document_id"], d["order_id"], d["direction"], d["counterparty"],
                          d["file_name"], f"{d['size_bytes']:,} B", d["carried"])
        parts.append(table)
    if view["contacts"]:
        table = Table("contact", "of", "order", "name", "e-mail", "phone",
                      title="contacts", title_justify="left")
        for c in view["contacts"]:
            table.add_row(c["contact_id"], c["owner_box"], c["order_id"] or "", c["name"],
                          c["email"] or "", c["phone"] or "")
        parts.append(table)
    if view["comments"]:
        table = Table("order", "from", "comment", title="comments", title_justify="left")
        for c in view["comments"]:
            table.add_row(c["order_id"], c["origin_box"], c["text"])
        parts.append(table)
    refused = [r for r in view.get("receipts", ()) if r["status"] != "ACCEPTED"]
    if refused:
        table = Table("event", "type", "refused by", "why", title="refused or undeliverable",
                      title_justify="left")
        for r in refused:
            table.add_row(r["event_id"], r["event_type"].rsplit(".", 1)[-1], r["from_box"],
                          r["reason"] or "")
        parts.append(table)
    if view["goods_in_transit"]:
        table = Table("shipment", "order", "supplier", "sku", "quantity",
                      title="goods in transit", title_justify="left")
        for g in view["goods_in_transit"]:
            table.add_row(g["shipment_id"], g["order_id"], g["supplier"], g["sku"],
                          f"{g['quantity']} {g['unit']}")
        parts.append(table)
    if view["stock"]:
        table = Table("warehouse", "sku", "quantity", title="stock", title_justify="left")
        for s in view["stock"]:
            table.add_row(s["warehouse"], s["sku"], s["quantity"])
        parts.append(table)
    if view["price_lists"]:
        table = Table("price list", "from", "entries", title="price lists",
                      title_justify="left")
        for p in view["price_lists"]:
            table.add_row(p["price_list_id"], p["from_box"], str(p["entries"]))
        parts.append(table)
    if view["branch_reports"]:
        table = Table("report", "branch", "period", "orders", "revenue", "stock value",
                      title="branch reports", title_justify="left")
        for r in view["branch_reports"]:
            table.add_row(r["report_id"], r["branch_box"], _period(r), str(r["orders_count"]),
                          _money(r["revenue_minor"], r["currency"]),
                          _money(r["stock_value_minor"], r["currency"]))
        parts.append(table)
    if view["network_orders"]:
        table = Table("region", "orders", "total", title="orders seen in the network",
                      title_justify="left")
        for n in view["network_orders"]:
            table.add_row(n["region"], str(n["orders"]), _money(n["total_minor"], n["currency"]))
        parts.append(table)
    if len(parts) == 1:
        parts.append(Text("  (nothing yet)"))
    return Group(*parts)
