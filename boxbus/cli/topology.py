"""``boxbus topology``: plan and apply the network's topology file on a cluster."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from boxbus.cli.context import kafka_access, settings_from_env
from boxbus.cli.output import console, console_err, print_json
from bus.topology.plan import Applied, Change, Plan

app = typer.Typer(help="The network's topology file: validate, plan, apply.",
                  no_args_is_help=True)

FileArg = Annotated[Path, typer.Argument(help="The topology file (YAML).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

_SYMBOL = {"create-topic": "+", "add-partitions": "~", "alter-config": "~",
           "write-control": "+", "delete-control": "-", "delete-topic": "-",
           "create-principal": "+", "delete-principal": "-", "add-acl": "+",
           "remove-acl": "-", "set-quota": "~", "remove-quota": "-",
           "create-signing-key": "+"}


def _show(plan_changes: list[Change], title: str) -> None:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("", "action", "target", "detail"):
        table.add_column(column, overflow="fold")
    for change in plan_changes:
        style = "red" if change.destructive else None
        table.add_row(_SYMBOL.get(change.action, "?"), change.action, change.target,
                      change.detail + (" [destructive]" if change.destructive else ""),
                      style=style)
    console.print(table)


@app.command()
def validate(file: FileArg, json_out: JsonOpt = False) -> None:
    """Check the file without a cluster: fields, references, event type names."""
    from bus.topology import load_topology

    topology = load_topology(file)
    summary = {"regions": len(topology.regions), "boxes": len(topology.boxes),
               "relationships": len(topology.relationships),
               "subscriptions": len(topology.subscriptions)}
    if json_out:
        print_json({"valid": True, **summary})
    else:
        console.print(f"{file} is valid: " + ", ".join(f"{v} {k}" for k, v in summary.items()))


@app.command()
def plan(file: FileArg, json_out: JsonOpt = False) -> None:
    """Show what `apply` would change on the cluster; changes nothing."""
    from bus.topology import load_topology, make_plan

    settings = settings_from_env()
    topology = load_topology(file)
    result = asyncio.run(make_plan(settings, kafka_access(settings), topology))
    if json_out:
        print_json(result.to_json())
        return
    if result.empty:
        console.print(f"nothing to do: the cluster matches {file}")
    else:
        _show(result.changes, f"plan for namespace {result.namespace}: "
                              f"{len(result.changes)} change(s)")
    for problem in result.problems:
        console_err.print(f"[yellow]cannot apply:[/] {problem}")
    for note in result.notes:
        console_err.print(f"note: {note}", highlight=False)


@app.command()
def apply(
    file: FileArg,
    allow_destructive: Annotated[bool, typer.Option(
        "--allow-destructive",
        help="Also delete topics and shrink retentions the file no longer asks for.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Make the cluster match the file (idempotent: a second apply has nothing to do)."""
    from bus.topology import apply_plan, load_topology, make_plan

    settings = settings_from_env()
    topology = load_topology(file)
    kafka = kafka_access(settings)

    async def run() -> tuple[Plan, Applied]:
        planned = await make_plan(settings, kafka, topology)
        if not json_out and not planned.empty:
            console_err.print(f"· applying {len(planned.changes)} change(s)")
        return planned, await apply_plan(kafka, planned, allow_destructive=allow_destructive)

    planned, applied = asyncio.run(run())
    if json_out:
        print_json({"namespace": planned.namespace,
                    "applied": [{"action": c.action, "target": c.target} for c in applied.done],
                    "skipped_destructive": [{"action": c.action, "target": c.target}
                                            for c in applied.skipped],
                    "problems": planned.problems})
    elif planned.empty:
        console.print(f"nothing to do: the cluster matches {file}")
    else:
        if applied.done:
            _show(applied.done, f"applied {len(applied.done)} change(s)")
        if applied.skipped:
            _show(applied.skipped, "NOT applied (destructive; pass --allow-destructive)")
    for problem in planned.problems:
        console_err.print(f"[yellow]cannot apply:[/] {problem}")
    if planned.problems:
        raise typer.Exit(1)
