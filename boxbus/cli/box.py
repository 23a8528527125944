"""``boxbus box`` and ``boxbus relay``: a box's database and its outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

import typer

from boxbus.cli.boxdb import box_database, connect, require_migrated
from boxbus.cli.context import box_access, endpoints, kafka_access, serde_for, settings_from_env
from boxbus.cli.output import console, console_err, print_json
from bus.errors import ConfigError
from bus.settings import Settings

box_app = typer.Typer(help="A box's own database: the SDK's tables.", no_args_is_help=True)
relay_app = typer.Typer(help="Publish a box's outbox to Kafka.")

DatabaseOpt = Annotated[str | None, typer.Option(
    "--database-url", help="The box's PostgreSQL database (default: BOXBUS_DATABASE_URL, else "
    "the box's database on the local stack).")]
BoxOpt = Annotated[str, typer.Option("--box", help="The box's id.")]
NamespaceOpt = Annotated[str | None, typer.Option(
    help="Topic namespace of the network (default: BOXBUS_TOPIC_NAMESPACE).")]


def _run_until_signal(run: Callable[[], Awaitable[None]], stop: Callable[[], None]) -> None:
    """Run a long-lived service; SIGTERM or SIGINT asks it to finish its work in flight."""
    from bus import heap

    heap.settle()  # what start-up made stays out of the collector's way (bus.heap)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        await run()

    asyncio.run(main())


MetricsOpt = Annotated[int | None, typer.Option(
    "--metrics-port", help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics.")]


def _with_metrics(run: Callable[[], Awaitable[None]], port: int | None,
                  watch: Callable[[Any], Coroutine[Any, Any, None]],
                  ) -> Callable[[], Awaitable[None]]:
    """``run`` with a metrics endpoint beside it when a port is given."""
    if port is None:
        return run

    async def run_and_serve() -> None:
        from bus.metrics import MetricsServer

        server = MetricsServer(port)
        server.start()
        console_err.print(f"metrics on http://127.0.0.1:{server.port}/metrics")
        watcher = asyncio.create_task(watch(server))
        try:
            await run()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            server.stop()

    return run_and_serve


@box_app.command("migrate")
def migrate_(box: Annotated[str | None, typer.Option(
                 "--box", help="The box whose database to migrate (created on the local stack "
                 "if missing).")] = None,
             database_url: DatabaseOpt = None, namespace: NamespaceOpt = None,
             json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Create or upgrade the SDK's tables (outbox, inbox) in the box's database."""
    from connectors.box import migrate

    settings = settings_from_env(namespace)

    async def run() -> tuple[str, list[int]]:
        if box is None:
            dsn = database_url or (settings.database_url.get_secret_value()
                                   if settings.database_url else None)
            if dsn is None:
                raise ConfigError("which database? none given",
                                  hint="pass --box ID (its database on the local stack), "
                                  "--database-url postgresql://... or set BOXBUS_DATABASE_URL")
        else:
            dsn = await box_database(settings, box, database_url, create=True)
        await (await connect(dsn, box=box)).close()  # a readable error before migrating
        return dsn, await migrate(dsn)

    dsn, applied = asyncio.run(run())
    where = dsn.rsplit("@", 1)[-1]
    if json_out:
        print_json({"box": box, "database": where, "applied": applied})
    else:
        console.print(f"{where}: applied migrations {applied}" if applied
                      else f"{where}: already up to date")


@relay_app.callback(invoke_without_command=True)
def relay(ctx: typer.Context, box: Annotated[str | None, typer.Option(
              "--box", help="The box's id.")] = None,
          database_url: DatabaseOpt = None, namespace: NamespaceOpt = None,
          metrics_port: MetricsOpt = None) -> None:
    """Run the relay of one box until SIGTERM/SIGINT (one active per box; more wait)."""
    if ctx.invoked_subcommand is not None:
        return
    if box is None:
        raise typer.BadParameter("--box is required")
    from connectors.box import Relay
    from connectors.box.metrics import watch_relay

    settings = settings_from_env(namespace, service=True)
    dsn = asyncio.run(_migrated_database(settings, box, database_url))
    relay_ = Relay(settings, dsn, box_access(settings, box), box)
    console_err.print(f"relay for box {box}; SIGTERM or Ctrl-C stops it")
    _run_until_signal(_with_metrics(relay_.run, metrics_port,
                                    lambda server: watch_relay(relay_, server)), relay_.stop)
    console_err.print(f"relay stopped after publishing {relay_.published} event(s)")


async def _migrated_database(settings: Settings, box: str, given: str | None) -> str:
    """The box's database by the one rule (boxbus.cli.boxdb), refused without the SDK's tables."""
    dsn = await box_database(settings, box, given)
    await require_migrated(dsn, box)
    return dsn


