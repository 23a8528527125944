"""``boxbus box run`` and ``boxbus box show``: the reference box as a service, and what it sees.

The box's database follows the one rule of :mod:`boxbus.cli.boxdb` (``box run`` creates it on the
local stack when it is missing).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from boxbus.cli.box import BoxOpt, DatabaseOpt, NamespaceOpt, _run_until_signal
from boxbus.cli.boxdb import box_database, connect
from boxbus.cli.context import (
    box_access,
    endpoints,
    require_kafka,
    serde_for,
    settings_from_env,
)
from boxbus.cli.output import console, console_err, print_json
from bus.errors import ConfigError, KafkaAccessDenied


def run(box: BoxOpt, database_url: DatabaseOpt = None, namespace: NamespaceOpt = None,
        region: Annotated[str | None, typer.Option(
            help="The box's region (default: read from the network's control topics, which "
            "needs the operator's access).")] = None) -> None:
    """Run a reference box (relay + inbox) until SIGTERM or Ctrl-C, connected as the box's own
    Kafka user. The box must be declared in the applied topology."""
    from bus.devstack import with_object_store
    from connectors.refbox import BoxService

    # The object store documents are fetched from: the settings', else the local stack's.
    settings = with_object_store(settings_from_env(namespace, service=True))
    found = endpoints(settings)
    require_kafka(found.kafka)
    own = box_access(settings, box)

    async def region_of_box() -> str:
        return await box_region(found.kafka, settings, box, region)

    async def serve() -> None:
        where = await region_of_box()
        dsn = await box_database(settings, box, database_url, create=True)
        service = BoxService(settings, dsn, own, box, serde_for(settings, found.registry_url),
                             region=where)
        console_err.print(f"box {box} (region {where}) runs on {dsn.split('@')[-1]} as "
                          f"{own.principal}; SIGTERM or Ctrl-C stops it")
        from connectors.box.running import until_stopped

        await until_stopped(service, stop)

    stop = asyncio.Event()
    _run_until_signal(serve, stop.set)


def show(box: BoxOpt, database_url: DatabaseOpt = None, namespace: NamespaceOpt = None,
         json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What a reference box sees: its orders, comments, goods in transit, stock, price lists
    and reports."""
    import asyncpg

    from connectors.refbox import box_view, render_view

    settings = settings_from_env(namespace)

    async def read() -> dict[str, object]:
        dsn = await box_database(settings, box, database_url)
        try:
            return await box_view(dsn)
        except asyncpg.UndefinedTableError as exc:
            raise ConfigError(
                f"{dsn.rsplit('@', 1)[-1]} is not a reference box's database ({exc})",
                hint=f"`boxbus box run --box {box}` sets one up; `box show` reads only "
                "reference boxes") from exc

    view = asyncio.run(read())
    if json_out:
        print_json(view)
    else:
        console.print(render_view(box, view))


def documents(box: BoxOpt, database_url: DatabaseOpt = None, namespace: NamespaceOpt = None,
              order: Annotated[str | None, typer.Option(
                  "--order", help="Only the documents of this order.")] = None,
              get: Annotated[str | None, typer.Option(
                  "--get", help="Write this document's bytes to --out.")] = None,
              out: Annotated[Path | None, typer.Option(
                  "--out", help="Where --get writes the document.")] = None,
              json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The documents a reference box sent and received with its orders; with --get, one of
    them, checked against its SHA-256. A box reads only documents sent to it or by it."""
    import hashlib

    from connectors.refbox.documents import documents as list_documents
    from connectors.refbox.documents import object_key

    if (get is None) != (out is None):
        raise typer.BadParameter("--get and --out go together", param_hint="--get/--out")
    settings = settings_from_env(namespace)

    async def read() -> Any:
        conn = await connect(await box_database(settings, box, database_url), box=box)
        try:
            if get is None:
                return await list_documents(conn, order)
            row = await conn.fetchrow(
                "SELECT * FROM documents WHERE document_id = $1 ORDER BY direction = "
                "'incoming' DESC LIMIT 1", get)
        finally:
            await conn.close()
        if row is None:
            raise ConfigError(f"box {box} has no document {get}: a box reads only the "
                              "documents sent to it or by it",
                              hint=f"`boxbus box documents --box {box}` lists them")
        content = row["content"]
        if content is None:  # sent by this box by claim check: in the object store
            from bus.devstack import with_object_store
            from bus.objectstore import ObjectStore

            async with ObjectStore.from_settings(with_object_store(settings)) as store:
                content = await store.get(object_key(box, row["sha256"]))
        if hashlib.sha256(content).hexdigest() != row["sha256"]:
            raise ConfigError(f"document {get} does not match its SHA-256 {row['sha256']}: "
                              "it was changed where it is kept; not written")
        assert out is not None
        out.write_bytes(content)
        return {"document_id": get, "file_name": row["file_name"], "out": str(out),
                "size_bytes": len(content), "sha256": row["sha256"]}

    found = asyncio.run(read())
    if json_out:
        print_json(found)
    elif get is not None:
        console.print(f"wrote {found['file_name']} ({found['size_bytes']:,} bytes, SHA-256 "
                      f"checked) to {found['out']}")
    elif not found:
        console.print(f"box {box} has no documents" + (f" for order {order}" if order else ""))
    else:
        from rich.table import Table

        table = Table("document", "order", "direction", "with", "type", "file", "size",
                      "carried", title=f"documents of box {box}", title_justify="left")
        for d in found:
            table.add_row(d["document_id"], d["order_id"], d["direction"], d["counterparty"],
                          d["document_type"], d["file_name"], f"{d['size_bytes']:,} B",
                          d["carried"])
        console.print(table)


async def box_region(kafka: Any, settings: Any, box: str, region: str | None) -> str:
    """The box's region: as given, else from the network's control topics."""
    from bus.topology import read_control
    from bus.topology.control import decode

    if region is not None:
        return region
    try:
        boxes = (await read_control(kafka, settings.topic_namespace))["boxes"]
    except KafkaAccessDenied as exc:
        raise ConfigError(f"{kafka.principal} may not read the network's control "
                          "topics to learn the box's region",
                          hint="pass --region R") from exc
    if box not in boxes:
        raise ConfigError(f"box {box!r} is not in network {settings.topic_namespace!r}",
                          hint="declare it in the topology file and run "
                          "`boxbus topology apply FILE`, or pass --namespace")
    entry = decode(boxes[box])
    if entry.get("kind") == "partner":
        raise ConfigError(f"{box!r} is a partner without a box: it is reached by e-mail")
    return str(entry["region"])
