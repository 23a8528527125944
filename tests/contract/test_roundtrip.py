"""Every example event travels the real path: registered on the real registry, encoded in the
Confluent wire format with CloudEvents headers, through the real broker, read by a consumer
group, decoded back to the same value. And property-based: any value the schemas allow
survives encode/decode."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from bus import Settings, TopicSpec, ensure_topics, naming
from bus.catalog import SchemaCatalog
from bus.consumer import Delivery, EventConsumer
from bus.envelope import Envelope
from bus.events import EVENT_TYPES
from bus.examples import example
from bus.kafka import KafkaAccess
from bus.producer import EventProducer
from bus.registry import SchemaRegistry
from bus.serde import EventSerde
from tests.strategies import for_schema, valid_meta

pytestmark = pytest.mark.stack


async def consume(settings: Settings, kafka: KafkaAccess, topics: list[str], serde: EventSerde,
                  count: int, group: str = "it-contract") -> tuple[list[Delivery], int]:
    found: list[Delivery] = []
    async with EventConsumer(settings, kafka, topics, group, serde) as consumer:
        async with asyncio.timeout(60):
            async for batch in consumer.batches():
                found += batch
                if len(found) + consumer.dead_lettered >= count:
                    break
        return found, consumer.dead_lettered


async def test_every_example_round_trips_through_registry_and_broker(
    private_settings: Settings, kafka: KafkaAccess, serde: EventSerde, catalog: SchemaCatalog,
) -> None:
    events = [example(schema.fullname) for schema in catalog]
    regions = sorted({e.meta.region for e in events})
    topics = [naming.region_topic(private_settings.topic_namespace, r) for r in regions]
    await ensure_topics(kafka, [TopicSpec(t, 3) for t in topics])

    async with EventProducer(private_settings, kafka, serde) as producer:
        # Region topics, as the router writes them (a box's own default is its ingress topic).
        sent = [(await producer.publish(event, naming.region_topic(
            private_settings.topic_namespace, event.meta.region))).encoded
            for event in events]
    assert all(s.value[0] == 0 and s.key == s.envelope.partition_key.encode() for s in sent)

    delivered, dead = await consume(private_settings, kafka, topics, serde, len(events))
    assert dead == 0
    by_id = {d.envelope.id: d for d in delivered}
    assert len(by_id) == len(events) == len(catalog)
    for event in events:
        got = by_id[event.meta.event_id]
        assert got.event == event
        assert got.envelope == Envelope.of(event, dataschema=got.envelope.dataschema)
        assert got.topic == naming.region_topic(private_settings.topic_namespace,
                                                event.meta.region)
    # Subjects follow TopicRecordNameStrategy: <topic>-<record full name>.
    assert isinstance(serde.registry, SchemaRegistry)
    subjects = set(await serde.registry.subjects())
    assert {naming.subject(d.topic, d.envelope.type) for d in delivered} <= subjects


@pytest.mark.parametrize("fullname", sorted(EVENT_TYPES))
async def test_any_value_the_schema_allows_survives_encode_decode(
    fullname: str, serde: EventSerde, catalog: SchemaCatalog, private_settings: Settings,
) -> None:
    schema = catalog[fullname]
    topic = naming.region_topic(private_settings.topic_namespace, "north")
    model = EVENT_TYPES[fullname]
    cases: list[dict[str, object]] = []

    @hypothesis_settings(max_examples=30, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow])
    @given(data=for_schema(schema.schema, {"boxbus.common.EventMeta": valid_meta()}))
    def collect(data: dict[str, object]) -> None:
        cases.append(data)

    collect()
    assert cases
    for data in cases:
        event = model.model_validate(data)
        encoded = await serde.encode(event, topic)
        assert await serde.decode(encoded.value) == event
