"""An analytics database with a small reference week in it, shared by the module's tests:
the reference network applied, the week at scale 0.002 (~9,000 events) published straight
into the region topics, and the aggregator run until its positions reach their ends."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn

from bus import Settings
from bus.catalog import SchemaCatalog
from bus.db import create_database
from bus.devstack import StackInfo
from bus.kafka import KafkaAccess
from bus.registry import SchemaRegistry
from bus.serde import EventSerde
from bus.topology import apply_plan, make_plan
from processors.aggregator import Aggregator
from processors.aggregator.bench import Publisher
from processors.aggregator.progress import behind
from processors.aggregator.week import REGIONS, Week
from processors.analytics.app import create_app
from processors.router.bench import workload_topology

WEEK_START = datetime(2026, 11, 16, tzinfo=UTC)


@dataclass
class Analytics:
    settings: Settings
    dsn: str
    week: Week
    publisher: Publisher
    serde: EventSerde


@pytest.fixture(scope="module")
async def analytics(settings: Settings, kafka: KafkaAccess, stack: StackInfo) -> Analytics:
    assert stack.database_url and stack.schema_registry_url
    ns = f"an{uuid.uuid4().hex[:8]}"
    ns_settings = Settings(run_dir=settings.run_dir, topic_namespace=ns)
    topology = workload_topology(ns)
    await apply_plan(kafka, await make_plan(ns_settings, kafka, topology))
    dsn = await create_database(stack.database_url, f"{ns}_analytics")
    registry = SchemaRegistry(stack.schema_registry_url)
    serde = EventSerde(registry, SchemaCatalog.load())
    week = Week(topology, 0.002, start=WEEK_START)
    publisher = Publisher(kafka, registry, SchemaCatalog.load(), ns, straight_to_regions=True)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "week"
        await publisher.build(week, path)
        await publisher.publish(path)
    aggregator = Aggregator(ns_settings, kafka, dsn, serde)
    stop = asyncio.Event()
    task = asyncio.create_task(aggregator.run(stop))
    async with asyncio.timeout(120):
        while await behind(kafka, dsn, ns, [*REGIONS, "central"]) > 0 \
                or not aggregator.stats.commits:
            assert not task.done(), task
            await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, 30)
    return Analytics(ns_settings, dsn, week, publisher, serde)


@pytest.fixture(scope="module")
async def server(analytics: Analytics) -> AsyncIterator[str]:
    """The dashboard and API on a free loopback port; its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(analytics.dsn), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    uv = uvicorn.Server(config)
    uv.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(uv.serve())
    async with asyncio.timeout(20):
        while not uv.started:
            await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    await asyncio.wait_for(task, 20)
