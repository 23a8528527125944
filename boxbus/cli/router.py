"""``boxbus router``: run the router that delivers region events to the boxes entitled to them."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any

import typer

from boxbus.cli.box import MetricsOpt, _run_until_signal, _with_metrics
from boxbus.cli.context import (
    kafka_access,
    require_kafka,
    serde_for,
    service_access,
    settings_from_env,
)
from boxbus.cli.output import console_err, print_json

app = typer.Typer(help="The router: region topics to box inboxes, by the network's topology.",
                  no_args_is_help=True)


@app.command("run")
def run(
    group: Annotated[str | None, typer.Option(
        help="Consumer group (default <namespace>.router); instances of one group share "
        "the region partitions.")] = None,
    max_records: Annotated[int, typer.Option(
        help="Records per round (one send and one commit per round); up to four times "
        "this when many boxes are busy.", min=1)] = 5000,
    progress_every: Annotated[float, typer.Option(
        help="Seconds between progress lines in the log.", min=0.1)] = 10.0,
    metrics_port: MetricsOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the totals as JSON at exit.")
                        ] = False,
) -> None:
    """Route until SIGTERM or Ctrl-C; the round in flight finishes and commits first."""
    from processors.router import Router

    settings = settings_from_env(service=True)
    require_kafka(kafka_access(settings))
    kafka = service_access(settings, "router")
    # The registry, for the reports of where the boxes' tracked events went (receipts).
    registry = settings.schema_registry_url or _stack_registry(settings)
    serde = serde_for(settings, registry) if registry else None
    if serde is None:
        console_err.print("[yellow]no schema registry known (BOXBUS_SCHEMA_REGISTRY_URL): the "
                          "router routes, but does not report to the boxes where their tracked "
                          "events went (their receipts stay at 'sent')[/]")
    router = Router(settings, kafka, group_id=group, max_records=max_records, serde=serde)
    stop = asyncio.Event()

    async def serve() -> None:
        await router.run(stop, progress_every=progress_every)

    def watch(server: Any) -> Coroutine[Any, Any, None]:
        from processors.router.metrics import watch_router

        return watch_router(router, server)

    console_err.print(f"router of namespace {router.namespace}, group {router.group_id}; "
                      "SIGTERM or Ctrl-C stops it")
    _run_until_signal(_with_metrics(serve, metrics_port, watch), stop.set)
    if json_out:
        print_json(router.stats.as_dict())
    else:
        stats = router.stats
        console_err.print(f"router stopped: {stats.consumed} consumed, {stats.forwarded} "
                          f"forwarded, {stats.quarantined} quarantined, {stats.dead_lettered} "
                          f"dead-lettered, {stats.echoes_dropped} echoes dropped")


def _stack_registry(settings: Any) -> str | None:
    from bus.devstack import LocalStack

    info = LocalStack(settings).status()
    return info.schema_registry_url if info else None
