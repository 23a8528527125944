"""Bad input never stops a partition and is never lost: each kind of malformed record of the
reference workload goes to the dead-letter topic, whole, with its reason, while the good
records around it are delivered in order. A registry that is down delays, it does not
dead-letter."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
from aiokafka import TopicPartition

from bus import ConfigError, Settings, TopicSpec, UnknownSchemaId, ensure_topics, naming, wire
from bus.catalog import SchemaCatalog
from bus.consumer import Delivery, EventConsumer
from bus.deadletter import DeadLetter
from bus.devstack import procs
from bus.envelope import ID
from bus.examples import example
from bus.kafka import KafkaAccess
from bus.pipeline import OutagePolicy
from bus.registry import SchemaRegistry
from bus.serde import EncodedEvent, EventSerde

pytestmark = pytest.mark.stack

ONE_MIB = 1024 * 1024


def _with_header(encoded: EncodedEvent, name: str, value: bytes | None) -> list[tuple[str, bytes]]:
    """The headers of ``encoded`` with ``name`` replaced (or removed when value is None)."""
    headers = [(k, v) for k, v in encoded.headers if k != name]
    return headers if value is None else [*headers, (name, value)]


async def _register_raw(registry_url: str, subject: str, schema: str) -> int:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{registry_url}/subjects/{subject}/versions",
                                     json={"schema": schema})
    response.raise_for_status()
    return int(response.json()["id"])


async def read_dead_letters(kafka: KafkaAccess, topic: str, count: int) -> list[DeadLetter]:
    consumer = kafka.consumer(naming.dlq_topic(topic), auto_offset_reset="earliest",
                              enable_auto_commit=False)
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        async with asyncio.timeout(30):
            while len(letters) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    letters += [DeadLetter.from_record(r) for r in records]
    finally:
        await consumer.stop()
    return letters


async def test_each_kind_of_bad_record_is_dead_lettered_and_good_ones_flow(
    private_settings: Settings, kafka: KafkaAccess, serde: EventSerde,
) -> None:
    ns = private_settings.topic_namespace
    topic = naming.region_topic(ns, "north")
    # Room for an oversize record to reach the consumer (the broker would refuse it otherwise).
    await ensure_topics(kafka, [
        TopicSpec(topic, 1, configs={"max.message.bytes": str(2 * ONE_MIB)})])

    first = await serde.encode(example("boxbus.orders.OrderPlaced"), topic)
    template = await serde.encode(example("boxbus.orders.OrderPlaced"), topic)
    last = await serde.encode(example("boxbus.orders.OrderConfirmed"), topic)
    south = await serde.encode(example("boxbus.orders.OrderPlaced").model_copy(update={
        "meta": example("boxbus.orders.OrderPlaced").meta.model_copy(
            update={"region": "south"})}), naming.region_topic(ns, "south"))
    good_body = template.value
    # Another producer's schema in the same registry: a plain string, not an event record.
    primitive_id = await _register_raw(serde.registry.url, f"{topic}-raw-value", '"string"')
    bad: dict[str, tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = {
        # (Starting with 0x42: random bytes may begin with the magic byte itself.)
        "random bytes": (template.key, b"\x42" + os.urandom(64), template.headers),
        "wrong magic byte": (template.key, b"\x07" + good_body[1:], template.headers),
        "unknown schema id": (template.key, wire.frame(2_000_000_000, good_body[5:]),
                              template.headers),
        "truncated avro": (template.key, good_body[: len(good_body) // 2], template.headers),
        "missing header": (template.key, good_body, _with_header(template, ID, None)),
        "wrong region": (south.key, south.value, south.headers),
        "headers disagree with body": (template.key, good_body,
                                       _with_header(template, ID, b"someone-else")),
        "oversize": (template.key, good_body + b"\x00" * (ONE_MIB + 10), template.headers),
        "empty value": (template.key, None, template.headers),
        "header without a value": (template.key, good_body,
                                   [(k, None if k == ID else v)  # type: ignore[misc]
                                    for k, v in template.headers]),
        "not an Avro record schema": (template.key, wire.frame(primitive_id, b"\x06abc"),
                                      template.headers),
    }
    expected_codes = {
        "random bytes": "wire-format", "wrong magic byte": "wire-format",
        "unknown schema id": "unknown-schema-id", "truncated avro": "undecodable",
        "missing header": "invalid-envelope", "wrong region": "region-mismatch",
        "headers disagree with body": "invalid-envelope", "oversize": "oversize",
        "empty value": "wire-format", "header without a value": "invalid-envelope",
        "not an Avro record schema": "unknown-event-type",
    }
    producer = kafka.producer(max_request_size=2 * ONE_MIB)
    await producer.start()
    try:
        await producer.send_and_wait(topic, first.value, key=first.key, headers=first.headers)
        for key, value, headers in bad.values():
            await producer.send_and_wait(topic, value, key=key, headers=headers)
        await producer.send_and_wait(topic, last.value, key=last.key, headers=last.headers)
    finally:
        await producer.stop()

    delivered = []
    async with EventConsumer(private_settings, kafka, [topic], "it-bad-input",
                             serde) as consumer:
        async with asyncio.timeout(60):
            async for batch in consumer.batches():
                delivered += batch
                if len(delivered) + consumer.dead_lettered >= 2 + len(bad):
                    break
    # The good records before and after every bad one arrive, in order.
    assert [d.envelope.id for d in delivered] == [first.envelope.id, last.envelope.id]

    letters = await read_dead_letters(kafka, topic, len(bad))
    assert len(letters) == len(bad)
    for (kind, (key, value, headers)), letter, offset in zip(
            bad.items(), letters, range(1, len(bad) + 1), strict=True):
        assert letter.code == expected_codes[kind], (kind, letter.reason)
        assert letter.reason and letter.reason != "?", kind
        # The original record, whole: bytes, key, headers, and where it was.
        assert letter.value == value and letter.key == key, kind
        assert letter.headers == headers, kind
        assert (letter.topic, letter.partition, letter.offset) == (topic, 0, offset), kind
        assert letter.group == "it-bad-input"
    reasons = {kind: letter.reason for kind, letter in zip(bad, letters, strict=True)}
    assert "magic byte" in reasons["wrong magic byte"]
    assert "no schema with id 2000000000" in reasons["unknown schema id"]
    assert "ce_id missing" in reasons["missing header"]
    assert "'south'" in reasons["wrong region"] and "'north'" in reasons["wrong region"]
    assert "over the 1048576-byte limit" in reasons["oversize"]
    assert "ce_id missing" in reasons["header without a value"]
    assert "not an Avro record schema" in reasons["not an Avro record schema"]

    # The group committed past everything, bad records included.
    admin = kafka.admin()
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets("it-bad-input")
    finally:
        await admin.close()
    assert committed[TopicPartition(topic, 0)].offset == len(bad) + 2


async def test_a_wrong_registry_url_is_a_configuration_error_not_a_dead_letter(
    registry: SchemaRegistry,
) -> None:
    base = registry.url.removesuffix("/apis/ccompat/v7")
    with pytest.raises(ConfigError, match="answered HTTP 404 to a schema lookup"):
        await SchemaRegistry(base).writer(1)
    with pytest.raises(UnknownSchemaId):
        await registry.writer(1_999_999_999)


@contextlib.asynccontextmanager
async def tcp_forwarder(listen_port: int, target: str) -> AsyncIterator[None]:
    """A loopback TCP forwarder to ``target`` (host:port), for 'registry comes back' tests."""
    host, _, port = target.rpartition(":")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, procs.LOOPBACK, listen_port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


async def test_a_registry_outage_delays_and_does_not_dead_letter(
    private_settings: Settings, kafka: KafkaAccess, serde: EventSerde, catalog: SchemaCatalog,
) -> None:
    topic = naming.region_topic(private_settings.topic_namespace, "north")
    await ensure_topics(kafka, [TopicSpec(topic, 1)])
    event = example("boxbus.orders.OrderPlaced")
    encoded = await serde.encode(event, topic)  # registered through the real registry
    producer = kafka.producer()
    await producer.start()
    try:
        await producer.send_and_wait(topic, encoded.value, key=encoded.key,
                                     headers=encoded.headers)
    finally:
        await producer.stop()

    # The consumer's registry address answers nothing at first...
    (port,) = procs.free_ports(1)
    real = urlsplit(serde.registry.url)
    reader_serde = EventSerde(SchemaRegistry(f"http://{procs.LOOPBACK}:{port}{real.path}",
                                             timeout=1.0), catalog)
    group = f"it-outage-{uuid.uuid4().hex[:6]}"
    async with EventConsumer(private_settings, kafka, [topic], group, reader_serde,
                             outages=OutagePolicy(first_delay=0.05, max_delay=0.2)
                             ) as consumer:
        batches = consumer.batches()
        async def next_batch() -> list[Delivery]:
            return await anext(batches)

        first = asyncio.create_task(next_batch())
        await asyncio.sleep(2)
        assert not first.done()  # waiting on the registry, not skipping the record
        # ...then the registry is back (through a forwarder on the same address).
        async with tcp_forwarder(port, f"{real.hostname}:{real.port}"):
            batch = await asyncio.wait_for(first, timeout=30)
        await batches.aclose()
    assert [d.event for d in batch] == [event]
    assert consumer.dead_lettered == 0
