"""``boxbus box rules``: a box's own rules (connectors.box.rules), written by its administrator:
checked with line and field errors, applied as a new version that the running box takes up
at once, and shown."""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path
from typing import Annotated

import typer

from boxbus.cli.box import BoxOpt, DatabaseOpt, NamespaceOpt, _migrated_database
from boxbus.cli.boxdb import connect
from boxbus.cli.context import settings_from_env
from boxbus.cli.output import console, print_json

rules_app = typer.Typer(help="A box's own rules: inbound processes and item codes, what it "
                        "shares with whom.", no_args_is_help=True)
FileArg = Annotated[Path, typer.Argument(help="The rules file (YAML).")]
JsonOpt = Annotated[bool, typer.Option("--json")]


@rules_app.command("check")
def check(file: FileArg, box: Annotated[str | None, typer.Option(
        "--box", help="The box the rules must be for.")] = None, json_out: JsonOpt = False
          ) -> None:
    """Validate a rules file without applying it; exits 1 with each mistake's line and
    field."""
    from connectors.box.rules import load_rules

    _, rules = load_rules(file, box)
    found = {"file": str(file), "box": rules.box, "valid": True,
             "shares": {k: v if isinstance(v, str) else list(v)
                        for k, v in rules.outbound.share.items()}}
    if json_out:
        print_json(found)
    else:
        console.print(f"{file}: valid rules of box {rules.box}")


@rules_app.command("apply")
def apply(file: FileArg, box: BoxOpt, database_url: DatabaseOpt = None,
          namespace: NamespaceOpt = None, json_out: JsonOpt = False) -> None:
    """Validate the file and make it the box's rules: a new version, in force for the box's
    next transaction (no restart). The same file applied again changes nothing. Orders that
    wait for item codes are mapped again with the new rules."""
    from connectors.box.rules import apply_rules, load_rules

    settings = settings_from_env(namespace)
    text, _ = load_rules(file, box)  # mistakes are reported before any connection

    async def run() -> dict[str, object]:
        conn = await connect(await _migrated_database(settings, box, database_url), box=box)
        try:
            version, changed = await apply_rules(conn, text, file, box, getpass.getuser())
            mapped, waiting = await _remap_waiting(conn, box)
        finally:
            await conn.close()
        return {"box": box, "version": version, "changed": changed,
                "orders_mapped": mapped, "orders_waiting": waiting}

    result = asyncio.run(run())
    if json_out:
        print_json(result)
        return
    if result["changed"]:
        console.print(f"box {box}: rules version {result['version']} in force ({file})")
    else:
        console.print(f"box {box}: rules unchanged, version {result['version']} stays in force")
    if result["orders_mapped"]:
        console.print(f"orders mapped and on their way: {', '.join(result['orders_mapped'])}")  # type: ignore[arg-type]
    if result["orders_waiting"]:
        console.print(f"[yellow]still waiting for item codes:[/] "
                      f"{', '.join(result['orders_waiting'])}")  # type: ignore[arg-type]


async def _remap_waiting(conn: object, box: str) -> tuple[list[str], list[str]]:
    """Reference box: its sales orders waiting for item codes, mapped again."""
    import asyncpg

    from connectors.refbox.core import BusinessError
    from connectors.refbox.trade import remap_order, waiting_for_mapping

    assert isinstance(conn, asyncpg.Connection)
    try:
        orders = await waiting_for_mapping(conn)
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
        return [], []  # not a reference box: its own code maps its orders
    mapped: list[str] = []
    waiting: list[str] = []
    for order_id in orders:
        try:
            missing = await remap_order(conn, box, order_id)
        except BusinessError:
            continue  # it changed a moment ago (cancelled, amended): nothing to map here
        (waiting if missing else mapped).append(order_id)
    return mapped, waiting


@rules_app.command("show")
def show(box: BoxOpt, database_url: DatabaseOpt = None, namespace: NamespaceOpt = None,
         history: Annotated[bool, typer.Option(help="Every version, not the rules.")] = False,
         json_out: JsonOpt = False) -> None:
    """The box's rules in force (the file as applied), or the versions applied."""
    from connectors.box.rules import rules_history

    settings = settings_from_env(namespace)

    async def read() -> dict[str, object]:
        conn = await connect(await _migrated_database(settings, box, database_url), box=box)
        try:
            versions = await rules_history(conn)
            body = await conn.fetchval(
                "SELECT body FROM boxbus_rules ORDER BY version DESC LIMIT 1")
        finally:
            await conn.close()
        return {"box": box, "version": versions[-1]["version"] if versions else 0,
                "rules": body, "history": versions}

    found = asyncio.run(read())
    if json_out:
        print_json(found if history else {k: v for k, v in found.items() if k != "history"})
    elif history:
        for v in found["history"]:  # type: ignore[attr-defined]
            console.print(f"v{v['version']}  {v['applied_at']:%Y-%m-%d %H:%M:%S}  "
                          f"{v['applied_by'] or '?'}  {v['source']}")
    elif found["rules"] is None:
        console.print(f"box {box} has no rules applied: the defaults hold (orders land in "
                      "sales/new, codes as sent, contacts and stock shared with nobody)")
    else:
        console.print(f"# box {box}, rules version {found['version']}", highlight=False)
        console.print(found["rules"], highlight=False, markup=False)
