"""``boxbus demo``: the main job on the embedded local stack.

It brings the stack up, applies the sample network (``deploy/topology/demo.yaml``: a head
office with its internal systems and analytics, branches in three regions, suppliers, a partner
without a box) under a namespace of its own, runs a reference box (its database, relay and
inbox) per box and the router, plays the story of :mod:`connectors.refbox.scenario` (an order
becoming a sales order, comments both ways, a shipment as goods in transit, the receipt, mail
to a partner, a price list to the branches and their reports, bad input), and shows what each
box sees.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.rule import Rule

from boxbus.cli.context import serde_for, service_access, settings_from_env
from boxbus.cli.dev import render
from boxbus.cli.output import console, console_err, print_json
from bus.devstack import LocalStack, StackInfo
from bus.errors import ComponentFailed
from bus.log import configure_logging
from bus.resources import deploy_dir
from bus.serde import EventSerde
from bus.settings import Settings
from bus.topology import load_topology

TOPOLOGY = deploy_dir() / "topology" / "demo.yaml"
SHOWN = ("north-branch", "fresh-farm", "hq", "south-branch", "hq-analytics")


# The head office's internal systems in the demo network (the rest are reference boxes).
SYSTEMS = {"hq-sales": "sales", "hq-delivery": "delivery", "hq-billing": "billing"}

def demo(
    topology: Annotated[Path, typer.Option(help="The network to run.")] = TOPOLOGY,
    stop: Annotated[bool, typer.Option("--down", help="Stop the stack afterwards.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object for programs.")] = False,
) -> None:
    """Run the sample network on the local stack and show each box's view of the flows."""
    from boxbus.cli.mailer import signing_key
    from connectors.mail.service import Endpoint
    from connectors.refbox.mail_story import MailSetup
    from connectors.refbox.network import LocalNetwork
    from connectors.refbox.scenario import play
    from connectors.refbox.view import render_view

    settings = settings_from_env()
    if "BOXBUS_LOG_LEVEL" not in os.environ:  # the story is the output; warnings stay visible
        configure_logging(settings.log_format, "WARNING")
    network_file = load_topology(topology)
    stack = LocalStack(settings)

    def say(text: str) -> None:
        if not json_out:
            console_err.print(text)

    say("starting the local stack (what already runs is reused) ...")
    info = asyncio.run(stack.up())
    if not json_out:
        render(info)
    if not (info.kafka_bootstrap and info.schema_registry_url and info.database_url):
        raise ComponentFailed("this stack lacks Kafka, the registry or PostgreSQL",
                              hint="run `boxbus dev up` without --only")
    namespace = f"demo-{uuid.uuid4().hex[:6]}"
    # The stack's object store carries the documents too large to ride in an event.
    run_settings = info.object_store_settings(
        settings.model_copy(update={"topic_namespace": namespace}))
    say(f"applying {topology.name} as namespace {namespace}; starting "
        f"{len(network_file.boxes)} boxes and the router ...")
    serde = serde_for(settings, info.schema_registry_url)

    replies_port, http_port = _free_port(2525), _free_port(8025)
    run_settings = run_settings.model_copy(update={
        "mail_public_url": f"http://127.0.0.1:{http_port}"})
    out = Path(settings.run_dir) / "demo" / namespace

    async def run() -> dict[str, Any]:
        kafka = info.kafka_access(run_settings)
        async with LocalNetwork(run_settings, kafka, info.database_url or "", serde,
                                network_file, systems=SYSTEMS) as network:
            mail = None
            if info.smtp.host and info.smtp.port and info.smtp.maildir:
                key = signing_key(run_settings)
                await network.add_mailer(key=key, smtp_host=info.smtp.host,
                                         smtp_port=info.smtp.port,
                                         replies=Endpoint("127.0.0.1", replies_port),
                                         http=Endpoint("127.0.0.1", http_port))
                mail = MailSetup(key, info.smtp.maildir, out,
                                 (info.smtp.host, info.smtp.port))
            story = await play(network, say=say, mail=mail, out=out)
            views = {box: await network.view(box) for box in network.boxes}
        return {"stack": info.model_dump(mode="json"), "namespace": namespace, "ok": story.ok,
                "steps": [vars(s) for s in story.steps], "facts": story.facts,
                "views": views}

    result = asyncio.run(run())
    if result["ok"]:
        say("the aggregator folds the region topics into the analytics database; the "
            "dashboard starts ...")
        result["analytics"] = _analytics(stack, run_settings, info, serde,
                                         sorted({b.region for b in network_file.boxes}),
                                         keep=not stop)
    if stop:
        stack.down()
    if json_out:
        print_json(result)
    else:
        _render(result, render_view)
        if result.get("analytics"):
            _render_analytics(result["analytics"])
        chain = result["facts"].get("chain")
        if chain and chain.get("waybill_file"):
            console.print(Rule("the business chain"))
            console.print(f"{chain.get('process')}: the order's lines as the supplier keeps "
                          f"them: {'; '.join(chain.get('lines', []))}\nthe waybill the buyer "
                          f"opened: {chain['waybill_file']}\nopen balance on both sides: "
                          f"{(chain.get('open_minor') or 0) / 100:,.2f} EUR\nreceipts: "
                          f"{chain.get('receipts')}", highlight=False)
        mailed = result["facts"].get("mail")
        if mailed:
            console.print(Rule("what the partner without a box got"))
            console.print(f"the e-mail: {mailed['eml']} (all mail the local SMTP server took "
                          f"is in {mailed['maildir']})\nits PDF: {mailed['pdf']}\nits UBL "
                          f"order: {mailed['ubl']}\nthe campaign's letters: "
                          f"{result['facts'].get('spool')}", highlight=False)
        if not stop:
            console.print(f"the stack keeps running: `boxbus box show --box fresh-farm "
                          f"--namespace {namespace}`, `boxbus dev status`, `boxbus dev down`")
    if not result["ok"]:
        raise typer.Exit(1)


