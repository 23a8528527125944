"""``boxbus bench``: benchmarks that print figures (not timed tests)."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from boxbus.cli.context import endpoints, kafka_access, serde_for, settings_from_env
from boxbus.cli.output import console, console_err, print_json
from bus.devstack import LocalStack, StackInfo
from bus.errors import ConfigError
from bus.settings import Settings

app = typer.Typer(help="Benchmarks on the reference workload; figures, not pass/fail.",
                  no_args_is_help=True)


PARTS = ("relay", "inbox", "e2e")


def _database_server(settings: Settings, what: str) -> tuple[str, StackInfo | None]:
    """The PostgreSQL server a benchmark makes its databases on (BOXBUS_DATABASE_URL, else the
    local stack's), and the stack's status."""
    info = LocalStack(settings).status()
    server = (settings.database_url.get_secret_value() if settings.database_url
              else info.database_url if info else None)
    if server is None:
        raise ConfigError(f"{what} needs a PostgreSQL server",
                          hint="`boxbus dev up` (or BOXBUS_DATABASE_URL)")
    return server, info


def _progress(quiet: bool) -> Callable[[str], None]:
    """What a benchmark says while it runs: a line on stderr, none with --json (``quiet``)."""
    def say(text: str) -> None:
        if not quiet:
            console_err.print(f"· {text}")
    return say


def _chosen(only: list[str] | None, known: tuple[str, ...], what: str) -> set[str]:
    """The --only values (all when none), refused with the known ones listed if unknown."""
    # Repeatable, or comma-separated as `dev up --only` takes it.
    chosen = {part.strip() for value in only or known for part in value.split(",")
              if part.strip()}
    if chosen - set(known):
        raise typer.BadParameter(f"unknown {what}(s) {sorted(chosen - set(known))}; "
                                 f"choose from {', '.join(known)}", param_hint="--only")
    return chosen


def _rates(text: str, option: str = "--rate", what: str = "events/s",
           example: str = "1000,2500,5000", unit: str = "event/s") -> list[int]:
    """A comma-separated list of positive whole numbers (--rate, --boxes), refused with what
    is wrong otherwise."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of {what}, e.g. "
                                 f"{example}", param_hint=option) from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"{text!r}: each must be at least 1 {unit}",
                                 param_hint=option)
    return values


