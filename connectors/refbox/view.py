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
            "o.currency, (SELECT count(*) FROM order_lines l WHERE l.order_id = o.order_id) "
            "AS lines FROM orders o ORDER BY o.created_at, o.order_id")
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
        receipts = await rows(
            "SELECT event_id, from_box, event_type, status, reason FROM receipts "
            "ORDER BY processed_at, event_id")
    finally:
        await conn.close()
    for row in stock + transit:
        row["quantity"] = format(row["quantity"].normalize(), "f")
    return {"orders": orders, "comments": comments, "stock": stock,
            "goods_in_transit": transit, "shipments": shipments, "price_lists": price_lists,
            "branch_reports": reports, "network_orders": observed, "receipts": receipts}


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
        table = Table("order", "role", "with", "status", "rev", "lines", "total",
                      title="orders", title_justify="left")
        for o in view["orders"]:
            table.add_row(o["order_id"], o["role"], o["counterparty"], o["status"],
                          str(o["revision"]), str(o["lines"]),
                          _money(o["total_minor"], o["currency"]))
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
