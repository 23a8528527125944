"""Fixtures of the contract tests: a registry client, the catalog, serde and a namespace of
topics private to each test (so tests never read each other's records)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bus import Settings
from bus.catalog import SchemaCatalog
from bus.devstack import StackInfo
from bus.registry import SchemaRegistry
from bus.serde import EventSerde


@pytest.fixture(scope="session")
def catalog() -> SchemaCatalog:
    return SchemaCatalog.load()


@pytest.fixture
def registry(stack: StackInfo) -> SchemaRegistry:
    assert stack.schema_registry_url
    return SchemaRegistry(stack.schema_registry_url)


@pytest.fixture
def serde(registry: SchemaRegistry, catalog: SchemaCatalog) -> EventSerde:
    return EventSerde(registry, catalog)


@pytest.fixture
def private_settings(settings: Settings, tmp_path: Path) -> Settings:
    """The suite's settings with a topic namespace of this test's own."""
    return Settings(run_dir=settings.run_dir, topic_namespace=f"it{uuid.uuid4().hex[:10]}")
