"""``boxbus aggregator``: run the aggregator that keeps the central analytics (issue 14: sales
so far) in an analytics PostgreSQL database, exactly once."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from boxbus.cli.analytics import analytics_dsn
from boxbus.cli.box import _run_until_signal
from boxbus.cli.context import (
    endpoints,
    require_kafka,
    serde_for,
    service_access,
    settings_from_env,
)
from boxbus.cli.output import console_err, print_json

app = typer.Typer(help="The aggregator: region topics to the analytics database.",
                  no_args_is_help=True)


@app.command("run")
def run(
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="The analytics database (default: <namespace>_analytics on "
        "the local stack's PostgreSQL, created if missing).")] = None,
    namespace: Annotated[str | None, typer.Option(
        help="Topic namespace of the network (default: BOXBUS_TOPIC_NAMESPACE).")] = None,
    max_records: Annotated[int, typer.Option(help="Records per fetch.", min=1)] = 5000,
    json_out: Annotated[bool, typer.Option("--json", help="Print the totals as JSON at exit.")
                        ] = False,
) -> None:
    """Aggregate until SIGTERM or Ctrl-C, as the network's aggregator user; instances of one
    network share the region partitions."""
    from processors.aggregator import Aggregator

    settings = settings_from_env(namespace, service=True)
    found = endpoints(settings)
    require_kafka(found.kafka)
    kafka = service_access(settings, "aggregator")  # before anything is made for it
    dsn = analytics_dsn(settings, database_url, create=True)
    aggregator = Aggregator(settings, kafka, dsn,
                            serde_for(settings, found.registry_url), max_records=max_records)
    stop = asyncio.Event()

    async def serve() -> None:
        await aggregator.run(stop)

    console_err.print(f"aggregator of namespace {aggregator.namespace}, group "
                      f"{aggregator.group_id}; SIGTERM or Ctrl-C stops it")
    _run_until_signal(serve, stop.set)
    if json_out:
        print_json(aggregator.stats.as_dict())
    else:
        stats = aggregator.stats
        console_err.print(f"aggregator stopped: {stats.consumed} consumed, {stats.aggregated} "
                          f"aggregated in {stats.commits} commits, {stats.fenced} fenced")
