"""The dashboard in a real browser (Debian's Chromium driven by Playwright): it loads with
every non-local request blocked and no console error, its charts draw, its totals equal the
database's, and an order published while it is open appears without a reload within 2 s."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from playwright.async_api import Page, Request, Route, async_playwright

from bus import naming
from bus.events.models import Money, OrderKind, OrderPlaced
from bus.examples import example
from bus.kafka import KafkaAccess
from bus.producer import EventProducer
from processors.aggregator import Aggregator
from tests.analytics.conftest import Analytics

pytestmark = pytest.mark.stack

CHROMIUM = os.environ.get("BOXBUS_CHROMIUM", "/usr/bin/chromium")


async def database_totals(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT sum(orders)::bigint AS o, sum(revenue_minor)::bigint "
                                  "AS r FROM agg_sales_hourly")
    finally:
        await conn.close()
    assert row is not None
    return int(row["o"]), int(row["r"])


async def shown_orders(page: Page) -> int:
    value = await page.get_attribute("[data-testid=total-orders]", "data-value")
    return int(value) if value else -1


async def until(page: Page, expression: str, seconds: float) -> None:
    """Poll an expression in the page (Playwright's wait_for_function evaluates strings with
    eval, which the dashboard's Content-Security-Policy rightly refuses)."""
    async with asyncio.timeout(seconds):
        while not await page.evaluate(expression):
            await asyncio.sleep(0.05)


def a_new_order(analytics: Analytics) -> OrderPlaced:
    base = example("boxbus.orders.OrderPlaced")
    assert isinstance(base, OrderPlaced)
    order_id = f"so-live-{uuid.uuid4().hex[:8]}"
    last_hour = analytics.week.end.replace(hour=20)
    return base.model_copy(update={
        "order_id": order_id, "kind": OrderKind.STORE_ORDER, "buyer_box": "branch-north",
        "store_id": "store-north-01", "supplier_box": None,
        "total": Money(amount_minor=4321, currency="EUR"),
        "meta": base.meta.model_copy(update={
            "event_id": str(uuid.uuid4()), "source_box": "branch-north", "region": "north",
            "aggregate_key": order_id, "correlation_id": order_id, "target_box": None,
            "occurred_at": last_hour})})


async def test_the_dashboard_draws_the_databases_numbers_and_updates_live(
    analytics: Analytics, server: str, kafka: KafkaAccess, tmp_path: Path,
) -> None:
    assert Path(CHROMIUM).exists(), (
        f"no Chromium at {CHROMIUM}: `make setup` installs Debian's package (apt-get install "
        "chromium), or set BOXBUS_CHROMIUM")
    blocked: list[str] = []
    problems: list[str] = []

    async def only_local(route: Route, request: Request) -> None:
        if urlsplit(request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            blocked.append(request.url)
            await route.abort()

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1100})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            await page.route("**/*", only_local)
            await page.goto(server + "/")
            await until(page, "window.boxbus && window.boxbus.refreshes > 0", 15)
            await page.wait_for_selector("#live[data-state=live]", timeout=10_000)
            # The charts drew, with data.
            drawn = await page.evaluate(
                "Object.fromEntries(Object.entries(window.boxbus.charts).map(([k, c]) => "
                "[k, c.data.datasets[0].data.length]))")
            assert set(drawn) == {"chart-hourly", "chart-regions", "chart-products",
                                  "chart-funnel"} and all(drawn.values()), drawn
            painted = await page.evaluate(
                "(() => { const c = document.getElementById('chart-hourly'); "
                "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; "
                "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; })()")
            assert painted > 1000, painted
            # The totals shown are the database's.
            orders, revenue = await database_totals(analytics.dsn)
            assert await shown_orders(page) == orders
            assert await page.get_attribute("[data-testid=total-revenue]", "data-value") \
                == str(revenue)
            await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

            # A new order while the page is open: the aggregator commits it, the server
            # tells the page, the page shows it, no reload.
            aggregator = Aggregator(analytics.settings, kafka, analytics.dsn, analytics.serde)
            stop = asyncio.Event()
            task = asyncio.create_task(aggregator.run(stop))
            try:
                north = naming.region_topic(analytics.settings.topic_namespace, "north")
                async with asyncio.timeout(30):
                    while not any(tp.topic == north for tp in aggregator.claimed):
                        await asyncio.sleep(0.05)  # north's partitions claimed: it reads them
                loads = await page.evaluate("performance.getEntriesByType('navigation').length")
                async with EventProducer(analytics.settings, kafka, analytics.serde) as producer:
                    published = time.monotonic()
                    await producer.publish(a_new_order(analytics), north)
                await until(page, "document.querySelector('[data-testid=total-orders]')"
                            f".dataset.value == '{orders + 1}'", 5)
                took = time.monotonic() - published
                assert took < 2.0, f"the new order took {took:.2f} s to appear"
                assert await page.evaluate(
                    "performance.getEntriesByType('navigation').length") == loads
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
        finally:
            await browser.close()
    assert not problems, problems
    assert not blocked, f"the page asked for something outside the machine: {blocked}"
