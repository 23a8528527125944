"""The ``boxbus`` command. Each group lives in its own module; this one wires them together and
turns every :class:`~bus.errors.BoxbusError` into one readable message and a non-zero exit."""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import asyncpg
import typer
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from pydantic import ValidationError

from boxbus.cli import (
    aggregator,
    analytics,
    asyncapi,
    bench,
    box,
    campaign,
    company,
    demo,
    dev,
    dlq,
    events,
    mailer,
    partner,
    receipts,
    refbox,
    router,
    rules,
    schemas,
    topology,
)
from boxbus.cli.output import console_err
from bus.errors import BoxbusError

app = typer.Typer(
    name="boxbus",
    help="boxbus: the event bus of a network of business boxes, on Apache Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dev.app, name="dev")
app.add_typer(schemas.app, name="schemas")
app.add_typer(events.app, name="events")
app.add_typer(dlq.app, name="dlq")
box.box_app.command("run")(refbox.run)
box.box_app.command("show")(refbox.show)
box.box_app.command("documents")(refbox.documents)
box.box_app.command("receipts")(receipts.receipts)
box.box_app.add_typer(rules.rules_app, name="rules")
app.add_typer(box.box_app, name="box")
app.add_typer(box.relay_app, name="relay")
app.add_typer(box.inbox_app, name="inbox")
app.add_typer(bench.app, name="bench")
app.add_typer(topology.app, name="topology")
app.add_typer(router.app, name="router")
app.add_typer(asyncapi.app, name="asyncapi")
app.add_typer(aggregator.app, name="aggregator")
app.add_typer(analytics.app, name="analytics")
app.add_typer(mailer.app, name="mailer")
app.add_typer(partner.app, name="partner")
app.add_typer(campaign.app, name="campaign")
app.add_typer(company.app, name="company")
app.command("demo")(demo.demo)


def _fail(text: str, what_to_do: str, status: int) -> NoReturn:
    console_err.print(f"[bold red]error:[/] {text}\n  what to do: {what_to_do}",
                      highlight=False)
    sys.exit(status)


_REFUSED = {TopicAuthorizationFailedError: "a topic",
            GroupAuthorizationFailedError: "a consumer group",
            ClusterAuthorizationFailedError: "the cluster"}


def main(argv: list[str] | None = None) -> Any:
    try:
        return app(args=argv, standalone_mode=True)
    except BoxbusError as exc:
        console_err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        sys.exit(2 if not exc.retriable else 1)
    except (TopicAuthorizationFailedError, GroupAuthorizationFailedError,
            ClusterAuthorizationFailedError) as exc:
        _fail(f"Kafka refused access to {_REFUSED[type(exc)]} ({exc.__class__.__name__}): no "
              "ACL allows it for the user this command logs in as",
              "a box reaches only its own topics and groups (`boxbus topology plan FILE` lists "
              "the ACLs); network-wide commands log in as the cluster's operator", 2)
    except KafkaError as exc:
        _fail(f"Kafka: {exc}", "check that Kafka runs (`boxbus dev status`) and "
              "BOXBUS_KAFKA_BOOTSTRAP_SERVERS and its security settings", 1)
    except ValidationError as exc:
        _fail(f"invalid settings: {exc}", "fix the BOXBUS_* variable named above", 2)
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        _fail(f"PostgreSQL: {exc.__class__.__name__}: {exc}", "check that the database runs "
              "(`boxbus dev status`) and that the URL names the right database", 1)
    except Exception as exc:
        # The last resort: a bug of boxbus. One line by default; the traceback on request.
        if os.environ.get("BOXBUS_TRACEBACK"):
            raise
        _fail(f"unexpected {exc.__class__.__name__}: {exc}", "this is a bug of boxbus; run "
              "again with BOXBUS_TRACEBACK=1 and report the traceback", 3)


if __name__ == "__main__":
    main()
