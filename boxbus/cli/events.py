"""``boxbus events``: publish an event, tail a topic."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from boxbus.cli.context import endpoints, kafka_access, serde_for, settings_from_env
from boxbus.cli.output import console, console_err, print_json
from bus import naming
from bus.catalog import SchemaCatalog
from bus.envelope import Envelope, format_time
from bus.errors import BadEvent, ConfigError
from bus.events import EventBase
from bus.examples import example, load_event
from bus.kafka import KafkaAccess, LoginWatch, start_or_close
from bus.producer import EventProducer
from bus.serde import EventSerde
from bus.settings import Settings
from bus.topics import TopicSpec, ensure_topics, partitions_of, topic_exists
from bus.validation import check_record

app = typer.Typer(help="Publish events and watch topics.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def event_json(event: EventBase) -> Any:
    return json.loads(event.model_dump_json())


@app.command()
def publish(
    event_type: Annotated[str, typer.Argument(
        metavar="TYPE", help="Event type: OrderPlaced, order-placed or the full name.")],
    use_example: Annotated[bool, typer.Option(
        "--example", help="Publish the type's example (a fresh id and time each time).")] = False,
    file: Annotated[Path | None, typer.Option(
        help="Publish the event in this JSON file (the form --example --dry-run prints).")
    ] = None,
    topic: Annotated[str | None, typer.Option(
        help="Topic to publish to (default: the ingress topic of the event's source box).")
    ] = None,
    create_topic: Annotated[bool, typer.Option(
        help="Create the topic (3 partitions) if it does not exist.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the event and its headers; publish nothing.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Publish one event: registered, encoded, sent with CloudEvents headers."""
    settings = settings_from_env()
    fullname = SchemaCatalog.load(settings.schemas_dir).by_short_name(event_type).fullname
    if use_example == (file is not None):
        raise typer.BadParameter("give exactly one of --example and --file FILE")
    if file is not None:
        try:
            text = file.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror}") from exc
        event = load_event(fullname, text, origin=str(file))
    else:
        event = example(fullname, schemas_dir=settings.schemas_dir)
    target = topic or naming.ingress_topic(
        settings.topic_namespace, event.meta.source_box)
    if dry_run:
        print_json({"topic": target, "headers": {
            k: v.decode() for k, v in Envelope.of(event).to_headers()},
            "event": event_json(event)})
        return
    result = asyncio.run(_publish(settings, event, target, create_topic))
    if json_out:
        print_json(result)
    else:
        console.print(f"published {result['type']} id={result['event_id']} key={result['key']} "
                      f"to {result['topic']}[{result['partition']}]@{result['offset']} "
                      f"(schema id {result['schema_id']})", highlight=False)


async def _publish(settings: Settings, event: EventBase, topic: str,
                   create: bool) -> dict[str, Any]:
    found = endpoints(settings)
    if create:
        await ensure_topics(found.kafka, [TopicSpec(topic, 3)])
    elif not await topic_exists(found.kafka, topic):
        raise ConfigError(f"topic {topic} does not exist",
                          hint="declare the box in the topology and run `boxbus topology "
                          "apply`, or pass --create-topic")
    async with EventProducer(settings, found.kafka,
                             serde_for(settings, found.registry_url)) as producer:
        published = await producer.publish(event, topic)
    envelope = published.encoded.envelope
    return {"type": envelope.type, "event_id": envelope.id, "key": envelope.partition_key,
            "topic": topic, "partition": published.partition, "offset": published.offset,
            "schema_id": published.encoded.schema_id}


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="Topic to read, e.g. boxbus.region.north.")],
    from_beginning: Annotated[bool, typer.Option(
        "--from-beginning", help="Start at the oldest record instead of the newest.")] = False,
    limit: Annotated[int | None, typer.Option(help="Stop after this many records.")] = None,
    idle: Annotated[float | None, typer.Option(
        help="Stop when nothing arrived for this many seconds (default: follow).")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="One JSON object per line (envelope and event).")] = False,
) -> None:
    """Decode and print the events of a topic as they arrive (no consumer group, nothing
    committed). Records that are not valid events are shown with the reason."""
    settings = settings_from_env()
    found = endpoints(settings)
    serde = serde_for(settings, found.registry_url)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_tail(settings, found.kafka, serde, topic, from_beginning, limit, idle,
                          json_out))


