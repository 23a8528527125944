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
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.rule import Rule

from boxbus.cli.context import serde_for, settings_from_env
from boxbus.cli.dev import render
from boxbus.cli.output import console, console_err, print_json
from bus.devstack import LocalStack
from bus.errors import ComponentFailed
from bus.log import configure_logging
from bus.resources import deploy_dir
from bus.topology import load_topology

TOPOLOGY = deploy_dir() / "topology" / "demo.yaml"
SHOWN = ("north-branch", "fresh-farm", "hq", "south-branch", "hq-analytics")


def demo(
    topology: Annotated[Path, typer.Option(help="The network to run.")] = TOPOLOGY,
    stop: Annotated[bool, typer.Option("--down", help="Stop the stack afterwards.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object for programs.")] = False,
) -> None:
    """Run the sample network on the local stack and show each box's view of the flows."""
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
    run_settings = settings.model_copy(update={"topic_namespace": namespace})
    say(f"applying {topology.name} as namespace {namespace}; starting "
        f"{len(network_file.boxes)} boxes and the router ...")
    serde = serde_for(settings, info.schema_registry_url)

    async def run() -> dict[str, Any]:
        kafka = info.kafka_access(run_settings)
        async with LocalNetwork(run_settings, kafka, info.database_url or "", serde,
                                network_file) as network:
            story = await play(network, say=say)
            views = {box: await network.view(box) for box in network.boxes}
        return {"stack": info.model_dump(mode="json"), "namespace": namespace, "ok": story.ok,
                "steps": [vars(s) for s in story.steps], "facts": story.facts,
                "views": views}

    result = asyncio.run(run())
    if stop:
        stack.down()
    if json_out:
        print_json(result)
    else:
        _render(result, render_view)
        if not stop:
            console.print(f"the stack keeps running: `boxbus box show --box fresh-farm "
                          f"--namespace {namespace}`, `boxbus dev status`, `boxbus dev down`")
    if not result["ok"]:
        raise typer.Exit(1)


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
