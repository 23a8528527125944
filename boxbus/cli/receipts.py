"""``boxbus box receipts``: what became of what a box sent, per event and recipient, from the
box's own database (connectors.box.tracking): no need to read Kafka."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from boxbus.cli.box import BoxOpt, DatabaseOpt, NamespaceOpt, _migrated_database
from boxbus.cli.boxdb import connect
from boxbus.cli.context import settings_from_env
from boxbus.cli.output import console, console_err, print_json
from bus.topology.model import duration_ms


def receipts(box: BoxOpt, database_url: DatabaseOpt = None, namespace: NamespaceOpt = None,
             pending: Annotated[bool, typer.Option(
                 help="Only what is not finished: waiting, sent, delivered to an addressee "
                 "that has not answered.")] = False,
             overdue_after: Annotated[str, typer.Option(
                 help="How long a step may take before it is flagged overdue (30s, 5m, "
                 "2h).")] = "5m",
             limit: Annotated[int, typer.Option(min=1, help="Newest rows shown.")] = 200,
             purge_older_than: Annotated[str | None, typer.Option(
                 help="First forget the receipts of events sent longer ago than this (30d): "
                 "the tables keep every event otherwise.")] = None,
             json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The box's business receipts: each event it sent and, per recipient, sent → delivered →
    accepted or rejected (with the reason), or refused by the router; overdue steps flagged.
    Exits 1 when something is overdue (for monitoring)."""
    from connectors.box.tracking import purge, summary
    from connectors.box.tracking import receipts as read_receipts

    settings = settings_from_env(namespace)
    try:
        late = timedelta(milliseconds=duration_ms(overdue_after))
        if late <= timedelta(0):
            raise ValueError(f"{overdue_after!r} is not a time a step may take: give a positive "
                             "duration such as 30s, 5m or 2h")
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--overdue-after") from exc

    keep = None
    if purge_older_than is not None:
        try:
            keep = timedelta(milliseconds=duration_ms(purge_older_than))
            if keep <= timedelta(0):
                raise ValueError(f"{purge_older_than!r}: give a positive duration such as 30d")
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--purge-older-than") from exc

    async def read() -> list[dict[str, Any]]:
        conn = await connect(await _migrated_database(settings, box, database_url), box=box)
        try:
            if keep is not None:
                forgotten = await purge(conn, keep)
                console_err.print(f"forgot the receipts of {forgotten} event(s) sent before "
                                  f"{purge_older_than} ago")
            return await read_receipts(conn, pending=pending, overdue_after=late, limit=limit)
        finally:
            await conn.close()

    rows = asyncio.run(read())
    counts = summary(rows)  # of the rows shown (with --pending, of what is open)
    if json_out:
        print_json({"box": box, "summary": counts, "receipts": rows})
    else:
        _print(box, rows, counts, pending)
    if counts["overdue"]:
        raise typer.Exit(1)


def _print(box: str, rows: list[dict[str, Any]], counts: dict[str, int], pending: bool) -> None:
    if not rows:
        console.print(f"box {box}: {'nothing pending' if pending else 'nothing sent yet'}")
        return
    table = Table("event", "type", "recipient", "state", "why", title=f"receipts of box {box}",
                  title_justify="left")
    for r in rows:
        state = r["state"] + (" [bold red]OVERDUE[/]" if r["overdue"] else "")
        if r["by_mail"]:
            state += " (e-mail)"
        table.add_row(r["event_id"], (r["event_type"] or "?").rsplit(".", 1)[-1],
                      r["recipient"] or "-", state,
                      r["reason"] or r["refused_reason"] or "")
    console.print(table)
    console.print(", ".join(f"{n} {state}" for state, n in counts.items() if n))
