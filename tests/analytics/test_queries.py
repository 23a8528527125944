"""The named queries on a real analytics database filled by the aggregator from a small
reference week: the numbers agree with what the week's generator knows it sent (orders,
revenue, branch reports, purchase orders), the command line and the HTTP API answer the same,
and wrong input gets a clear error."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.analytics.conftest import Analytics
from tests.conftest import boxbus_cli

pytestmark = pytest.mark.stack

AT = "2026-12-01T00:00:00+00:00"  # receivables' ageing as of a fixed moment


def cli(analytics: Analytics, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*boxbus_cli(), "analytics", "query", *args, "--database-url",
                           analytics.dsn], env=env, capture_output=True, text=True, timeout=60)


async def api(server: str, name: str, **params: Any) -> httpx.Response:
    # (Asynchronous: the server runs on this test's event loop.)
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(f"{server}/api/{name}", params=params)


async def test_sales_and_branch_reports_equal_what_the_week_sent(
    analytics: Analytics, server: str,
) -> None:
    orders, revenue = Counter[str](), Counter[str]()
    for (branch, _day), (count, amount) in analytics.week.daily.items():
        orders[branch] += count
        revenue[branch] += amount
    rows = (await api(server, "sales", by="branch")).json()["rows"]
    assert {r["branch"]: r["orders"] for r in rows} == dict(orders)
    assert {r["branch"]: r["revenue_minor"] for r in rows} == dict(revenue)
    # Each branch's daily report (the generator's own tally) equals the aggregates' day.
    reports = (await api(server, "branch-reports")).json()["rows"]
    assert len(reports) == 35  # five branches, seven days
    assert all((r["reported_orders"], r["reported_revenue_minor"]) ==
               (r["aggregated_orders"], r["aggregated_revenue_minor"]) for r in reports), [
        r for r in reports if r["reported_orders"] != r["aggregated_orders"]][:3]
    # Hours add up to days, and a time range narrows it.
    by_hour = (await api(server, "sales", by="hour")).json()["rows"]
    by_day = (await api(server, "sales", by="day")).json()["rows"]
    assert sum(r["orders"] for r in by_hour) == sum(r["orders"] for r in by_day) \
        == sum(orders.values())
    monday = (await api(server, "sales", by="day",
                        **{"from": "2026-11-16", "to": "2026-11-17"})).json()["rows"]
    assert [r["day"][:10] for r in monday] == ["2026-11-16"]


async def test_purchase_orders_stock_and_receivables(analytics: Analytics, server: str) -> None:
    (funnel,) = (await api(server, "funnel")).json()["rows"]
    assert funnel["placed"] == analytics.week.purchase_orders
    assert funnel["placed"] >= funnel["confirmed"] >= funnel["dispatched"] >= funnel["received"]
    assert funnel["received"] > 0 and 0.9 < funnel["fill_rate"] <= 1
    assert funnel["confirm_p50_h"] <= funnel["confirm_p90_h"] <= funnel["receive_p90_h"]
    low = (await api(server, "low-stock", below=50)).json()["rows"]
    assert low and all(r["available"] < 50 for r in low)
    assert [r["available"] for r in low] == sorted(r["available"] for r in low)
    stock = (await api(server, "stock", by="region")).json()["rows"]
    lows = (await api(server, "stock", by="region", below=50)).json()["rows"]
    assert sum(r["low"] for r in lows) == len(low)
    assert {r["region"] for r in stock} == {"north", "south", "east", "west", "centre"}
    owed = (await api(server, "receivables", at=AT)).json()["rows"]
    assert owed
    # As of a moment before the week: nothing was invoiced yet.
    assert (await api(server, "receivables", at="2026-11-01")).json()["rows"] == []
    for r in owed:
        assert r["invoiced_minor"] - r["paid_minor"] == r["open_minor"]
        assert r["open_minor"] == (r["not_due_minor"] + r["overdue_1_30_minor"]
                                   + r["overdue_31_60_minor"] + r["overdue_61_90_minor"]
                                   + r["overdue_90_plus_minor"])


@pytest.mark.parametrize(("name", "args"), [
    ("sales", {"by": "region,day"}),
    ("products", {"by": "sku", "limit": "5"}),
    ("funnel", {"by": "buyer"}),
    ("receivables", {"by": "supplier", "at": AT}),
    ("events", {"by": "type"}),
    ("low-stock", {"below": "199", "region": "north"}),
    ("positions", {}),
    ("products", {"by": "day", "from": "2026-11-17T13:00", "to": "2026-11-18T01:00"}),
])
async def test_the_command_line_and_http_answer_the_same(
    analytics: Analytics, server: str, env_for_cli: dict[str, str], name: str,
    args: dict[str, str],
) -> None:
    flags = [a for k, v in args.items() for a in (f"--{k}", v)]
    done = cli(analytics, env_for_cli, name, *flags, "--json")
    assert done.returncode == 0, done.stderr
    by_cli = json.loads(done.stdout)
    by_http = (await api(server, name, **args)).json()
    assert by_cli == by_http
    assert by_cli["rows"], by_cli


async def test_wrong_input_is_told_what_to_do(
    analytics: Analytics, server: str, env_for_cli: dict[str, str],
) -> None:
    done = cli(analytics, env_for_cli, "salez")
    assert done.returncode == 2 and "no analytics query named 'salez'" in done.stderr
    assert "sales, products, funnel" in done.stderr
    done = cli(analytics, env_for_cli, "sales", "--by", "planet")
    assert done.returncode == 2 and "cannot group by planet" in done.stderr
    assert "region, branch, store, hour, day" in done.stderr
    done = cli(analytics, env_for_cli, "sales", "--from", "last tuesday")
    assert done.returncode == 2 and "--from 'last tuesday' is not a date" in done.stderr
    missing = subprocess.run([*boxbus_cli(), "analytics", "query", "sales", "--database-url",
                              analytics.dsn.rsplit("/", 1)[0] + "/no_such_db"],
                             env=env_for_cli, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    response = await api(server, "salez")
    assert response.status_code == 404 and "sales" in response.json()["hint"]
    response = await api(server, "sales", by="planet")
    assert response.status_code == 400 and "cannot group by planet" in response.json()["error"]
    response = await api(server, "sales", limit="many")
    assert response.status_code == 400
    response = await api(server, "sales", limit="-1")
    assert response.status_code == 400 and "1 to 100000" in response.json()["hint"]