def _analytics(stack: LocalStack, settings: Settings, info: StackInfo, serde: EventSerde,
               regions: list[str], *, keep: bool) -> dict[str, Any]:
    """Aggregate what the story published (as the network's aggregator user), read the head
    office's numbers back, and leave the aggregator and the dashboard running as services of
    the stack (``boxbus dev down`` stops them)."""
    from bus.db import create_database
    from processors.aggregator import Aggregator
    from processors.aggregator.progress import behind
    from processors.analytics.queries import Filters
    from processors.analytics.reader import Reader

    ns = settings.topic_namespace
    assert info.database_url is not None
    dsn = asyncio.run(create_database(info.database_url, f"{ns}_analytics"))
    access = service_access(settings, "aggregator")

    async def fold() -> dict[str, Any]:
        aggregator = Aggregator(settings, access, dsn, serde)
        stop = asyncio.Event()
        task = asyncio.create_task(aggregator.run(stop))
        operator = info.kafka_access(settings)
        async with asyncio.timeout(120):
            while await behind(operator, dsn, ns, regions) > 0:
                if task.done():
                    task.result()  # it failed: say why
                await asyncio.sleep(0.3)
        stop.set()
        await task
        async with Reader(dsn) as reader:
            return {name: (await reader.query(name, filters))["rows"] for name, filters in (
                ("sales", Filters(by=("branch",))), ("branch-reports", Filters()),
                ("funnel", Filters()))}

    found = asyncio.run(fold())
    sales = found["sales"]
    currencies = sorted({r["currency"] for r in sales})
    answer: dict[str, Any] = {
        "database": f"{ns}_analytics", "orders": sum(r["orders"] for r in sales),
        "revenue_minor": {c: sum(r["revenue_minor"] for r in sales if r["currency"] == c)
                          for c in currencies},
        "branches": sales, "funnel": found["funnel"][0] if found["funnel"] else None,
        "reports_agree": all(r["reported_orders"] == r["aggregated_orders"]
                             and r["reported_revenue_minor"] == r["aggregated_revenue_minor"]
                             for r in found["branch-reports"]),
        "reports": len(found["branch-reports"]), "url": None}
    if not keep:
        return answer
    port = _free_port(8088)
    # (The database URL, password included, goes by environment: not on a command line
    # that `ps` shows to every user.)
    env = {"BOXBUS_TOPIC_NAMESPACE": ns, "BOXBUS_RUN_DIR": str(settings.run_dir),
           "BOXBUS_DATABASE_URL": dsn}
    cli = [sys.executable, "-m", "boxbus.cli.main"]
    stack.start_service(f"{ns}-aggregator", [*cli, "aggregator", "run"], env)
    stack.start_service(f"{ns}-dashboard", [*cli, "analytics", "serve", "--port", str(port)],
                        env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise ComponentFailed(f"the dashboard did not answer at {url} within 30 s",
                                  hint=f"see {settings.run_dir / 'services'}/*.log")
        time.sleep(0.2)
    answer["url"] = url
    return answer


def _free_port(preferred: int) -> int:
    """``preferred`` if nothing listens there on loopback, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            found: int = probe.getsockname()[1]
            return found
    raise ComponentFailed("no free TCP port on 127.0.0.1", hint="close something")


def _render_analytics(found: dict[str, Any]) -> None:
    console.print(Rule("what the head office's analytics show"))
    revenue = ", ".join(f"{minor / 100:,.2f} {c}" for c, minor in found["revenue_minor"].items())
    console.print(f"sales: {found['orders']} store orders, {revenue or 'no revenue'}"
                  + "".join(f"\n   {r['branch']}: {r['orders']} orders, "
                            f"{r['revenue_minor'] / 100:,.2f} {r['currency']}"
                            for r in found["branches"]), highlight=False)
    if found["funnel"]:
        f = found["funnel"]
        console.print(f"purchase orders: {f['placed']} placed, {f['confirmed']} confirmed, "
                      f"{f['dispatched']} dispatched, {f['received']} received",
                      highlight=False)
    console.print(f"branch reports: {found['reports']} sent, "
                  + ("each equal to the aggregates" if found["reports_agree"]
                     else "[red]some differ from the aggregates[/]"), highlight=False)
    if found["url"]:
        console.print(f"[bold]dashboard: {found['url']}[/]  (live: the aggregator keeps "
                      "running; `boxbus dev down` stops it with the stack)", highlight=False)


def _render(result: dict[str, Any], render_view: Any) -> None:
    console.print(Rule("what happened"))
    for s in result["steps"]:
        mark = "[green]ok[/]" if s["ok"] else "[red]FAILED[/]"
        console.print(f"{mark} {s['title']} ({s['seconds']:.2f} s): {s['detail']}",
                      highlight=False)
    for reason in result["facts"].get("bad_input", []):
        console.print(f"   refused: {reason}", highlight=False)
    for stats in result["facts"].get("router", []):
        console.print(f"   router: {stats['consumed']} events in, {stats['forwarded']} "
                      f"delivered, {stats['quarantined']} quarantined, "
                      f"{stats['dead_lettered']} dead-lettered", highlight=False)
    for box in SHOWN:
        if box in result["views"]:
            console.print(Rule(f"what {box} sees"))
            console.print(render_view(box, result["views"][box]))
