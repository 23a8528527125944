"""Fixtures of the box SDK tests: a box database of its own per test (migrated), topics of
its own, and helpers to run the relay as a real process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bus import Settings, TopicSpec, create_database, ensure_topics, naming
from bus.catalog import SchemaCatalog
from bus.devstack import StackInfo
from bus.examples import example
from bus.kafka import KafkaAccess
from bus.registry import SchemaRegistry
from bus.serde import EventSerde
from connectors.box import Outbox, migrate
from tests.conftest import REPO


@pytest.fixture
async def box_db(stack: StackInfo) -> str:
    assert stack.database_url
    url = await create_database(stack.database_url, f"box_{uuid.uuid4().hex[:10]}")
    await migrate(url)
    return url


@pytest.fixture
def box_settings(settings: Settings) -> Settings:
    return Settings(run_dir=settings.run_dir, topic_namespace=f"it{uuid.uuid4().hex[:10]}")


@pytest.fixture
def box_serde(stack: StackInfo) -> EventSerde:
    assert stack.schema_registry_url
    return EventSerde(SchemaRegistry(stack.schema_registry_url), SchemaCatalog.load())


def example_source() -> str:
    """The box the contract's examples come from."""
    source: str = example("boxbus.collaboration.CommentAdded").meta.source_box
    return source


@pytest.fixture
async def ingress_topic(box_settings: Settings, kafka: KafkaAccess) -> str:
    """The ingress topic of the examples' source box: where its outbox's events go."""
    topic = naming.ingress_topic(box_settings.topic_namespace, example_source())
    await ensure_topics(kafka, [TopicSpec(topic, 3)])
    return topic


@pytest.fixture
def outbox(box_settings: Settings, box_serde: EventSerde) -> Outbox:
    return Outbox(box_settings, box_serde)


class RelayProcess:
    """`boxbus relay --box ID` as its own process, killable like a real deployment."""

    def __init__(self, box: str, dsn: str, kafka: KafkaAccess, log_path: Path,
                 *args: str) -> None:
        env = {**os.environ, "BOXBUS_DATABASE_URL": dsn, **kafka.env(),
               "BOXBUS_LOG_LEVEL": "INFO", "PYTHONPATH": str(REPO)}
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "boxbus.cli.main", "relay", "--box", box, *args],
                env=env, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[list[RelayProcess]]:
    started: list[RelayProcess] = []
    yield started
    for relay in started:
        relay.terminate()


async def wait_backlog_empty(dsn: str, within: float = 60) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(within):
            while await conn.fetchval("SELECT count(*) FROM boxbus_outbox"):
                await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def read_all(kafka: KafkaAccess, topic: str, count: int, within: float = 60,
                   ) -> list[Any]:
    """The records of ``topic`` from the beginning (a fresh group) until ``count`` distinct
    events (by ce_id) arrived; duplicates from retried batches are kept but not counted."""
    consumer = kafka.consumer(topic, group_id=f"it-read-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(within):
            while len({dict(r.headers).get("ce_id", r.offset) for r in records}) < count:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records += batch
    finally:
        await consumer.stop()
    return records


@pytest.fixture
async def db_conn(box_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(box_db)
    try:
        yield conn
    finally:
        await conn.close()


def scrape(port: int) -> dict[str, float]:
    """The samples of a metrics endpoint, by name (labels dropped: one box per process)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name.split("{", 1)[0]] = float(value)
    return samples


async def wait_metric(port: int, name: str, check: Any, within: float = 30) -> dict[str, float]:
    async with asyncio.timeout(within):
        while True:
            with contextlib.suppress(OSError):
                samples = scrape(port)
                if name in samples and check(samples[name]):
                    return samples
            await asyncio.sleep(0.2)
