"""A whole network of reference boxes for a test module: its own topic namespace, a database
per box, the router, all on the suite's stack (and its object store when asked)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

from bus import Settings
from bus.catalog import SchemaCatalog
from bus.devstack import StackInfo
from bus.kafka import KafkaAccess
from bus.registry import SchemaRegistry
from bus.serde import EventSerde
from bus.topology import parse_topology
from connectors.refbox.network import LocalNetwork


@contextlib.asynccontextmanager
async def running_network(settings: Settings, stack: StackInfo, kafka: KafkaAccess,
                          topology: str, prefix: str, *, object_store: bool = False,
                          systems: dict[str, str] | None = None
                          ) -> AsyncIterator[LocalNetwork]:
    assert stack.database_url and stack.schema_registry_url
    own = Settings(run_dir=settings.run_dir, topic_namespace=f"{prefix}{uuid.uuid4().hex[:8]}")
    if object_store:
        own = stack.object_store_settings(own)
    serde = EventSerde(SchemaRegistry(stack.schema_registry_url), SchemaCatalog.load())
    async with LocalNetwork(own, kafka, stack.database_url, serde,
                            parse_topology(topology), systems=systems) as network:
        yield network
        assert network.failed() == []
