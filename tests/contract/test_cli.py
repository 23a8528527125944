"""The contract on the command line, as a developer uses it: publish examples and files, tail
a topic, inspect dead letters and replay them once they are valid (or corrected)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bus import Settings, TopicSpec, ensure_topics, naming
from bus.catalog import SchemaCatalog
from bus.consumer import EventConsumer
from bus.deadletter import DeadLetter
from bus.examples import example
from bus.kafka import KafkaAccess
from bus.registry import SchemaRegistry
from bus.serde import EventSerde
from bus.topics import read_topic
from tests.conftest import boxbus_cli

pytestmark = [pytest.mark.stack, pytest.mark.embedded]


def run(env: dict[str, str], *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*boxbus_cli(), *args], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == expect, result.stdout + result.stderr
    return result


def run_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(run(env, *args, "--json").stdout)


@pytest.fixture
def env(env_for_cli: dict[str, str], private_settings: Settings) -> dict[str, str]:
    return {**env_for_cli, "BOXBUS_TOPIC_NAMESPACE": private_settings.topic_namespace}


async def test_publish_and_tail(env: dict[str, str], tmp_path: Path,
                                private_settings: Settings) -> None:
    # By default an event goes into its source box's ingress topic (the example's box: north).
    topic = naming.ingress_topic(private_settings.topic_namespace, "north")
    missing = run(env, "events", "publish", "OrderPlaced", "--example", expect=2)
    assert f"topic {topic} does not exist" in missing.stderr and "--create-topic" in missing.stderr

    first = run_json(env, "events", "publish", "order-placed", "--example", "--create-topic")
    assert first["topic"] == topic and first["type"] == "boxbus.orders.OrderPlaced"

    dry = run_json(env, "events", "publish", "OrderConfirmed", "--example", "--dry-run")
    assert dry["headers"]["ce_type"] == "boxbus.orders.OrderConfirmed"
    draft = dry["event"]
    draft["notes"] = "confirmed from a file"
    path = tmp_path / "confirmed.json"
    path.write_text(json.dumps(draft))
    second = run_json(env, "events", "publish", "OrderConfirmed", "--file", str(path),
                      "--topic", topic)
    assert second["event_id"] == draft["meta"]["event_id"]

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**draft, "payment_due_days": "soon"}))
    refused = run(env, "events", "publish", "OrderConfirmed", "--file", str(bad), expect=2)
    assert "payment_due_days" in refused.stderr and "not a valid" in refused.stderr

    lines = run(env, "events", "tail", topic, "--from-beginning", "--idle", "2",
                "--json").stdout.splitlines()
    seen = [json.loads(line) for line in lines]
    assert [s["envelope"]["id"] for s in seen] == [first["event_id"], second["event_id"]]
    assert seen[1]["event"]["notes"] == "confirmed from a file"
    human = run(env, "events", "tail", topic, "--from-beginning", "--limit", "2").stdout
    assert "OrderPlaced key=po-north-2026-004211 from north → dairy-hub" in human
    assert "notes=confirmed from a file" in human


async def test_dead_letters_are_listed_shown_and_replayed(
    env: dict[str, str], tmp_path: Path, private_settings: Settings, kafka: KafkaAccess,
    registry: SchemaRegistry, catalog: SchemaCatalog,
) -> None:
    topic = naming.region_topic(private_settings.topic_namespace, "north")
    await ensure_topics(kafka, [TopicSpec(topic, 1)])
    full = EventSerde(registry, catalog)
    confirmed = example("boxbus.orders.OrderConfirmed")
    good = await full.encode(confirmed, topic)
    broken = await full.encode(example("boxbus.orders.OrderPlaced"), topic)
    producer = kafka.producer()
    await producer.start()
    try:
        await producer.send_and_wait(topic, good.value, key=good.key, headers=good.headers)
        await producer.send_and_wait(topic, broken.value[:-7], key=broken.key,
                                     headers=broken.headers)
    finally:
        await producer.stop()

    # A consumer that does not know OrderConfirmed yet dead-letters it (and the broken one).
    old = SchemaCatalog({e.fullname: e for e in catalog if e.name != "OrderConfirmed"},
                        catalog.named)
    async with EventConsumer(private_settings, kafka, [topic], "it-old",
                             EventSerde(SchemaRegistry(registry.url), old)) as consumer:
        async with asyncio.timeout(30):
            async for _ in consumer.batches():
                if consumer.dead_lettered == 2:
                    break

    letters = run_json(env, "dlq", "list", topic)
    assert [(x["code"], x["offset"], x["type"]) for x in letters] == [
        ("unknown-event-type", 0, "boxbus.orders.OrderConfirmed"),
        ("undecodable", 1, "boxbus.orders.OrderPlaced")]
    assert "unknown-event-type" in run(env, "dlq", "list", topic).stdout
    shown = run_json(env, "dlq", "show", naming.dlq_topic(topic), "1")
    assert shown["value_bytes"] == len(broken.value) - 7
    assert shown["headers"]["ce_id"] == broken.envelope.id

    # Replaying everything: the first is valid for today's consumers, the second still not.
    results = run(env, "dlq", "replay", topic, "--all", expect=1).stdout
    assert "replayed 0@0" in results and "still invalid 0@1" in results

    # The broken one, corrected by hand, is published as a proper event.
    fixed = tmp_path / "fixed.json"
    fixed.write_text(example("boxbus.orders.OrderPlaced").model_dump_json())
    replay = run_json(env, "dlq", "replay", topic, "--offset", "1", "--file", str(fixed))
    assert replay[0]["replayed"] is True

    # Each replay is recorded: replaying again skips both (exit 0), unless --again.
    again_all = run_json(env, "dlq", "replay", topic, "--all")
    assert [(r["replayed"], r.get("skipped")) for r in again_all] == [(False, True)] * 2
    assert "replayed before" in again_all[0]["note"]
    # A letter written twice (a batch read again after a failed commit) is the same letter:
    # the copy is not replayed a second time.
    assert letters[0]["letter_id"] != letters[1]["letter_id"]
    (first, *_) = await read_topic(kafka, naming.dlq_topic(topic))
    copy = DeadLetter.from_record(first)
    dlq, key, value, headers = replace(copy, failed_at="later").to_record()
    producer = kafka.producer()
    await producer.start()
    try:
        await producer.send_and_wait(dlq, value, key=key, headers=headers)
    finally:
        await producer.stop()
    listed = run_json(env, "dlq", "list", topic)
    assert [x["letter_id"] for x in listed].count(letters[0]["letter_id"]) == 2
    third = run_json(env, "dlq", "replay", topic, "--offset", "2")
    assert third[0]["skipped"] is True

    delivered = []
    async with EventConsumer(private_settings, kafka, [topic], "it-new", full) as again:
        async with asyncio.timeout(30):
            async for batch in again.batches():
                delivered += batch
                if len(delivered) + again.dead_lettered >= 4:
                    break
    types = [d.envelope.type.rsplit(".", 1)[1] for d in delivered]
    assert types == ["OrderConfirmed", "OrderConfirmed", "OrderPlaced"]
    assert delivered[1].event == confirmed  # the replayed record, with its original id


async def test_a_letter_naming_another_topic_is_not_replayed_there(
    env: dict[str, str], private_settings: Settings, kafka: KafkaAccess,
    registry: SchemaRegistry, catalog: SchemaCatalog,
) -> None:
    """Whoever may write a dead-letter topic writes its letters' headers too: a planted letter
    that names another box's inbox as its source must not reach it by a replay (which runs as
    the operator, past the router)."""
    ns = private_settings.topic_namespace
    own, other = naming.inbox_topic(ns, "box-a"), naming.inbox_topic(ns, "box-b")
    await ensure_topics(kafka, [TopicSpec(t, 1) for t in (own, naming.dlq_topic(own), other)])
    planted = await EventSerde(registry, catalog).encode(
        example("boxbus.orders.OrderConfirmed"), other)
    producer = kafka.producer()
    await producer.start()
    try:
        await producer.send_and_wait(
            naming.dlq_topic(own), planted.value, key=planted.key,
            headers=[*planted.headers, ("dlq_topic", other.encode()), ("dlq_partition", b"0"),
                     ("dlq_offset", b"0"), ("dlq_code", b"unknown-event-type"),
                     ("dlq_reason", b"planted")])
    finally:
        await producer.stop()
    results = json.loads(run(env, "dlq", "replay", own, "--all", "--json", expect=1).stdout)
    assert [r["replayed"] for r in results] == [False]
    assert f"names {other} as its source" in results[0]["note"]
    assert await read_topic(kafka, other) == []
