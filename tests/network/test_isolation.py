"""Isolation on the real broker with SASL and the ACLs `topology apply` makes: each box logs in
as itself, reads only its own inbox, writes only its own ingress topic, cannot reach another
box's topics or groups, cannot write a region topic or create a topic, cannot pass for another
box; a rotated password and a removed box stop working. A client boxbus did not write
(librdkafka) connects with what `boxbus box credentials --json` prints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError
from aiokafka.errors import KafkaError as AiokafkaError
from confluent_kafka import Consumer, KafkaError

from bus import Envelope, KafkaAccessDenied, Settings, naming
from bus.catalog import SchemaCatalog
from bus.consumer import EventConsumer
from bus.credentials import CredentialStore
from bus.devstack import StackInfo
from bus.kafka import KafkaAccess, LoginWatch, login_refusal, start_or_close
from bus.quotas import FETCH, PRODUCE, Quotas
from bus.registry import SchemaRegistry
from bus.serde import EventSerde
from bus.topics import list_topics, partitions_of, read_topic
from bus.topology import apply_plan, make_plan, parse_topology
from processors.router import Router
from tests.conftest import boxbus_cli

pytestmark = pytest.mark.stack

NETWORK = """\
regions:
  north: {partitions: 2}
  south: {partitions: 2}
boxes:
  - {id: box-a, region: north, company: a}
  - {id: box-ab, region: north, company: ab}
  - {id: box-c, region: south, company: c}
relationships:
  - {kind: trade, buyer: box-a, supplier: box-ab}
  - {kind: trade, buyer: box-a, supplier: box-c}
