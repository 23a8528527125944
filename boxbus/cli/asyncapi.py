"""``boxbus asyncapi export``: the network as an AsyncAPI 3.0 document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml

from boxbus.cli.context import settings_from_env
from boxbus.cli.output import console_err

app = typer.Typer(help="The network as an AsyncAPI 3.0 document.", no_args_is_help=True)


@app.command("export")
def export(
    topology: Annotated[Path | None, typer.Option(
        help="The topology file: a channel per topic it makes. Without it: the contract, with "
        "address templates.")] = None,
    namespace: Annotated[str | None, typer.Option(
        help="Topic namespace (default: the topology's, else BOXBUS_TOPIC_NAMESPACE).")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write it to this file (default: standard output).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML.")] = False,
) -> None:
    """Channels per topic with their Kafka bindings, a message per event type with its Avro
    schema and CloudEvents headers, each box's operations. The brokers and the registry are
    named as a server when they are known (settings, or the running local stack)."""
    from bus.asyncapi import document
    from bus.catalog import SchemaCatalog
    from bus.devstack import LocalStack
    from bus.topology import load_topology

    settings = settings_from_env(namespace)
    network = load_topology(topology) if topology is not None else None
    info = None if settings.kafka_bootstrap_servers else LocalStack(settings).status()
    bootstrap = settings.kafka_bootstrap_servers or (info.kafka_bootstrap if info else None)
    registry = settings.schema_registry_url or (info.schema_registry_url if info else None)
    doc = document(SchemaCatalog.load(settings.schemas_dir), network,
                   namespace=settings.topic_namespace, bootstrap=bootstrap,
                   registry_url=registry)
    text = (json.dumps(doc, indent=2) + "\n" if as_json
            else yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text)
    console_err.print(f"wrote {output}: {len(doc['channels'])} channels, "
                      f"{len(doc['operations'])} operations, "
                      f"{len(doc['components']['messages'])} messages")
