"""Session fixtures: the embedded local stack, started once for the whole suite and stopped at
the end. It lives in its own run directory on free ports, so it never clashes with a stack a
developer started with `boxbus dev up`. Services given as BOXBUS_* settings (an existing
Kafka, database, registry or object store) are used instead of starting embedded ones.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bus.devstack import LocalStack, StackInfo
from bus.kafka import KafkaAccess
from bus.log import configure_logging
from bus.settings import LogFormat, Settings

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With external services configured, tests that kill or inspect embedded processes
    cannot run; everything else runs against the external services."""
    settings = Settings()
    external = [name for name, on in [
        ("BOXBUS_KAFKA_BOOTSTRAP_SERVERS", settings.external_kafka),
        ("BOXBUS_DATABASE_URL", settings.external_database),
        ("BOXBUS_SCHEMA_REGISTRY_URL", settings.external_registry),
        ("BOXBUS_SMTP_HOST", settings.external_smtp),
        ("BOXBUS_OBJECT_STORE_URL", settings.external_object_store),
    ] if on]
    if not external:
        return
    skip = pytest.mark.skip(reason=f"needs the embedded stack; {', '.join(external)} set")
    for item in items:
        if item.get_closest_marker("embedded"):
            item.add_marker(skip)


def boxbus_cli() -> list[str]:
    """The installed console command, run with this interpreter."""
    return [sys.executable, "-m", "boxbus.cli.main"]


@pytest.fixture(scope="session")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("boxbus-run")


@pytest.fixture(scope="session")
def settings(run_root: Path) -> Settings:
    configure_logging(LogFormat.CONSOLE, os.environ.get("BOXBUS_LOG_LEVEL", "WARNING"))
    # Short Kafka sessions: every client of the suite is cut off and logs in again several
    # times, and a rotated password ends open sessions within a test's patience.
    return Settings(run_dir=run_root / "stack", dev_kafka_session_seconds=10)


@pytest.fixture(scope="session")
async def stack(settings: Settings) -> AsyncIterator[StackInfo]:
    local = LocalStack(settings, base_port=0)
    # A failed `up` stops what it started and keeps its logs for the error message to point at.
    info = await local.up()
    try:
        yield info
    finally:
        local.down()


@pytest.fixture(scope="session")
def bootstrap(stack: StackInfo) -> str:
    assert stack.kafka_bootstrap
    return stack.kafka_bootstrap


def stack_access(info: StackInfo | dict[str, Any]) -> KafkaAccess:
    """How a test connects to a stack's brokers, from what `dev up` reported (the object or
    its --json): the operator's identity."""
    seen = info if isinstance(info, StackInfo) else StackInfo.model_validate(info)
    return seen.kafka_access(Settings())


@pytest.fixture(scope="session")
def kafka(settings: Settings, stack: StackInfo) -> KafkaAccess:
    """The suite's connection to the stack's brokers (its identity: the operator's)."""
    if settings.external_kafka:
        return KafkaAccess.from_settings(settings)
    return stack_access(stack)


@pytest.fixture(scope="session")
def store_settings(settings: Settings, stack: StackInfo) -> Settings:
    """The suite's settings with the stack's object store filled in (its address, keys and
    bucket), for ObjectStore.from_settings; an external store's settings as they are."""
    return stack.object_store_settings(settings)


@pytest.fixture
def ns_settings(settings: Settings) -> Settings:
    """The suite's settings with a topic namespace of its own (a network per test)."""
    return Settings(run_dir=settings.run_dir, topic_namespace=f"tp{uuid.uuid4().hex[:10]}")


@pytest.fixture
def env_for_cli(settings: Settings, stack: StackInfo) -> dict[str, str]:
    """Environment under which a `boxbus` subprocess sees the suite's stack."""
    return {**os.environ, "BOXBUS_RUN_DIR": str(settings.run_dir),
           "BOXBUS_CACHE_DIR": str(settings.cache_dir)}
