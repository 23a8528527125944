"""``boxbus analytics``: the central analytics for people: ``query`` answers a named query from
the analytics database (a table, or ``--json``), ``serve`` runs the dashboard and the same
queries as JSON over HTTP."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.table import Table

from boxbus.cli.context import settings_from_env
from boxbus.cli.output import console, console_err, print_json
from bus.errors import ConfigError
from bus.settings import Settings

app = typer.Typer(help="Central analytics: queries, the HTTP API and the dashboard.",
                  no_args_is_help=True)


def analytics_dsn(settings: Settings, given: str | None, *, create: bool) -> str:
    """The analytics database: the one given, BOXBUS_DATABASE_URL, or ``<namespace>_analytics``
    on the local stack's PostgreSQL (created if ``create``)."""
    return service_dsn(settings, given, "analytics", create=create,
                       first="run `boxbus aggregator run` for this namespace first")


def service_dsn(settings: Settings, given: str | None, service: str, *, create: bool,
                first: str = "") -> str:
    """A network service's own database (the aggregator's analytics, the mailer's): the one
    given, BOXBUS_DATABASE_URL, or ``<namespace>_<service>`` on the local stack's PostgreSQL
    (created if ``create``)."""
    from bus.db import create_database, owner_url
    from bus.devstack import LocalStack

    dsn = given or (settings.database_url and settings.database_url.get_secret_value())
    if dsn:
        return dsn
    info = LocalStack(settings).status()
    if info is None or info.database_url is None:
        raise ConfigError(f"no {service} database is given and no local stack runs",
                          hint="pass --database-url, set BOXBUS_DATABASE_URL, or start the "
                          "local stack (`boxbus dev up`)")
    name = f"{settings.topic_namespace}_{service}"
    if create:
        return asyncio.run(create_database(info.database_url, name))
    if not asyncio.run(_exists(info.database_url, name)):
        raise ConfigError(f"the local stack has no {service} database {name!r} (namespace "
                          f"{settings.topic_namespace!r})",
                          hint=(f"{first}, or give" if first else "give")
                          + " --namespace / --database-url")
    return owner_url(info.database_url, name)


async def _exists(server_url: str, name: str) -> bool:
    import asyncpg

    conn = await asyncpg.connect(server_url)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


def _filters(by: str | None, start: str | None, end: str | None, regions: list[str] | None,
             limit: int | None, below: float | None = None, at: str | None = None) -> Any:
    from processors.analytics.queries import Filters, moment

    return Filters(
        by=tuple(d.strip() for d in by.split(",") if d.strip()) if by else (),
        start=moment(start, "--from") if start else None,
        end=moment(end, "--to") if end else None,
        regions=tuple(regions or ()), limit=limit,
        below=Decimal(str(below)) if below is not None else Decimal(10),
        at=moment(at, "--at") if at else None)


DatabaseOption = Annotated[str | None, typer.Option(
    "--database-url", help="The analytics database (default: BOXBUS_DATABASE_URL, else "
    "<namespace>_analytics on the local stack).")]
NamespaceOption = Annotated[str | None, typer.Option(
    help="Topic namespace of the network (default: BOXBUS_TOPIC_NAMESPACE).")]


@app.command("query")
def query(
    name: Annotated[str, typer.Argument(help="sales, products, funnel, stock, low-stock, "
                                        "receivables, branch-reports, events, positions")],
    by: Annotated[str | None, typer.Option(help="Dimensions to group by, comma separated "
                                           "(each query lists its own).")] = None,
    start: Annotated[str | None, typer.Option("--from", help="From this event time "
                                              "(inclusive): 2026-11-23 or 2026-11-23T14:00."
                                              )] = None,
    end: Annotated[str | None, typer.Option("--to", help="Until this event time (exclusive)."
                                            )] = None,
    region: Annotated[list[str] | None, typer.Option(help="Only this region (repeatable).")
                      ] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many rows.", min=1)] = None,
    below: Annotated[float | None, typer.Option(help="low-stock/stock: available units under "
                                                "this are low (default 10).")] = None,
    at: Annotated[str | None, typer.Option(help="receivables: ageing as of this time "
                                           "(default now).")] = None,
    database_url: DatabaseOption = None,
    namespace: NamespaceOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object for programs.")
                        ] = False,
) -> None:
    """Answer a named query from the analytics database (read only)."""
    from processors.analytics.queries import query_named
    from processors.analytics.reader import Reader

    filters = _filters(by, start, end, region, limit, below, at)
    query_named(name).sql(filters)  # a wrong name or --by fails before anything connects
    settings = settings_from_env(namespace)
    dsn = analytics_dsn(settings, database_url, create=False)

    async def answer() -> dict[str, Any]:
        async with Reader(dsn) as reader:
            return await reader.query(name, filters)

    result = asyncio.run(answer())
    if json_out:
        print_json(result)
        return
    console_err.print(f"[bold]{result['title']}[/]: {result['description']}", highlight=False)
    if not result["rows"]:
        console.print("(no rows)")
        return
    table = Table(*result["columns"])
    for row in result["rows"]:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    console.print(table)


@app.command("serve")
def serve(
    port: Annotated[int, typer.Option(help="TCP port (0: any free one).", min=0,
                                      max=65535)] = 8088,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default: the "
                                      "numbers are the company's).")] = "127.0.0.1",
    database_url: DatabaseOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Serve the dashboard and the queries as JSON (/api/NAME) until Ctrl-C or SIGTERM."""
    import socket

    from processors.analytics.app import serve_forever
    from processors.analytics.reader import Reader

    settings = settings_from_env(namespace)
    dsn = analytics_dsn(settings, database_url, create=False)

    async def reachable() -> None:
        async with Reader(dsn, max_size=1):
            pass

    asyncio.run(reachable())  # a wrong database is told here, not as the server's traceback
    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    console_err.print(f"dashboard of namespace {settings.topic_namespace}: "
                      f"http://{shown}:{port}/  (API: /api/queries); Ctrl-C stops it",
                      highlight=False)
    serve_forever(dsn, host, port)