@app.command()
def outbox(
    events: Annotated[int, typer.Option(help="Events for the relay and inbox runs.")] = 20000,
    per_event: Annotated[int, typer.Option(
        help="Events for the one-transaction-per-event baseline.")] = 3000,
    rate: Annotated[str, typer.Option(
        help="End-to-end rates, events/s, comma-separated: each measured in turn; the top-level "
        "e2e figures are the highest rate's.")] = "1000,2500,5000",
    seconds: Annotated[float, typer.Option(help="End-to-end duration.")] = 4.0,
    per_transaction: Annotated[int, typer.Option(
        help="End to end: events per business transaction (an order's events).")] = 4,
    only: Annotated[list[str] | None, typer.Option(
        help="Run only these parts: relay, inbox, e2e (comma-separated or repeated).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Relay vs raw aiokafka produce, inbox vs one transaction per event, and end-to-end
    latency from outbox commit to the recipient's inbox, side by side on the running stack."""
    from connectors.box.bench import Bench

    parts = _chosen(only, PARTS, "part")
    rates = _rates(rate)
    settings = settings_from_env()
    found = endpoints(settings)
    server, _ = _database_server(settings, "the outbox benchmark")
    run_settings = Settings(**{**settings.model_dump(exclude={"topic_namespace"}),
                               "topic_namespace": f"bench{uuid.uuid4().hex[:6]}"})

    progress = _progress(json_out)

    bench = Bench(run_settings, found.kafka, server, serde_for(run_settings,
                  found.registry_url), progress)

    async def run() -> None:
        try:
            if "relay" in parts:
                await bench.relay_vs_raw(events)
            if "inbox" in parts:
                await bench.inbox_vs_per_event(events, per_event)
            if "e2e" in parts:
                with tempfile.TemporaryDirectory(prefix="boxbus-bench-") as tmp:
                    await bench.end_to_end(rates, seconds, Path(tmp), per_transaction)
        finally:
            await bench.drop_databases()

    asyncio.run(run())
    results = bench.results
    if json_out:
        print_json(results)
        return
    table = Table(title="box SDK benchmark (same stack, same run)", title_justify="left",
                  box=box.SIMPLE_HEAD)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in results.items():
        if key != "e2e_by_rate":
            table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)
    if results.get("e2e_by_rate"):
        rates_table = Table(title="end to end by rate (outbox commit -> recipient's handler)",
                            title_justify="left", box=box.SIMPLE_HEAD)
        columns = ("rate", "achieved_rate", "p50_ms", "p99_ms", "max_ms", "relay_p99_ms",
                   "delivery_p99_ms", "machine_cpu_busy_pct")
        for column in columns:
            rates_table.add_column(column.replace("_", " "), justify="right")
        for row in results["e2e_by_rate"]:
            rates_table.add_row(*(f"{row[c]:,}" if isinstance(row[c], int) else str(row[c])
                                  for c in columns))
        console.print(rates_table)


@app.command()
def router(
    events: Annotated[int, typer.Option(help="Records of the week's mix to forward.",
                                        min=1000)] = 200_000,
    only: Annotated[list[str] | None, typer.Option(
        help="Run only these contenders (comma-separated or repeated): router, raw_aiokafka, "
        "librdkafka, quix, quix_lean, faust, faust_batch.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds each contender may take.")] = 600.0,
    rounds: Annotated[int, typer.Option(
        help="Runs per contender, in alternating order; the best one is reported.", min=1)] = 2,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """The router's forward rate next to raw aiokafka, librdkafka, Quix Streams (idiomatic and
    lean) and faust, over the same records of the reference workload on the running stack's
    broker, each in its own process and each with the router's outputs per event."""
    from processors.router.bench import CONTENDERS, bench

    chosen = _chosen(only, CONTENDERS, "contender")
    settings = settings_from_env()
    found = endpoints(settings)
    info = LocalStack(settings).status()
    broker_pid = info.nodes[0].pid if info and info.nodes and not settings.external_kafka \
        else None
    run_settings = settings.model_copy(update={"topic_namespace": f"rb{uuid.uuid4().hex[:6]}"})

    progress = _progress(json_out)

    results = asyncio.run(bench(run_settings, found.kafka, events=events, only=chosen,
                                broker_pid=broker_pid, timeout=timeout, rounds=rounds,
                                progress=progress))
    if json_out:
        print_json(results)
        return
    table = Table(title=f"router benchmark: {events:,} records of the reference week, same "
                  "broker, same run", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("contender", "events/s", "outputs/event", "seconds", "CPU s", "peak RSS MB",
                   "broker CPU s"):
        table.add_column(column, justify="left" if column == "contender" else "right")
    for r in results["runs"]:
        table.add_row(r["name"], f"{r['events_per_s']:,.0f}" if not r["error"] else r["error"],
                      str(r["outputs_per_event"]), str(r["seconds"]), str(r["cpu_seconds"]),
                      str(r["peak_rss_mb"]), str(r["broker_cpu_seconds"]))
    console.print(table)
    console.print(f"router / raw aiokafka: {results['router_vs_raw_aiokafka']}   "
                  f"router / librdkafka: {results['router_vs_librdkafka']}   "
                  f"router / Quix Streams: {results['router_vs_quix']} "
                  f"(lean: {results['router_vs_quix_lean']})   "
                  f"faust / raw: {results['faust_vs_raw_aiokafka']} "
                  f"(batched: {results['faust_batch_vs_raw_aiokafka']})", highlight=False)


@app.command()
def scale(
    boxes: Annotated[str, typer.Option(
        help="Network sizes to measure in turn, comma-separated.")] = "10,200,2000",
    events: Annotated[int, typer.Option(help="Records the router routes at each size.",
                                        min=100)] = 50_000,
    inbox_events: Annotated[int, typer.Option(help="Events the inbox applies at each size.",
                                              min=100)] = 20_000,
    partitions: Annotated[int, typer.Option(
        help="Partitions of each box's ingress and inbox topics.", min=1)] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds the router may take at a size.")
                       ] = 600.0,
    rounds: Annotated[int, typer.Option(
        help="Times raw aiokafka and the router each route the records at a size (the best "
        "counts; every round's rate is reported).", min=1)] = 2,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """The same traffic over networks of growing size (each box with its topics, principal,
    ACLs, quota and key): topology apply time, broker memory, metadata, router and inbox
    throughput. Each size is removed again after it is measured."""
    from processors.router.scale import bench_scale

    sizes = _rates(boxes, "--boxes", "box counts", "10,200,2000", "box")
    settings = settings_from_env()
    found = endpoints(settings)
    server, info = _database_server(settings, "the scale benchmark")
    broker_pid = info.nodes[0].pid if info and info.nodes and not settings.external_kafka \
        else None

    # On stderr even with --json: a size of thousands of boxes takes minutes.
    progress = _progress(quiet=False)

    results = asyncio.run(bench_scale(
        settings, found.kafka, sizes=sizes, events=events, inbox_events=inbox_events,
        partitions=partitions, server_dsn=server,
        serde_for=lambda run: serde_for(run, found.registry_url), broker_pid=broker_pid,
        timeout=timeout, progress=progress, rounds=rounds))
    if json_out:
        print_json(results)
        return
    table = Table(title=f"scale benchmark: {events:,} records routed and {inbox_events:,} "
                  "applied at each size, same broker", title_justify="left",
                  box=box.SIMPLE_HEAD)
    columns = ("boxes", "topics", "partitions", "acls", "plan_seconds", "apply_seconds",
               "metadata_request_ms", "router_events_per_s", "router_start_seconds",
               "router_peak_rss_mb", "inbox_events_per_s", "broker_rss_mb_after",
               "broker_heap_mb_after")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    for row in results["sizes"]:
        table.add_row(*(f"{row[c]:,}" if isinstance(row.get(c), int) else str(row.get(c))
                        for c in columns))
    console.print(table)
    console.print(f"router: slowest size / fastest {results['router_flatness']} (goal >= 0.8); "
                  f"inbox: {results['inbox_flatness']}", highlight=False)


@app.command()
def isolation(
    rate: Annotated[int, typer.Option(help="Orders a second between the two quiet boxes.",
                                      min=1)] = 200,
    seconds: Annotated[float, typer.Option(
        help="Length of the baseline and of the flood, each.", min=1)] = 30,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Two boxes exchange orders while a third floods its ingress at ten times its quota:
    the quiet boxes' end-to-end p99 before and during the flood, and the flooder's rate."""
    from processors.router.isolation import isolation_bench

    settings = settings_from_env()
    operator = kafka_access(settings)
    run_settings = settings.model_copy(update={"topic_namespace": f"iso{uuid.uuid4().hex[:6]}"})

    progress = _progress(json_out)

    results = asyncio.run(isolation_bench(run_settings, operator, rate=rate, seconds=seconds,
                                          progress=progress))
    if json_out:
        print_json(results)
        return
    table = Table(title="one box flooding, two boxes exchanging orders", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for column in ("figure", "value"):
        table.add_column(column)
    for key, value in results.items():
        table.add_row(key, str(value))
    console.print(table)


@app.command()
def mail(
    mails: Annotated[int, typer.Option(help="E-mails in each round.", min=1)] = 1000,
    partners: Annotated[int, typer.Option(help="Partners they go to.", min=1)] = 20,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """One mailer process sending to the local SMTP server: e-mails a second with an order's
    PDF and UBL attached (mails_per_s) and without attachments (plain_mails_per_s)."""
    from boxbus.cli.mailer import smtp_server
    from connectors.mail.bench import bench_mail

    settings = settings_from_env()
    found = endpoints(settings)
    server, _ = _database_server(settings, "the mail benchmark")
    run_settings = settings.model_copy(update={"topic_namespace": f"mb{uuid.uuid4().hex[:6]}"})

    say = _progress(json_out)

    results = asyncio.run(bench_mail(run_settings, found.kafka, registry_url=found.registry_url,
                                     database_server=server, smtp=smtp_server(settings),
                                     mails=mails, partners=partners, say=say))
    if json_out:
        print_json(results)
        return
    table = Table(title=f"one mailer, {mails} e-mails to {partners} partners",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("e-mails", "per second", "seconds", "CPU s", "cores"):
        table.add_column(column, justify="right" if column != "e-mails" else "left")
    for name, key in (("with PDF and UBL", "with_attachments"), ("plain", "plain")):
        row = results[key]
        table.add_row(name, str(row["mails_per_s"]), str(row["seconds"]),
                      str(row["cpu_seconds"]), str(row["cores"]))
    console.print(table)


@app.command()
def rpc(
    requests: Annotated[int, typer.Option(help="Questions asked.", min=1)] = 1000,
    rate: Annotated[float, typer.Option(help="Questions a second.", min=0.1)] = 50.0,
    timeout: Annotated[float, typer.Option(help="Each question's deadline, seconds.",
                                           min=0.01)] = 2.0,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Request/reply through the real path (router included): one box asks another at a
    steady rate; latency of each round trip (rpc_p50_ms, rpc_p99_ms) and the timeouts."""
    from connectors.box.rpc_bench import bench_rpc

    settings = settings_from_env()
    found = endpoints(settings)
    server, _ = _database_server(settings, "the request/reply benchmark")
    run_settings = settings.model_copy(update={"topic_namespace": f"rb{uuid.uuid4().hex[:6]}"})

    say = _progress(json_out)

    results = asyncio.run(bench_rpc(run_settings, found.kafka, registry_url=found.registry_url,
                                    database_server=server, requests=requests, rate=rate,
                                    timeout=timeout, say=say))
    if json_out:
        print_json(results)
        return
    table = Table(title=f"{requests} questions at {rate:g}/s, deadline {timeout:g} s",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("p50 ms", "p90 ms", "p99 ms", "max ms", "answered", "timeouts", "failed",
                   "late"):
        table.add_column(column, justify="right")
    table.add_row(*(str(results[k]) for k in (
        "rpc_p50_ms", "rpc_p90_ms", "rpc_p99_ms", "rpc_max_ms", "rpc_answered",
        "rpc_timeouts", "rpc_failed", "rpc_late")))
    console.print(table)


@app.command()
def week(
    scale: Annotated[float, typer.Option(help="Scale of the reference week (1: ~500,000 store "
                                         "orders, ~4.6 million events).", min=0.0001)] = 1.0,
    instances: Annotated[int, typer.Option(help="Aggregator instances (one consumer group).",
                                           min=1)] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds the pipeline may take after the "
                                           "last event is published.")] = 3600.0,
    verify: Annotated[bool, typer.Option(help="Recompute the aggregates from the region "
                                         "topics and compare.")] = True,
    compare_faust: Annotated[int, typer.Option(
        help="Afterwards, aggregate this many of the region records again with the "
        "aggregator alone and with the same fold in faust-streaming tables (exactly once), "
        "side by side; 0: not.", min=0)] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """The reference week replayed through the router and the aggregator on the running
    stack: events/s of each stage, wall time, latency, CPU and memory, and a check of the
    aggregates against a recomputation from the topics."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from processors.aggregator.bench import bench_week

    settings = settings_from_env()
    found = endpoints(settings)
    server, info = _database_server(settings, "the week replay")
    run_settings = settings.model_copy(update={"topic_namespace": f"wk{uuid.uuid4().hex[:6]}"})
    stack_pids = {} if settings.external_kafka or info is None else dict(info.processes)
    bars = Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console_err,
                    disable=json_out)
    tasks: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total or None)
        bars.update(tasks[stage], completed=done, total=total or None)

    def say(text: str) -> None:
        if not json_out:
            bars.console.print(f"· {text}")

    with bars:
        results = asyncio.run(bench_week(
            run_settings, found.kafka, registry_url=found.registry_url,
            database_server=server, scale=scale, instances=instances, stack_pids=stack_pids,
            timeout=timeout, verify=verify, say=say, progress=progress,
            compare=compare_faust))
    if json_out:
        print_json(results)
        return
    table = Table(title=f"the reference week at scale {scale}: {results['events']:,} events",
                  title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name in ("wall_seconds", "publish_events_per_s", "route_events_per_s",
                 "aggregate_events_per_s", "latency_p50_ms", "latency_p99_ms", "late_events",
                 "late_on_purpose", "build_seconds",
                 "aggregates_equal_recomputation", "topology_apply_seconds"):
        table.add_row(name, str(results[name]))
    console.print(table)
    usage = Table("process", "CPU s", "peak RSS MB", box=box.SIMPLE_HEAD)
    for name, figures in results["processes"].items():
        usage.add_row(name, str(figures.get("cpu_seconds")), str(figures.get("peak_rss_mb", "")))
    console.print(usage)
    for line in results.get("differences") or []:
        console_err.print(f"[red]differs:[/] {line}", highlight=False)
    alone = results.get("alone")
    if alone:
        side = Table("alone, same records", "events/s", "seconds", "CPU s", "peak RSS MB",
                     box=box.SIMPLE_HEAD)
        for name in ("aggregator", "faust_tables"):
            r = alone[name]
            side.add_row(name, str(r["events_per_s"]) if not r["error"] else r["error"],
                         str(r["seconds"]), str(r["cpu_seconds"]), str(r["peak_rss_mb"]))
        console.print(side)
        console.print(f"aggregator / faust tables: {alone['aggregator_vs_faust']}")
