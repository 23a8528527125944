"""``boxbus dev``: the embedded local stack."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from boxbus.cli.context import settings_from_env
from boxbus.cli.output import console, console_err, print_json
from bus.devstack import Component, LocalStack, RegistryStorage, StackInfo
from bus.errors import ConfigError, StackError

app = typer.Typer(help="Run the embedded local stack: Kafka, PostgreSQL, schema registry, SMTP, "
                  "object store (S3).", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object for programs.")]


def _components(only: str | None) -> frozenset[Component] | None:
    if not only:
        return None
    names = [n.strip() for n in only.split(",") if n.strip()]
    try:
        return frozenset(Component(n) for n in names)
    except ValueError:
        known = ", ".join(c.value for c in Component)
        raise typer.BadParameter(f"--only takes a comma-separated list of: {known}") from None


def render(info: StackInfo) -> None:
    table = Table(title=f"boxbus local stack ({info.run_dir})", title_justify="left",
                  box=box.SIMPLE_HEAD)
    table.add_column("component")
    table.add_column("state")
    table.add_column("address", overflow="fold")
    table.add_column("boot s", justify="right")
    addresses = {
        "kafka": info.kafka_bootstrap,
        # Its password stays out of a table for people (`dev status --json` has it).
        "postgres": re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", info.database_url or "")
        or None,
        "registry": info.schema_registry_url,
        "smtp": f"{info.smtp.host}:{info.smtp.port}" if info.smtp.host else None,
        "objectstore": (f"{info.object_store_url} bucket {info.object_store_bucket}"
                        if info.object_store_url else None),
    }
    for name, state in info.components.items():
        colour = {"running": "green", "external": "cyan"}.get(state, "red")
        seconds = info.boot_seconds.get(name)
        table.add_row(name, f"[{colour}]{state}[/]", addresses.get(name) or "-",
                      f"{seconds:.2f}" if seconds is not None else "")
    console.print(table)
    if len(info.nodes) > 1 or any(not n.alive for n in info.nodes):
        for node in info.nodes:
            mark = "[green]up[/]" if node.alive else "[red]down[/]"
            console.print(f"  kafka node {node.node_id} {node.address} pid {node.pid} {mark}")
    if info.smtp.maildir:
        console.print(f"  mail received is stored in {info.smtp.maildir}")
    if info.kafka_credentials:
        console.print(f"  Kafka's operator logs in with {info.kafka_credentials}")
    if info.object_store_credentials:
        console.print(f"  the object store's keys are in {info.object_store_credentials}")
    extra = {k: v for k, v in info.boot_seconds.items()
             if k == "total" or (k.startswith("fetch") and v >= 0.05)}
    if extra:
        console.print("  " + ", ".join(f"{k} {v:.2f} s" for k, v in extra.items()))


@app.command()
def up(
    nodes: Annotated[int | None, typer.Option(
        help="Kafka nodes: 1, or 3 for fault tests (default: what runs, else 1).")] = None,
    only: Annotated[str | None, typer.Option(
        help="Start only these components, e.g. kafka,postgres (default: what is set up, "
        "else all).")] = None,
    registry_storage: Annotated[RegistryStorage | None, typer.Option(
        help="Where the schema registry keeps schemas (default: memory).")] = None,
    base_port: Annotated[int | None, typer.Option(
        help="First of the 11 ports the stack uses (default BOXBUS_DEV_BASE_PORT); "
        "0 picks free ports.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Start the stack (what runs already is reused) and print where each service answers."""
    settings = settings_from_env()
    stack = LocalStack(settings, nodes=nodes, components=_components(only),
                       registry_storage=registry_storage, base_port=base_port)
    if not json_out:
        console_err.print(f"starting the local stack in {settings.run_dir} ...")
    info = asyncio.run(stack.up())
    print_json(info) if json_out else render(info)


@app.command()
def status(json_out: JsonOpt = False) -> None:
    """Show what runs, where, and how long it took to boot."""
    settings = settings_from_env()
    info = LocalStack(settings).status()
    if info is None:
        if json_out:
            print_json({"running": False, "run_dir": str(settings.run_dir)})
            raise typer.Exit(1)
        raise StackError(f"no local stack is set up in {settings.run_dir}",
                         hint="start one with `boxbus dev up` (BOXBUS_RUN_DIR chooses where)")
    print_json(info) if json_out else render(info)


@app.command()
def down(json_out: JsonOpt = False) -> None:
    """Stop every process `up` started, by pid, and remove the run directory."""
    settings = settings_from_env()
    began = time.monotonic()
    stopped = LocalStack(settings).down()
    seconds = round(time.monotonic() - began, 2)
    if json_out:
        print_json({"stopped": stopped, "seconds": seconds, "run_dir": str(settings.run_dir)})
    else:
        what = ", ".join(stopped) if stopped else "nothing was running"
        console.print(f"stopped: {what} ({seconds:.2f} s); removed {settings.run_dir}")


@app.command()
def fetch() -> None:
    """Fetch the JVM artifacts (Kafka, Apicurio Registry, S3Proxy) into the cache, once."""
    settings = settings_from_env()
    began = time.monotonic()
    with console_err.status("fetching JVM artifacts with Maven (once; cached afterwards) ..."):
        found = LocalStack(settings).fetch()
    for name, path in found.items():
        console.print(f"{name}: {path}")
    console.print(f"done in {time.monotonic() - began:.1f} s")


@app.command("kill-node")
def kill_node(node_id: Annotated[int, typer.Argument(help="Kafka node id (1-3).")]) -> None:
    """SIGKILL one Kafka node, as a crash would (for fault tests)."""
    LocalStack(settings_from_env()).kill_node(node_id)
    console.print(f"kafka node {node_id} killed")


@app.command("start-node")
def start_node(node_id: Annotated[int, typer.Argument(help="Kafka node id (1-3).")]) -> None:
    """Start a stopped Kafka node again on its data and wait until it is back in the cluster."""
    asyncio.run(LocalStack(settings_from_env()).start_node(node_id))
    console.print(f"kafka node {node_id} is back")


@app.command()
def createdb(name: Annotated[str, typer.Argument(help="Database name, e.g. box_north.")]) -> None:
    """Create a database (one per box) on the stack's PostgreSQL and print its URL."""
    from bus.db import create_database

    settings = settings_from_env()
    info = LocalStack(settings).status()
    url = settings.database_url.get_secret_value() if settings.database_url else (
        info.database_url if info else None)
    if url is None:
        raise ConfigError("no database server: no local stack is set up and "
                          "BOXBUS_DATABASE_URL is not set",
                          hint="run `boxbus dev up`, or set BOXBUS_DATABASE_URL")
    console.print(asyncio.run(create_database(url, name)))
