"""``boxbus partner``: a partner without a box becomes a box with everything mailed to it so
far (``onboard``), and what the mailer still holds for it follows later (``replay``)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from boxbus.cli.analytics import service_dsn
from boxbus.cli.context import kafka_access, settings_from_env
from boxbus.cli.mailer import DatabaseOption, NamespaceOption, signing_key
from boxbus.cli.output import console, console_err, print_json
from bus.credentials import CredentialStore

app = typer.Typer(help="Partners without a box: onboarding into a box of their own.",
                  no_args_is_help=True)


@app.command("onboard")
def onboard(
    partner: Annotated[str, typer.Argument(help="The partner's id in the network.")],
    token: Annotated[str, typer.Option(help="The invitation token: the last part of the "
                                       "link in any e-mail the partner got.")],
    region: Annotated[str, typer.Option(help="The region its box belongs to.")],
    database_url: DatabaseOption = None,
    namespace: NamespaceOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object for programs.")
                        ] = False,
) -> None:
    """Turn the partner into a box (its user, credentials, inbox, ACLs, control record) and
    write everything mailed to it into its new inbox, in order."""
    from connectors.mail.onboarding import onboard as run

    settings = settings_from_env(namespace)
    operator = kafka_access(settings)
    key = signing_key(settings)
    dsn = service_dsn(settings, database_url, "mailer", create=False,
                      first="the partner's e-mails come from `boxbus mailer run`")

    def say(text: str) -> None:
        if not json_out:
            console_err.print(f"· {text}", highlight=False)

    done = asyncio.run(run(settings, operator, dsn, key, partner, token, region, say=say))
    if json_out:
        print_json(done.as_dict())
        return
    store = CredentialStore.of(settings)
    console.print(f"{partner} is now a box of network {settings.topic_namespace} in region "
                  f"{region}: user {done.principal}, inbox {done.inbox}; "
                  f"{done.replayed + done.stragglers} event(s) from its e-mails are in its "
                  f"inbox. Its credentials are in {store.path(done.principal)}.",
                  highlight=False)
    console.print(f"Next: run its box (`boxbus box run --box {partner}`), and write it into "
                  f"the topology file as a box: - {{id: {partner}, region: {region}, "
                  f"company: ..., onboarded: ...}} (`boxbus topology plan FILE` shows the "
                  "exact line).", highlight=False)


@app.command("replay")
def replay(
    partner: Annotated[str, typer.Argument(help="The onboarded partner's id.")],
    database_url: DatabaseOption = None,
    namespace: NamespaceOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object for programs.")
                        ] = False,
) -> None:
    """Write what the mailer still holds for an onboarded partner into its inbox (events the
    router sent by mail before it took up the change); running it again writes nothing
    twice."""
    from boxbus.cli.boxdb import connect
    from connectors.mail.onboarding import replay as run

    settings = settings_from_env(namespace)
    operator = kafka_access(settings)
    dsn = service_dsn(settings, database_url, "mailer", create=False,
                      first="the partner's e-mails come from `boxbus mailer run`")

    async def go() -> int:
        conn = await connect(dsn, what="the mailer's database")
        try:
            return await run(settings, operator, conn, partner)
        finally:
            await conn.close()

    count = asyncio.run(go())
    result: dict[str, Any] = {"partner": partner, "replayed": count}
    if json_out:
        print_json(result)
    else:
        console.print(f"{count} event(s) written into the inbox of {partner}")