async def _tail(settings: Settings, kafka: KafkaAccess, serde: EventSerde, topic: str,
                from_beginning: bool, limit: int | None, idle: float | None,
                json_out: bool) -> None:
    if not await topic_exists(kafka, topic):
        raise ConfigError(f"topic {topic} does not exist",
                          hint="check the name; `boxbus topology plan FILE` lists the topics "
                          "of a network")
    consumer = kafka.consumer(enable_auto_commit=False)
    await start_or_close(consumer, kafka)
    shown = 0
    try:
        tps = await partitions_of(kafka, topic)
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        if not json_out:
            console_err.print(f"reading {topic} ({len(tps)} partitions); Ctrl-C stops")
        last_seen = time.monotonic()
        login = LoginWatch(kafka)  # a tail left open outlives a rotated password: it ends
        async with login.running():
            while limit is None or shown < limit:
                async with login.guard():
                    fetched = await consumer.getmany(timeout_ms=500)
                records = sorted((r for rs in fetched.values() for r in rs),
                                 key=lambda r: (r.timestamp, r.partition, r.offset))
                if records:
                    last_seen = time.monotonic()
                    login.records_arrived()
                elif idle is not None and time.monotonic() - last_seen > idle:
                    break
                for record in records:
                    if limit is not None and shown >= limit:
                        break
                    await _show(settings, serde, record, json_out)
                    shown += 1
    finally:
        await consumer.stop()
    if not json_out:
        console_err.print(f"{shown} record(s)")


async def _show(settings: Settings, serde: EventSerde, record: Any, json_out: bool) -> None:
    where = f"{record.partition}@{record.offset}"
    try:
        checked = await check_record(record, serde, settings.topic_namespace)
    except BadEvent as exc:
        if json_out:
            print_json({"partition": record.partition, "offset": record.offset,
                        "bad": {"code": exc.code, "reason": exc.message}})
        else:
            console.print(f"[red]{where} not an event[/] ({exc.code}): {exc.message}",
                          highlight=False)
        return
    envelope, event = checked.envelope, checked.event
    if json_out:
        print(json.dumps({"partition": record.partition, "offset": record.offset,  # noqa: T201
                          "envelope": {"id": envelope.id, "type": envelope.type,
                                       "source": envelope.source, "region": envelope.region,
                                       "time": format_time(envelope.time),
                                       "key": envelope.partition_key,
                                       "target_box": envelope.target_box,
                                       "correlation_id": envelope.correlation_id},
                          "event": event_json(event)}, separators=(",", ":")))
        return
    # Plain fields first, then lines and other nested values (cut to one screen line or so).
    fields = [(k, v) for k, v in event_json(event).items()
              if k != "meta" and v not in (None, [], {})]
    fields.sort(key=lambda kv: not isinstance(kv[1], str | int))
    summary = " ".join(
        f"{k}={v if isinstance(v, str | int) else json.dumps(v, separators=(',', ':'))}"
        for k, v in fields)
    target = f" → {envelope.target_box}" if envelope.target_box else ""
    console.print(
        f"[dim]{format_time(envelope.time)} {where:>8}[/] [bold]{envelope.type.rsplit('.', 1)[1]}"
        f"[/] key={envelope.partition_key} from {envelope.source_box}{target} "
        f"[dim]id={envelope.id}[/]\n    {summary[:300]}", highlight=False, soft_wrap=True)


@app.command()
def verify(
    topic: Annotated[str, typer.Argument(help="The topic that holds the record.")],
    offset: Annotated[int, typer.Argument(help="Its offset.")],
    partition: Annotated[int, typer.Option(help="Its partition.")] = 0,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Who signed a record, with which key, and whether it is still the signed one: for an
    auditor. Exits 1 when the signature is missing or does not hold."""
    from bus.signing import payload
    from connectors.box.signatures import SignatureCheck

    settings = settings_from_env()
    kafka = kafka_access(settings)

    async def check() -> tuple[Any, Any]:
        record = await _record_at(kafka, topic, partition, offset)
        keys = SignatureCheck(kafka, settings.topic_namespace)
        await keys.load()
        return record, keys.ring.verify(dict(record.headers or ()), record.value)

    record, verdict = asyncio.run(check())
    covered = json.loads(payload(dict(record.headers or ()), record.value))
    result = {"topic": topic, "partition": partition, "offset": offset, "ok": verdict.ok,
              "signed_by": verdict.box if verdict.ok else None, "key_id": verdict.key_id,
              "reason": verdict.reason, "covered": covered}
    if json_out:
        print_json(result)
    else:
        mark = "[green]valid[/]" if verdict.ok else "[red]NOT valid[/]"
        console.print(f"{mark}: {verdict.reason}", highlight=False)
        for name, value in covered.items():
            console.print(f"  {name}: {value}", highlight=False)
    if not verdict.ok:
        raise typer.Exit(1)


async def _record_at(kafka: KafkaAccess, topic: str, partition: int, offset: int) -> Any:
    from aiokafka import TopicPartition

    partitions = await partitions_of(kafka, topic)
    tp = TopicPartition(topic, partition)
    if tp not in partitions:
        raise ConfigError(f"topic {topic} has no partition {partition}" if partitions
                          else f"topic {topic} does not exist",
                          hint="`boxbus events tail TOPIC --from-beginning` shows partitions "
                          "and offsets")
    consumer = kafka.consumer(enable_auto_commit=False)
    await start_or_close(consumer, kafka)
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        if not 0 <= offset < end:
            raise ConfigError(f"{topic}[{partition}] has no offset {offset} (it ends at {end})")
        consumer.seek(tp, offset)
        async with asyncio.timeout(30):
            while True:
                for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                    for record in records:
                        if record.offset >= offset:
                            return record
    finally:
        await consumer.stop()
