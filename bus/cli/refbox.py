"""``boxbus box run`` and ``boxbus box show``: the reference box as a service, and what it sees.

The box's database is ``--database-url``, else BOXBUS_DATABASE_URL, else a database of its own
on the local stack's PostgreSQL named after the namespace and the box (as ``make demo`` makes).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from bus.cli.box import BoxOpt, DatabaseOpt, _run_until_signal
from bus.cli.context import endpoints, serde_for, settings_from_env
from bus.cli.output import console, console_err, print_json
from bus.errors import ConfigError
from bus.settings import Settings

NamespaceOpt = Annotated[str | None, typer.Option(
    help="Topic namespace of the network (default: BOXBUS_TOPIC_NAMESPACE).")]


def _settings(namespace: str | None) -> Settings:
    settings = settings_from_env()
    if namespace:
        settings = settings.model_copy(update={"topic_namespace": namespace})
    return settings


async def _box_dsn(settings: Settings, given: str | None, box: str, create: bool) -> str:
    from bus.db import create_database
    from bus.devstack import LocalStack
    from connectors.refbox.network import database_name

    if given:
        return given
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    info = LocalStack(settings).status()
    if info is None or info.database_url is None:
        raise ConfigError(f"no database for box {box}",
                          hint="pass --database-url, set BOXBUS_DATABASE_URL, or start the "
                          "local stack (`boxbus dev up`)")
    name = database_name(settings.topic_namespace, box)
    if create:
        return await create_database(info.database_url, name)
    return info.database_url.rsplit("/", 1)[0] + "/" + name


def run(box: BoxOpt, database_url: DatabaseOpt = None, namespace: NamespaceOpt = None) -> None:
    """Run a reference box (relay + inbox) until SIGTERM or Ctrl-C. The box must be declared in
    the applied topology: its region comes from the control topics."""
    from bus.topology import read_control
    from bus.topology.control import decode
    from connectors.refbox import BoxService

    settings = _settings(namespace)
    found = endpoints(settings)

    async def serve() -> None:
        boxes = (await read_control(settings, found.bootstrap,
                                    settings.topic_namespace))["boxes"]
        if box not in boxes:
            raise ConfigError(f"box {box!r} is not in network {settings.topic_namespace!r}",
                              hint="declare it in the topology file and run "
                              "`boxbus topology apply FILE`, or pass --namespace")
        entry = decode(boxes[box])
        if entry.get("kind") == "partner":
            raise ConfigError(f"{box!r} is a partner without a box: it is reached by e-mail")
        dsn = await _box_dsn(settings, database_url, box, create=True)
        service = BoxService(settings, dsn, found.bootstrap, box,
                             serde_for(settings, found.registry_url))
        console_err.print(f"box {box} (region {entry['region']}) runs on {dsn.split('@')[-1]}; "
                          "SIGTERM or Ctrl-C stops it")
        running = asyncio.create_task(service.run())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
        service.stop()
        stopping.cancel()
        await running

    stop = asyncio.Event()
    _run_until_signal(serve, stop.set)


def show(box: BoxOpt, database_url: DatabaseOpt = None, namespace: NamespaceOpt = None,
         json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What a reference box sees: its orders, comments, goods in transit, stock, price lists
    and reports."""
    from connectors.refbox import box_view, render_view

    settings = _settings(namespace)

    async def read() -> dict[str, object]:
        return await box_view(await _box_dsn(settings, database_url, box, create=False))

    view = asyncio.run(read())
    if json_out:
        print_json(view)
    else:
        console.print(render_view(box, view))
