"""``boxbus demo``: the main job on the embedded local stack.

For now: bring the stack up, create the five region topics of the reference network, publish
purchase orders of each region's box to a supplier (OrderPlaced, then the supplier's
OrderConfirmed, keyed by order id) as Avro events on the real registry with CloudEvents headers,
slip in one malformed record, and read everything back through a consumer group that commits
after processing: the good events in order, the bad one in the dead-letter topic with its
reason. Later issues grow this into the whole network of boxes.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from rich import box
from rich.table import Table

from bus import naming
from bus.cli.context import serde_for, settings_from_env
from bus.cli.dev import render
from bus.cli.output import console, console_err, print_json
from bus.consumer import EventConsumer
from bus.devstack import LocalStack
from bus.errors import ComponentFailed
from bus.events import EventBase
from bus.examples import example
from bus.producer import EventProducer
from bus.serde import EventSerde
from bus.settings import Settings
from bus.topics import TopicSpec, ensure_topics, read_topic

REGIONS = ["north", "south", "east", "west", "centre"]


def _order_events(run_id: str, count: int) -> list[EventBase]:
    """Each order: placed by its region's box, then confirmed by the supplier."""
    events: list[EventBase] = []
    for n in range(count):
        region = REGIONS[n % len(REGIONS)]
        order_id = f"po-{region}-{run_id}-{n:03d}"
        for fullname, source, target in (("boxbus.orders.OrderPlaced", region, "dairy-hub"),
                                          ("boxbus.orders.OrderConfirmed", "dairy-hub", region)):
            event = example(fullname)
            meta = event.meta.model_copy(update={  # type: ignore[attr-defined]
                "region": region, "aggregate_key": order_id, "correlation_id": order_id,
                "source_box": source, "target_box": target, "causation_id": None})
            update: dict[str, Any] = {"meta": meta, "order_id": order_id}
            if fullname.endswith("OrderPlaced"):
                update["buyer_box"] = region
            events.append(event.model_copy(update=update))
    return events


async def _round_trip(settings: Settings, bootstrap: str, serde: EventSerde,
                      orders: int) -> dict[str, Any]:
    ns = settings.topic_namespace
    topics = [naming.region_topic(ns, r) for r in REGIONS]
    created = await ensure_topics(settings, bootstrap, [TopicSpec(t, 3) for t in topics])
    group = f"{ns}.demo"
    run_id = uuid.uuid4().hex[:6]
    events = _order_events(run_id, orders)
    sent_at: dict[str, float] = {}
    async with EventProducer(settings, bootstrap, serde) as producer:
        for event in events:
            sent_at[event.meta.event_id] = time.time()  # type: ignore[attr-defined]
            await producer.publish(event)
    # One record that is not an event: random bytes under a real event's key and headers.
    template = await serde.encode(events[0], topics[0])
    raw = AIOKafkaProducer(bootstrap_servers=bootstrap, **settings.kafka_client_options())
    await raw.start()
    try:
        await raw.send_and_wait(topics[0], b"\x42" + os.urandom(40), key=template.key,
                                headers=template.headers)
    finally:
        await raw.stop()

    rows: list[dict[str, Any]] = []
    async with EventConsumer(settings, bootstrap, topics, group, serde) as consumer:
        deadline = time.monotonic() + 60
        async for batch in consumer.batches():
            for d in batch:
                if d.envelope.id not in sent_at:
                    continue  # left over from an earlier run that stopped early
                rows.append({"topic": d.topic, "partition": d.partition, "offset": d.offset,
                             "key": d.envelope.partition_key, "type": d.envelope.type,
                             "region": d.envelope.region,
                             "ms_after_send": round((time.time() - sent_at[d.envelope.id])
                                                    * 1000, 1)})
            if len(rows) >= len(events) and consumer.dead_lettered >= 1:
                break
            if time.monotonic() > deadline:
                break
        dead = consumer.dead_lettered
    letters = [r for r in await read_topic(settings, bootstrap, naming.dlq_topic(topics[0]))
               if dict(r.headers).get("ce_id") == template.envelope.id.encode()]
    committed = await _committed(settings, bootstrap, group)
    order_kept = all(
        [r["type"].rsplit(".", 1)[1] for r in rows if r["key"] == key]
        == ["OrderPlaced", "OrderConfirmed"]
        for key in {e.meta.aggregate_key for e in events})  # type: ignore[attr-defined]
    return {
        "topics": topics, "topics_created": created, "group": group,
        "produced": len(events), "consumed": len(rows), "per_key_order_kept": order_kept,
        "dead_lettered": dead,
        "dead_letter_reason": dict(letters[-1].headers).get("dlq_reason", b"").decode()
        if letters else None,
        "committed_offsets": committed, "records": rows,
    }


async def _committed(settings: Settings, bootstrap: str, group: str) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **settings.kafka_client_options())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {f"{tp.topic}[{tp.partition}]": meta.offset
            for tp, meta in sorted(offsets.items())}


def demo(
    orders: Annotated[int, typer.Option(min=1, max=1000, help="Orders to publish.")] = 5,
    stop: Annotated[bool, typer.Option("--down", help="Stop the stack afterwards.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object for programs.")] = False,
) -> None:
    """Bring the local stack up and show Avro events travelling through Kafka, bad input
    included."""
    settings = settings_from_env()
    stack = LocalStack(settings)
    if not json_out:
        console_err.print("1. starting the local stack (what already runs is reused) ...")
    info = asyncio.run(stack.up())
    if not json_out:
        render(info)
        console_err.print(f"2. publishing {orders} purchase orders (placed + confirmed) across "
                          "the five regions, plus one malformed record, and reading them back "
                          "through a consumer group ...")
    if info.kafka_bootstrap is None or info.schema_registry_url is None:
        raise ComponentFailed("this stack has no Kafka or no schema registry",
                              hint="run `boxbus dev up` without --only")
    serde = serde_for(settings, info.schema_registry_url)
    result = asyncio.run(_round_trip(settings, info.kafka_bootstrap, serde, orders))
    if stop:
        stack.down()
    if json_out:
        print_json({"stack": info.model_dump(mode="json"), "round_trip": result})
    else:
        _render(result)
        if not stop:
            console.print("the stack keeps running: `boxbus dev status`, `boxbus events tail "
                          f"{result['topics'][0]} --from-beginning`, `boxbus dlq list "
                          f"{result['topics'][0]}`, `boxbus dev down`")
    if (result["consumed"] != result["produced"] or not result["per_key_order_kept"]
            or result["dead_lettered"] < 1):
        raise typer.Exit(1)


def _render(result: dict[str, Any]) -> None:
    table = Table(title=f"read by group {result['group']}", title_justify="left",
                  box=box.SIMPLE_HEAD)
    # "ms after send" includes the consumer group's join, which the first records wait for.
    for column in ("topic", "p", "offset", "key", "event", "ms after send"):
        table.add_column(column, justify="right" if column in ("offset", "ms after send")
                         else "left")
    for r in sorted(result["records"], key=lambda r: (r["topic"], r["partition"], r["offset"])):
        table.add_row(r["topic"], str(r["partition"]), str(r["offset"]), r["key"],
                      r["type"].rsplit(".", 1)[1], f"{r['ms_after_send']:.1f}")
    console.print(table)
    ok = "[green]yes[/]" if result["per_key_order_kept"] else "[red]NO[/]"
    console.print(
        f"published {result['produced']} Avro events, consumed {result['consumed']}; "
        f"per-order sequence kept: {ok}; dead-lettered {result['dead_lettered']}: "
        f"{result['dead_letter_reason']}", highlight=False)
