"""One order's trace, on the real stack: the shop's outbox, its relay, the router and the
dairy's inbox each add a span, each the parent of the next, all in one trace (OpenTelemetry's
in-memory exporter collects them). With tracing off no span is made and no header added."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from itertools import pairwise

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bus import Settings, naming, tracing
from bus.catalog import SchemaCatalog
from bus.devstack import StackInfo
from bus.kafka import KafkaAccess
from bus.registry import SchemaRegistry
from bus.serde import EventSerde
from bus.topics import read_topic
from bus.topology import parse_topology
from connectors.refbox import LineSpec
from connectors.refbox.network import LocalNetwork

pytestmark = pytest.mark.stack

NETWORK = """\
regions:
  north: {partitions: 1}
boxes:
  - {id: shop, region: north, company: shop}
  - {id: dairy, region: north, company: dairy}
relationships:
  - {kind: trade, buyer: shop, supplier: dairy}
"""
ORDER = "boxbus.orders.OrderPlaced"
STAGES = ["boxbus.outbox", "boxbus.relay", "boxbus.router", "boxbus.inbox"]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)


async def place_an_order(settings: Settings, stack: StackInfo, kafka: KafkaAccess) -> str:
    assert stack.database_url and stack.schema_registry_url
    ns_settings = Settings(run_dir=settings.run_dir, topic_namespace=f"tr{uuid.uuid4().hex[:8]}")
    serde = EventSerde(SchemaRegistry(stack.schema_registry_url), SchemaCatalog.load())
    async with LocalNetwork(ns_settings, kafka, stack.database_url, serde,
                            parse_topology(NETWORK)) as network:
        order_id = await network.boxes["shop"].place_order(
            "dairy", [LineSpec("milk-1l", Decimal(12), 89)])

        async def arrived() -> bool:
            orders = (await network.view("dairy"))["orders"]
            return any(o["order_id"] == order_id for o in orders)
        await network.until(arrived, what="the order in dairy")
        assert network.failed() == []
        return ns_settings.topic_namespace


async def test_one_order_is_one_trace_through_every_stage(
    settings: Settings, stack: StackInfo, kafka: KafkaAccess, spans: InMemorySpanExporter,
) -> None:
    await place_an_order(settings, stack, kafka)
    finished = spans.get_finished_spans()
    (start,) = [s for s in finished
                if s.name == "boxbus.outbox" and (s.attributes or {}).get("boxbus.type") == ORDER]
    assert start.context is not None
    trace_id = start.context.trace_id
    ours = {s.name: s for s in finished if s.context and s.context.trace_id == trace_id}
    assert set(STAGES) <= set(ours), sorted(ours)
    # Each stage is the child of the one before: outbox -> relay -> router -> inbox.
    for parent, child in pairwise(STAGES):
        above, own = ours[child].parent, ours[parent].context
        assert above is not None and own is not None, child
        assert above.span_id == own.span_id, (parent, child)
    assert (ours["boxbus.inbox"].attributes or {}).get("boxbus.box") == "dairy"


async def test_with_tracing_off_no_trace_header_is_added(
    settings: Settings, stack: StackInfo, kafka: KafkaAccess,
) -> None:
    assert not tracing.enabled()
    ns = await place_an_order(settings, stack, kafka)
    records = await read_topic(kafka, naming.inbox_topic(ns, "dairy"))
    assert records and all(name != tracing.TRACEPARENT
                           for r in records for name, _ in r.headers)