@relay_app.command()
def status(box: BoxOpt, database_url: DatabaseOpt = None, namespace: NamespaceOpt = None,
           json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The outbox backlog of a box: rows waiting and the age of the oldest."""
    from connectors.box import backlog
    from connectors.box.relay import lock_key

    settings = settings_from_env(namespace)

    async def read() -> dict[str, object]:
        conn = await connect(await _migrated_database(settings, box, database_url), box=box)
        try:
            found = await backlog(conn)
            active = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid = 0 AND objid = $1 AND objsubid = 1 AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())",
                lock_key(box))
        finally:
            await conn.close()
        return {"box": box, "backlog_rows": found.rows, "oldest_age_seconds":
                round(found.age_seconds, 3), "relay_active": bool(active),
                "parked_rows": found.parked}

    result = asyncio.run(read())
    if json_out:
        print_json(result)
    else:
        console.print(f"box {box}: {result['backlog_rows']} event(s) waiting, oldest "
                      f"{result['oldest_age_seconds']} s; relay "
                      f"{'active' if result['relay_active'] else 'NOT running'}")
        if result["parked_rows"]:
            console.print(f"[yellow]{result['parked_rows']} event(s) parked: their topic does "
                          f"not exist[/]; create it, then `boxbus relay unpark --box {box}`")


@relay_app.command("unpark")
def unpark_(box: BoxOpt, database_url: DatabaseOpt = None, namespace: NamespaceOpt = None,
            topic: Annotated[str | None, typer.Option(
                help="Only the rows of this topic (default: all parked rows).")] = None,
            json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Put parked events (their topic did not exist) back into the outbox, in order."""
    from connectors.box import unpark

    settings = settings_from_env(namespace)

    async def move() -> int:
        conn = await connect(await _migrated_database(settings, box, database_url), box=box)
        try:
            return await unpark(conn, topic)
        finally:
            await conn.close()

    moved = asyncio.run(move())
    if json_out:
        print_json({"box": box, "unparked": moved, "topic": topic})
    else:
        console.print(f"{moved} event(s) back in the outbox of box {box}"
                      + (f" (topic {topic})" if topic else ""))


inbox_app = typer.Typer(help="Apply the events that reach a box, exactly once.",
                        no_args_is_help=True)


@inbox_app.command("run")
def inbox_run(
    box: BoxOpt,
    handlers: Annotated[str, typer.Option(
        help="Module that defines `handlers = Handlers()`, e.g. mybox.handlers.")],
    database_url: DatabaseOpt = None,
    namespace: NamespaceOpt = None,
    topic: Annotated[list[str] | None, typer.Option(
        help="Topics to read (default: the box's inbox topic).")] = None,
    unknown: Annotated[str, typer.Option(
        help="Events without a handler or schema: dead-letter or skip.")] = "dead-letter",
    receipts: Annotated[bool, typer.Option(
        help="Answer each applied or rejected event with a DeliveryReceipt.")] = False,
    region: Annotated[str | None, typer.Option(
        help="The box's region (receipts carry it).")] = None,
    track: Annotated[bool, typer.Option(
        help="Keep the business receipts of what the box sent (the router's reports and the "
        "recipients' answers update `boxbus box receipts`); its outbox must track too "
        "(Outbox(track=True)).")] = False,
    max_records: Annotated[int, typer.Option(
        help="Records per fetch at most (one transaction per fetch).", min=1)] = 1000,
    metrics_port: MetricsOpt = None,
) -> None:
    """Run the inbox of one box until SIGTERM/SIGINT."""
    import importlib

    from connectors.box import Handlers, Inbox, UnknownTypePolicy

    settings = settings_from_env(namespace, service=True)
    try:
        module = importlib.import_module(handlers)
    except ImportError as exc:
        raise ConfigError(f"cannot import handler module {handlers!r}: {exc}",
                          hint="give a module on PYTHONPATH that defines `handlers`") from exc
    registry = getattr(module, "handlers", None)
    if not isinstance(registry, Handlers):
        raise ConfigError(f"{handlers} has no `handlers = Handlers()`")
    try:
        policy = UnknownTypePolicy(unknown)
    except ValueError:
        raise typer.BadParameter("--unknown is dead-letter or skip") from None
    found = endpoints(settings)
    dsn = asyncio.run(_migrated_database(settings, box, database_url))
    inbox = Inbox(settings, dsn, box_access(settings, box), box, registry,
                  serde_for(settings, found.registry_url), topics=topic or None,
                  unknown_types=policy, receipts=receipts, region=region, track=track,
                  max_records=max_records)

    console_err.print(f"inbox of box {box} reading {', '.join(inbox.topics)}; SIGTERM stops it")
    from connectors.box.metrics import watch_inbox

    _run_until_signal(_with_metrics(inbox.run, metrics_port,
                                    lambda server: watch_inbox(inbox, server)), inbox.stop)
    console_err.print(f"inbox stopped: {inbox.applied} applied, {inbox.duplicates} duplicates")


def _credentials_of(settings: Settings, box: str) -> dict[str, str]:
    import json

    from bus import naming
    from bus.credentials import CredentialStore

    user = naming.box_principal(settings.topic_namespace, box)
    path = CredentialStore.of(settings).path(user)
    try:
        found: dict[str, str] = json.loads(path.read_text())
    except OSError:
        raise ConfigError(
            f"boxbus keeps no credentials for box {box} of network "
            f"{settings.topic_namespace!r} (looked for {path})",
            hint="declare the box in the topology and run `boxbus topology apply FILE` (it "
            "makes the box's Kafka user), or pass --namespace") from None
    return found


def _print_credentials(found: dict[str, str], json_out: bool) -> None:
    if json_out:
        print_json(found)
        return
    for key in ("username", "password", "bootstrap_servers", "security_protocol",
                "sasl_mechanism"):
        console.print(f"{key}: {found.get(key)}", highlight=False)


@box_app.command("credentials")
def credentials_(box: BoxOpt, namespace: NamespaceOpt = None,
                 json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What a box needs to connect to Kafka as itself (its own user may read only its inbox
    and write only its ingress topic). Keep it as secret as a password."""
    settings = settings_from_env(namespace)
    _print_credentials(_credentials_of(settings, box), json_out)


@box_app.command("rotate-credentials")
def rotate_credentials(box: BoxOpt, namespace: NamespaceOpt = None,
                       json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Give a box's Kafka user a new password. The old one logs in no more, and connections
    logged in with it end when their session does (the brokers' connections.max.reauth.ms; on
    the local stack BOXBUS_DEV_KAFKA_SESSION_SECONDS, 300 s by default)."""
    from bus import naming
    from bus.credentials import CredentialStore, describe, new_password
    from bus.security import ClusterSecurity

    settings = settings_from_env(namespace)
    operator = kafka_access(settings)
    user = naming.box_principal(settings.topic_namespace, box)

    async def rotate() -> dict[str, str]:
        security = ClusterSecurity(operator)
        if user not in await security.users():
            raise ConfigError(f"box {box} of network {settings.topic_namespace!r} has no "
                              f"Kafka user ({user}) on this cluster",
                              hint="declare it in the topology and run `boxbus topology apply "
                              "FILE`, or pass --namespace")
        password = new_password()
        store = CredentialStore.of(settings)
        store.save(user, password, operator)  # kept first: a crash never loses the new one
        await security.set_passwords({user: password})
        return describe(user, password, operator)

    found = asyncio.run(rotate())
    if not json_out:
        console_err.print(f"new password for {user}; the old one no longer logs in, and its "
                          "open sessions end within the brokers' session lifetime")
    _print_credentials(found, json_out)


@box_app.command("rotate-signing-key")
def rotate_signing_key(
    box: BoxOpt, namespace: NamespaceOpt = None,
    overlap: Annotated[float, typer.Option(
        min=0, help="Seconds the old key stays valid, so the box's running processes (which "
        "loaded it when they started) can be restarted meanwhile.")] = 3600.0,
    revoke: Annotated[bool, typer.Option(
        help="The old key leaked: it is valid no longer (no overlap); events dated from now "
        "on (or --since) with it are refused.")] = False,
    since: Annotated[str | None, typer.Option(
        help="With --revoke: from when the old key is distrusted (RFC 3339, e.g. "
        "2026-11-30T08:00:00Z), if it leaked earlier.")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Give a box a new signing key, published in the signing control topic; the old key's
    validity is closed (events it signed before then still verify, for auditors too)."""
    from datetime import timedelta

    from bus.credentials import CredentialStore
    from bus.envelope import parse_time
    from bus.topology.keys import rotate_signing_key as rotate

    settings = settings_from_env(namespace)
    operator = kafka_access(settings)
    moment = None
    if since is not None:
        try:
            moment = parse_time(since)
        except ValueError:
            raise ConfigError(f"--since {since!r} is not a time", hint="give it as RFC 3339, "
                              "e.g. 2026-11-30T08:00:00Z") from None
    done = asyncio.run(rotate(operator, CredentialStore.of(settings), settings.topic_namespace,
                              box, overlap=timedelta(seconds=overlap), revoke=revoke,
                              since=moment))
    if json_out:
        print_json(done.as_dict())
        return
    console.print(f"box {box} signs with key {done.current.key_id} from now on (its private "
                  f"half: {done.private_key_path}); restart the box's processes to take it up",
                  highlight=False)
    console.print(f"key {done.retired.key_id} is valid until "
                  f"{done.retired.valid_until.isoformat() if done.retired.valid_until else '-'}",
                  highlight=False)
