"""faust-streaming runs on the embedded broker: a worker's agent consumes a source topic in its
consumer group and produces to a sink topic, keeping the per-key order."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bus import Settings, TopicSpec, ensure_topics
from bus.kafka import KafkaAccess
from tests.conftest import REPO

pytestmark = pytest.mark.stack


async def test_faust_agent_forwards_between_topics(
    settings: Settings, bootstrap: str, kafka: KafkaAccess, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    source, sink = f"it.faust.in.{suffix}", f"it.faust.out.{suffix}"
    await ensure_topics(kafka, [TopicSpec(source, 3), TopicSpec(sink, 3)])
    env = {
        **os.environ, "FORWARDER_APP_ID": f"it-forwarder-{suffix}",
        "FORWARDER_BOOTSTRAP": kafka.bootstrap, **kafka.env(),
        "FORWARDER_SOURCE": source, "FORWARDER_SINK": sink,
        "PYTHONPATH": str(REPO),
    }
    log_path = tmp_path / "faust.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "faust", "--datadir", str(tmp_path / "faust-data"),
             "-A", "tests.integration.faust_forwarder", "worker", "--loglevel", "warn"],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        producer = kafka.producer(acks="all")
        await producer.start()
        try:
            for i in range(30):
                await producer.send(source, f"order {i:02d} placed".encode(),
                                    key=f"ord-{i % 5}".encode())
            await producer.flush()
        finally:
            await producer.stop()

        consumer = kafka.consumer(sink, group_id=f"it-{suffix}",
                                    auto_offset_reset="earliest")
        await consumer.start()
        got: list[tuple[bytes, bytes]] = []
        try:
            async with asyncio.timeout(60):
                while len(got) < 30:
                    assert worker.poll() is None, log_path.read_text()[-3000:]
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        got += [(r.key, r.value) for r in records if r.key and r.value]
        finally:
            await consumer.stop()
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    assert sorted(v for _, v in got) == [f"ORDER {i:02d} PLACED".encode() for i in range(30)]
    for key in {k for k, _ in got}:
        values = [v for k, v in got if k == key]
        assert values == sorted(values), f"order of {key!r} not kept"
