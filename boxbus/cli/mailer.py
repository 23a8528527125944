"""``boxbus mailer``: partners without a box get their events by e-mail (``run``), and what
the mailer did is visible without reading Kafka (``status``)."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from boxbus.cli.analytics import service_dsn
from boxbus.cli.box import _run_until_signal
from boxbus.cli.context import (
    endpoints,
    require_kafka,
    serde_for,
    service_access,
    settings_from_env,
)
from boxbus.cli.output import console, console_err, print_json
from bus.errors import ConfigError
from bus.settings import Settings

app = typer.Typer(help="The mailer: e-mail for partners without a box, and their replies.",
                  no_args_is_help=True)

DatabaseOption = Annotated[str | None, typer.Option(
    "--database-url", help="The mailer's database (default: BOXBUS_DATABASE_URL, else "
    "<namespace>_mailer on the local stack, created if missing).")]
NamespaceOption = Annotated[str | None, typer.Option(
    help="Topic namespace of the network (default: BOXBUS_TOPIC_NAMESPACE).")]


def signing_key(settings: Settings) -> bytes:
    """The key of reply addresses and invitation links: BOXBUS_MAIL_SIGNING_KEY, else (on the
    local stack) one made once and kept in its run directory."""
    if settings.mail_signing_key is not None:
        return settings.mail_signing_key.get_secret_value().encode()
    from bus.devstack import LocalStack

    if settings.external_kafka or LocalStack(settings).status() is None:
        raise ConfigError("the mailer has no signing key",
                          hint="set BOXBUS_MAIL_SIGNING_KEY to a long random secret (the same "
                          "for every mailer of the network, kept as long as its links and "
                          "reply addresses must work)")
    path = Path(settings.run_dir) / "mail" / f"{settings.topic_namespace}.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(32))
    return path.read_text().strip().encode()


def smtp_server(settings: Settings) -> tuple[str, int]:
    """Where mail goes: BOXBUS_SMTP_HOST/PORT, else the local stack's SMTP server."""
    if settings.smtp_host:
        return settings.smtp_host, settings.smtp_port
    from bus.devstack import LocalStack

    info = LocalStack(settings).status()
    if info is None or info.smtp.host is None or info.smtp.port is None:
        raise ConfigError("the mailer does not know where to send mail",
                          hint="set BOXBUS_SMTP_HOST (and BOXBUS_SMTP_PORT, _TLS, _USERNAME, "
                          "_PASSWORD), or start the local stack (`boxbus dev up`)")
    return info.smtp.host, info.smtp.port


def _endpoint(text: str, option: str) -> Any:
    from connectors.mail.service import Endpoint

    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{option} {text!r} is not HOST:PORT",
                          hint=f"for example {option} 127.0.0.1:2525, or {option} none")
    return Endpoint(host, int(port))


@app.command("run")
def run(
    database_url: DatabaseOption = None,
    namespace: NamespaceOption = None,
    replies: Annotated[str, typer.Option(
        help="Where the SMTP endpoint for replies and bounces listens (HOST:PORT; the MX of "
        "BOXBUS_MAIL_DOMAIN must lead here), or 'none'.")] = "127.0.0.1:2525",
    http: Annotated[str, typer.Option(
        help="Where the HTTP endpoint of its links (unsubscribe, invitations) listens "
        "(HOST:PORT; BOXBUS_MAIL_PUBLIC_URL must lead here), or 'none'.")] = "127.0.0.1:8025",
    workers: Annotated[int, typer.Option(help="Partners written to at once (one SMTP "
                                         "connection each).", min=1, max=64)] = 4,
    json_out: Annotated[bool, typer.Option("--json", help="Print the totals as JSON at exit.")
                        ] = False,
) -> None:
    """Mail partners without a box until SIGTERM or Ctrl-C, as the network's mailer user."""
    from connectors.mail.service import Mailer

    settings = settings_from_env(namespace, service=True)
    listen = None if replies.lower() == "none" else _endpoint(replies, "--replies")
    web = None if http.lower() == "none" else _endpoint(http, "--http")
    found = endpoints(settings)
    require_kafka(found.kafka)
    kafka = service_access(settings, "mailer")
    key = signing_key(settings)
    host, port = smtp_server(settings)
    dsn = service_dsn(settings, database_url, "mailer", create=True)
    mailer = Mailer(settings, dsn, kafka, serde_for(settings, found.registry_url), key=key,
                    smtp_host=host, smtp_port=port, listen=listen, http=web,
                    workers=workers)
    stop = asyncio.Event()
    console_err.print(f"mailer of namespace {mailer.namespace}: mail to {host}:{port}, replies "
                      f"at {replies}, links at {http}; SIGTERM or Ctrl-C stops it",
                      highlight=False)
    _run_until_signal(lambda: mailer.run(stop), stop.set)
    totals = {**(mailer.courier.stats.as_dict() if mailer.courier else {}),
              "replies": mailer.replies, "bounces": mailer.bounces}
    if json_out:
        print_json(totals)
    else:
        console_err.print("mailer stopped: " + ", ".join(f"{v} {k}" for k, v in totals.items()))


async def _status(dsn: str) -> list[dict[str, Any]]:
    import asyncpg

    from boxbus.cli.boxdb import connect
    from connectors.mail.report import partner_status

    conn = await connect(dsn, what="the mailer's database")
    try:
        return await partner_status(conn)
    except asyncpg.UndefinedTableError as exc:
        raise ConfigError("the database given has no mailer tables",
                          hint="give the mailer's own database (the one `boxbus mailer run` "
                          "uses); the mailer makes its tables when it starts") from exc
    finally:
        await conn.close()


@app.command("status")
def status(
    database_url: DatabaseOption = None,
    namespace: NamespaceOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object for programs.")
                        ] = False,
) -> None:
    """What the mailer did, per partner: queued, sent, given up; why a mailbox waits."""
    settings = settings_from_env(namespace)
    dsn = service_dsn(settings, database_url, "mailer", create=False,
                      first="run `boxbus mailer run` for this namespace first")
    rows = asyncio.run(_status(dsn))
    if json_out:
        print_json({"partners": rows})
        return
    if not rows:
        console.print("(the mailer has taken no mail yet)")
        return
    table = Table("partner", "queued", "sent", "dead", "onboarded", "waits until",
                  "last error")
    for row in rows:
        table.add_row(row["partner"], str(row["queued"]), str(row["sent"]), str(row["dead"]),
                      str(row["onboarded"]), row["next_attempt_at"] or "",
                      row["last_error"] or "")
    console.print(table)
