"""``boxbus company run``: one of a company's internal systems (sales, delivery, billing) as a
service: its relay, its inbox, the questions it answers and the ones it asks. Several
instances of one system may run: their responders share its questions, each asking instance
claims a replies partition of its own."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from boxbus.cli.box import BoxOpt, DatabaseOpt, NamespaceOpt, _run_until_signal
from boxbus.cli.boxdb import box_database
from boxbus.cli.context import box_access, endpoints, require_kafka, serde_for, settings_from_env
from boxbus.cli.output import console_err
from boxbus.cli.refbox import box_region

app = typer.Typer(help="A company's internal systems on the bus: sales, delivery, billing.",
                  no_args_is_help=True)


@app.command()
def run(box: BoxOpt,
        system: Annotated[str, typer.Option(help="Which system the box runs: sales, "
                                            "delivery or billing.")],
        sales: Annotated[str, typer.Option(help="The sales system's box.")],
        delivery: Annotated[str, typer.Option(help="The delivery system's box.")],
        billing: Annotated[str, typer.Option(help="The billing system's box.")],
        database_url: DatabaseOpt = None, namespace: NamespaceOpt = None,
        region: Annotated[str | None, typer.Option(
            help="The box's region (default: from the network's control topics).")] = None,
        ) -> None:
    """Run one internal system until SIGTERM or Ctrl-C, as its box's own Kafka user."""
    from bus import naming
    from bus.credentials import CredentialStore
    from bus.errors import ConfigError
    from connectors.box import Outbox
    from connectors.box.signatures import SignatureCheck
    from connectors.company import KINDS, Peers, SystemService

    if system not in KINDS:
        raise typer.BadParameter(f"{system!r}: the systems are {', '.join(KINDS)}",
                                 param_hint="--system")
    settings = settings_from_env(namespace, service=True)
    found = endpoints(settings)
    require_kafka(found.kafka)
    own = box_access(settings, box)
    stop = asyncio.Event()

    async def serve() -> None:
        where = await box_region(found.kafka, settings, box, region)
        dsn = await box_database(settings, box, database_url, create=True)
        serde = serde_for(settings, found.registry_url)
        # Signed as the box, for the types the network signs (an invoice is, by default).
        signatures = SignatureCheck(own, settings.topic_namespace)
        await signatures.load()
        signer = CredentialStore.of(settings).signer(naming.box_principal(
            settings.topic_namespace, box))
        if signatures.types and signer is None:
            raise ConfigError(f"box {box} has no signing key here, and the network signs "
                              f"{', '.join(sorted(signatures.types))}",
                              hint=f"`boxbus box rotate-signing-key --box {box}` makes one")
        outbox = Outbox(settings, serde, signer=signer, signed_types=signatures.types,
                        track=True)
        service = SystemService(settings, dsn, own, box, where, system,
                                Peers(sales=sales, delivery=delivery, billing=billing), serde,
                                outbox)
        console_err.print(f"{system} system of box {box} (region {where}) runs on "
                          f"{dsn.split('@')[-1]} as {own.principal}; SIGTERM or Ctrl-C stops it")
        from connectors.box.running import until_stopped

        await until_stopped(service, stop)

    _run_until_signal(serve, stop.set)
