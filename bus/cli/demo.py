"""``boxbus demo``: the main job on the embedded local stack.

For now: bring the stack up, create a three-partition topic, publish the first orders of the
reference retail week (placed, then confirmed, keyed by order id), read them back through a
consumer group that commits after processing, and show what happened. Later issues grow this
into the whole network of boxes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich import box
from rich.table import Table

from bus.cli.context import settings_from_env
from bus.cli.dev import render
from bus.cli.output import console, console_err, print_json
from bus.devstack import LocalStack
from bus.errors import ComponentFailed
from bus.settings import Settings
from bus.topics import TopicSpec, ensure_topics

REGIONS = ["north", "south", "east", "west", "centre"]


def _orders(run_id: str, count: int) -> list[tuple[str, dict[str, Any]]]:
    """(key, event) pairs: each order is placed, then confirmed; keyed by order id."""
    events = []
    for n in range(count):
        region = REGIONS[n % len(REGIONS)]
        order_id = f"ord-{run_id}-{n:03d}"
        for kind in ("order_placed", "order_confirmed"):
            events.append((order_id, {
                "type": kind, "order_id": order_id, "region": region,
                "store": f"store-{region}-{n % 40:02d}", "run_id": run_id,
                "total_minor": 1000 + 137 * n, "currency": "EUR",
            }))
    return events


async def _round_trip(settings: Settings, bootstrap: str, orders: int) -> dict[str, Any]:
    topic = f"{settings.topic_namespace}.demo.orders"
    group = f"{settings.topic_namespace}.demo"
    created = await ensure_topics(settings, bootstrap, [TopicSpec(topic, partitions=3)])
    run_id = uuid.uuid4().hex[:6]
    events = _orders(run_id, orders)
    options = settings.kafka_client_options()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, **options)
    await producer.start()
    sent_at: dict[tuple[str, str], float] = {}
    try:
        for key, event in events:
            sent_at[(key, event["type"])] = time.time()
            await producer.send(topic, json.dumps(event).encode(), key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", **options,
    )
    await consumer.start()
    rows: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 30
        while len(rows) < len(events) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    event = json.loads(record.value)
                    if event.get("run_id") != run_id:
                        continue  # left over from an earlier run that stopped early
                    sent = sent_at[(event["order_id"], event["type"])]
                    rows.append({
                        "partition": tp.partition, "offset": record.offset,
                        "key": event["order_id"], "type": event["type"],
                        "region": event["region"],
                        "latency_ms": round((time.time() - sent) * 1000, 1),
                    })
            # Offsets are committed only after the records were processed.
            await consumer.commit()
        committed = {
            p: await consumer.committed(TopicPartition(topic, p))
            for p in sorted(consumer.partitions_for_topic(topic) or [])
        }
    finally:
        await consumer.stop()
    order_kept = all(
        [r["type"] for r in rows if r["key"] == key] == ["order_placed", "order_confirmed"]
        for key in {k for k, _ in events}
    )
    return {
        "topic": topic, "topic_created": bool(created), "group": group,
        "produced": len(events), "consumed": len(rows), "per_key_order_kept": order_kept,
        "committed_offsets": committed, "records": rows,
    }


def demo(
    orders: Annotated[int, typer.Option(min=1, max=1000, help="Orders to publish.")] = 6,
    stop: Annotated[bool, typer.Option("--down", help="Stop the stack afterwards.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object for programs.")] = False,
) -> None:
    """Bring the local stack up and show a publish / consumer-group round trip through Kafka."""
    settings = settings_from_env()
    stack = LocalStack(settings)
    if not json_out:
        console_err.print("1. starting the local stack (what already runs is reused) ...")
    info = asyncio.run(stack.up())
    if not json_out:
        render(info)
        console_err.print(f"2. publishing {orders} orders (placed + confirmed) and reading them "
                          "back through a consumer group ...")
    if info.kafka_bootstrap is None:
        raise ComponentFailed("Kafka is not part of this stack")
    result = asyncio.run(_round_trip(settings, info.kafka_bootstrap, orders))
    if stop:
        stack.down()
    if json_out:
        print_json({"stack": info.model_dump(mode="json"), "round_trip": result})
    else:
        _render(result)
        if not stop:
            console.print("the stack keeps running: `boxbus dev status`, `boxbus dev down`")
    if result["consumed"] != result["produced"] or not result["per_key_order_kept"]:
        raise typer.Exit(1)


def _render(result: dict[str, Any]) -> None:
    table = Table(title=f"topic {result['topic']} read by group {result['group']}",
                  title_justify="left", box=box.SIMPLE_HEAD)
    # "ms after send" includes the consumer group's join, which the first records wait for.
    for column in ("partition", "offset", "key", "event", "region", "ms after send"):
        table.add_column(column, justify="right" if column in ("offset", "ms after send")
                         else "left")
    for r in sorted(result["records"], key=lambda r: (r["partition"], r["offset"])):
        table.add_row(str(r["partition"]), str(r["offset"]), r["key"], r["type"], r["region"],
                      f"{r['latency_ms']:.1f}")
    console.print(table)
    ok = "[green]yes[/]" if result["per_key_order_kept"] else "[red]NO[/]"
    console.print(
        f"published {result['produced']}, consumed {result['consumed']}; per-order sequence kept: "
        f"{ok}; committed offsets {result['committed_offsets']}"
    )