"""
ORDER = "boxbus.orders.OrderPlaced"


@pytest.fixture
async def net(ns_settings: Settings, kafka: KafkaAccess) -> dict[str, Any]:
    """The network applied; each box's and the router's own access."""
    await apply_plan(kafka, await make_plan(ns_settings, kafka, parse_topology(NETWORK)))
    store = CredentialStore.of(ns_settings)
    ns = ns_settings.topic_namespace
    found: dict[str, Any] = {"ns": ns, "store": store}
    for who in ("box-a", "box-ab", "box-c"):
        found[who] = store.access(naming.box_principal(ns, who), kafka)
        assert found[who] is not None and found[who].principal.endswith(who)
    found["router"] = store.access(naming.service_principal(ns, "router"), kafka)
    # Each user's byte rates, as the topology's defaults give them.
    rates = await Quotas(kafka).of([naming.box_principal(ns, "box-a"),
                                    naming.service_principal(ns, "router")])
    assert rates[naming.box_principal(ns, "box-a")] == {
        PRODUCE: float(1024**2), FETCH: float(4 * 1024**2)}
    assert rates[naming.service_principal(ns, "router")][PRODUCE] == float(64 * 1024**2)
    return found


def envelope(source: str, region: str, key: str, target: str | None = None,
             event_id: str | None = None) -> list[tuple[str, bytes]]:
    return Envelope(id=event_id or str(uuid.uuid4()), source_box=source, type=ORDER,
                    time=datetime.now(UTC), region=region, partition_key=key,
                    target_box=target, correlation_id=key).to_headers()


async def send(kafka: KafkaAccess, topic: str, key: str,
               headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = kafka.producer(acks="all", enable_idempotence=True, request_timeout_ms=10000)
    await start_or_close(producer, kafka)
    try:
        await producer.send_and_wait(topic, b"body", key=key.encode(), headers=headers or [])
    finally:
        await producer.stop()


async def refused_write(kafka: KafkaAccess, topic: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await send(kafka, topic, "k")


async def assigned_records(kafka: KafkaAccess, partitions: list[TopicPartition],
                           seconds: float = 3) -> int:
    """Records an assign()-ed consumer gets from ``topic`` within ``seconds`` (aiokafka does
    not raise on a refused fetch: it logs and waits)."""
    consumer = kafka.consumer(enable_auto_commit=False, auto_offset_reset="earliest")
    await start_or_close(consumer, kafka)
    got = 0
    try:
        consumer.assign(partitions)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    with contextlib.suppress(TopicAuthorizationFailedError):
                        for records in (await consumer.getmany(timeout_ms=300)).values():
                            got += len(records)
    finally:
        await consumer.stop()
    return got


async def joins_group(kafka: KafkaAccess, topic: str, group: str) -> None:
    consumer = kafka.consumer(topic, group_id=group, enable_auto_commit=False,
                              auto_offset_reset="earliest")
    await start_or_close(consumer, kafka)
    try:
        async with asyncio.timeout(20):
            await consumer.getmany(timeout_ms=2000)
    finally:
        await consumer.stop()


async def test_each_box_reaches_its_own_topics_and_nothing_else(
    net: dict[str, Any], kafka: KafkaAccess,
) -> None:
    ns, a, ab, c = net["ns"], net["box-a"], net["box-ab"], net["box-c"]
    inbox_a, inbox_ab = naming.inbox_topic(ns, "box-a"), naming.inbox_topic(ns, "box-ab")
    await send(kafka, inbox_ab, "secret")  # something to steal
    await send(kafka, inbox_a, "mine")

    # Its own: the inbox (through its own group), its ingress, its inbox's dead letters.
    await joins_group(a, inbox_a, f"{ns}.box.box-a.inbox")
    assert len(await read_topic(a, inbox_a)) == 1
    await send(a, naming.ingress_topic(ns, "box-a"), "k")
    await send(a, naming.dlq_topic(inbox_a), "k")

    # Another box's inbox, read through a group of its own or by assign(): refused / empty.
    # box-a's prefix must not cover box-ab (the ACL prefixes end with the separator).
    with pytest.raises(TopicAuthorizationFailedError):
        await joins_group(a, inbox_ab, f"{ns}.box.box-a.spy")
    partitions = await partitions_of(kafka, inbox_ab)
    assert await assigned_records(kafka, partitions) == 1  # the same read works for the operator
    assert await assigned_records(a, partitions) == 0
    with pytest.raises(KafkaAccessDenied, match=f"User:{ns}.box.box-a"):
        await read_topic(a, inbox_ab)
    # Joining another box's consumer group (and so forcing rebalances on it): refused.
    with pytest.raises(GroupAuthorizationFailedError):
        await joins_group(a, inbox_a, f"{ns}.box.box-ab.inbox")

    # Writing: another box's ingress or inbox, a region topic, the mail topic, control.
    for topic in (naming.ingress_topic(ns, "box-ab"), inbox_ab,
                  naming.region_topic(ns, "north"), naming.mail_topic(ns),
                  naming.control_topic(ns, "boxes")):
        await refused_write(a, topic)
    # Creating a topic: refused in the answer (aiokafka does not raise), nothing created.
    admin = a.admin()
    await start_or_close(admin, a)
    try:
        response = await admin.create_topics([NewTopic(f"{ns}.box.box-a.extra", 1, 1)])
        assert {e[1] for e in response.topic_errors} == {29}  # TOPIC_AUTHORIZATION_FAILED
    finally:
        await admin.close()
    assert f"{ns}.box.box-a.extra" not in await list_topics(kafka)
    # The other boxes are held the same way.
    await refused_write(ab, naming.ingress_topic(ns, "box-a"))
    await refused_write(c, inbox_a)


async def test_a_forged_source_in_a_box_own_ingress_never_arrives(
    net: dict[str, Any], ns_settings: Settings, kafka: KafkaAccess,
) -> None:
    ns, a = net["ns"], net["box-a"]
    ingress = naming.ingress_topic(ns, "box-a")
    # box-a writes, as itself, events claiming to come from box-ab and from another region.
    await send(a, ingress, "po-1", envelope("box-ab", "north", "po-1", target="box-c"))
    await send(a, ingress, "po-1", envelope("box-a", "south", "po-1", target="box-c"))
    await send(a, ingress, "po-1", envelope("box-a", "north", "po-1", target="box-c",
                                            event_id="honest"))
    router = Router(ns_settings, net["router"])
    stop = asyncio.Event()
    task = asyncio.create_task(router.run(stop, progress_every=3600))
    try:
        async with asyncio.timeout(30):
            while router.stats.consumed < 3:
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    delivered = await read_topic(net["box-c"], naming.inbox_topic(ns, "box-c"))
    assert [dict(r.headers)["ce_id"] for r in delivered] == [b"honest"]
    quarantined = await read_topic(kafka, naming.quarantine_topic(ingress))
    assert [dict(r.headers)["quarantine_code"] for r in quarantined] == [
        b"forged-source", b"forged-source"]
    assert router.stats.quarantined == 2 and router.stats.forwarded == 1
    # Only the honest one is kept in the region topic: what is there has a proven source.
    kept = await read_topic(kafka, naming.region_topic(ns, "north"))
    assert [dict(r.headers)["ce_id"] for r in kept] == [b"honest"]


async def test_rotated_password_and_removed_box_stop_working(
    net: dict[str, Any], ns_settings: Settings, kafka: KafkaAccess, env_for_cli: dict[str, str],
    tmp_path: Path,
) -> None:
    ns, old = net["ns"], net["box-a"]
    env = {**env_for_cli, "BOXBUS_TOPIC_NAMESPACE": ns}
    shown = subprocess.run([*boxbus_cli(), "box", "credentials", "--box", "box-a", "--json"],
                           env=env, capture_output=True, text=True, timeout=60, check=True)
    credentials = json.loads(shown.stdout)
    assert set(credentials) == {"username", "password", "bootstrap_servers",
                                "security_protocol", "sasl_mechanism"}

    # librdkafka, with nothing but those keys, reads box-a's inbox and nothing else.
    inbox_a = naming.inbox_topic(ns, "box-a")
    await send(kafka, inbox_a, "for-a")
    config = {"bootstrap.servers": credentials["bootstrap_servers"],
              "security.protocol": credentials["security_protocol"],
              "sasl.mechanism": credentials["sasl_mechanism"],
              "sasl.username": credentials["username"],
              "sasl.password": credentials["password"]}
    assert await asyncio.to_thread(_librdkafka_read, config, inbox_a,
                                   f"{ns}.box.box-a.librdkafka") == ["for-a"]
    refused = await asyncio.to_thread(_librdkafka_read, config,
                                      naming.inbox_topic(ns, "box-ab"),
                                      f"{ns}.box.box-a.librdkafka2")
    assert refused == ["TOPIC_AUTHORIZATION_FAILED"]

    rotated = subprocess.run([*boxbus_cli(), "box", "rotate-credentials", "--box", "box-a",
                              "--json"], env=env, capture_output=True, text=True, timeout=60,
                             check=True)
    assert json.loads(rotated.stdout)["password"] != credentials["password"]
    refusal = await login_refusal(old)
    assert refusal is not None and "refused the login" in refusal.message
    new = net["store"].access(naming.box_principal(ns, "box-a"), kafka)
    assert await login_refusal(new) is None

    # box-c leaves the network while the router runs: its user and ACLs go with
    # --allow-destructive, and the router, refused its ingress topic, carries on.
    c = net["box-c"]
    router = Router(ns_settings, net["router"])
    stop = asyncio.Event()
    routing = asyncio.create_task(router.run(stop, progress_every=3600))
    try:
        smaller = parse_topology(NETWORK.replace(
            "  - {id: box-c, region: south, company: c}\n", "").replace(
            "  - {kind: trade, buyer: box-a, supplier: box-c}\n", ""))
        plan = await make_plan(ns_settings, kafka, smaller)
        c_user = naming.box_principal(ns, "box-c")
        leaving = {(c.action, c.target) for c in plan.changes if c.destructive}
        assert {("delete-principal", c_user), ("remove-quota", c_user)} <= leaving
        await apply_plan(kafka, plan, allow_destructive=True)
        assert (await Quotas(kafka).of([c_user]))[c_user] == {}  # no quota left behind
        again = await make_plan(ns_settings, kafka, smaller)
        assert not [c for c in again.changes if c.target == c_user]
        refusal = await login_refusal(c)
        assert refusal is not None and f"User:{ns}.box.box-c" in refusal.message
        assert net["store"].password(naming.box_principal(ns, "box-c")) is None
        await send(new, naming.ingress_topic(ns, "box-a"), "po-9",
                   envelope("box-a", "north", "po-9", target="box-ab", event_id="after"))
        async with asyncio.timeout(60):
            while not any(dict(r.headers)["ce_id"] == b"after" for r in await read_topic(
                    kafka, naming.inbox_topic(ns, "box-ab"))):
                assert not routing.done(), routing
                await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.wait_for(routing, 60)


async def test_an_open_session_ends_once_its_password_is_rotated(
    net: dict[str, Any], settings: Settings, kafka: KafkaAccess, env_for_cli: dict[str, str],
    stack: StackInfo,
) -> None:
    """A password change alone leaves logged-in connections working; the brokers' session
    lifetime (``connections.max.reauth.ms``, the stack's ``dev_kafka_session_seconds``) cuts
    them, and the client cannot log in again with the old password. A box's long-running
    consumer then reports who was refused (LoginWatch) instead of waiting for nothing."""
    session = settings.dev_kafka_session_seconds
    assert 0 < session <= 30, "the suite's stack runs with short sessions"
    ns, old = net["ns"], net["box-a"]
    inbox_a = naming.inbox_topic(ns, "box-a")
    consumer = old.consumer(inbox_a, group_id=f"{ns}.box.box-a.session",
                            auto_offset_reset="earliest", enable_auto_commit=False)
    await start_or_close(consumer, old)
    producer = old.producer(acks="all", request_timeout_ms=5000)
    await start_or_close(producer, old)
    # The SDK's own consumer, running as the box: it must end with the refusal, not wait.
    assert stack.schema_registry_url
    events = EventConsumer(Settings(run_dir=settings.run_dir, topic_namespace=ns), old,
                           [inbox_a], f"{ns}.box.box-a.watch",
                           EventSerde(SchemaRegistry(stack.schema_registry_url),
                                      SchemaCatalog.load()), login_check_every=1.0)
    await events.__aenter__()
    batches = events.batches()

    async def keys_read(seconds: float, want: int | None = None) -> list[bytes]:
        found: list[bytes] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and (want is None or len(found) < want):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [r.key for r in records]
        return found

    try:
        await send(kafka, inbox_a, "before")
        assert await keys_read(10, want=1) == [b"before"]
        subprocess.run([*boxbus_cli(), "box", "rotate-credentials", "--box", "box-a"],
                       env={**env_for_cli, "BOXBUS_TOPIC_NAMESPACE": ns},
                       capture_output=True, text=True, timeout=60, check=True)
        # Within at most a session the brokers end the old login's connections, and it cannot
        # log in again: nothing more is read, nothing is written.
        await asyncio.sleep(session + 1)
        await send(kafka, inbox_a, "after")
        assert await keys_read(6) == []
        with pytest.raises(AiokafkaError):  # a timeout, or the connection refused
            await producer.send_and_wait(naming.ingress_topic(ns, "box-a"), b"x", key=b"k")
        with pytest.raises(KafkaAccessDenied) as refused:
            await LoginWatch(old, every=0).check()
        assert f"User:{ns}.box.box-a" in refused.value.message
        async def drain() -> None:
            async with asyncio.timeout(30):
                while True:
                    await anext(batches)

        with pytest.raises(KafkaAccessDenied) as ended:
            await drain()
        assert f"User:{ns}.box.box-a" in ended.value.message
    finally:
        await batches.aclose()
        await events.__aexit__(KafkaAccessDenied, None, None)  # leaves without committing
        await consumer.stop()
        await producer.stop()


def _librdkafka_read(config: dict[str, str], topic: str, group: str) -> list[str]:
    """Keys read from ``topic`` by a confluent-kafka consumer, or the error codes it got."""
    consumer = Consumer({**config, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    found: list[str] = []
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline and not found:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    return ["TOPIC_AUTHORIZATION_FAILED"]
                continue
            found.append((message.key() or b"").decode())
    finally:
        consumer.close()
    return found
