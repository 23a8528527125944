"""``boxbus bench isolation``: one box flooding the network must not slow the others.

Two quiet boxes exchange orders at a steady rate through the router (``quiet-a`` writes into
its ingress topic, the router delivers to ``quiet-b``'s inbox) while a third box floods its own
ingress topic at ten times its produce quota. Each box connects as its own Kafka user, the
router as its own, and the quotas are the ones ``topology apply`` set. Reported, side by side:

- ``baseline_p99_ms`` and ``flood_p99_ms``: the quiet boxes' end-to-end latency (from the
  producer's send to the record's arrival in the recipient's inbox topic), before and during
  the flood; the goal is ``flood_p99_ms`` at most twice ``baseline_p99_ms``;
- ``flooder_rate_vs_quota``: the bytes a second the brokers acknowledged to the flooder, over
  its quota; the goal is at most 1.5.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from bus import naming
from bus.credentials import CredentialStore
from bus.envelope import Envelope
from bus.kafka import KafkaAccess, start_or_close
from bus.settings import Settings
from bus.topology import Topology, apply_plan, make_plan, parse_topology

FLOODER_QUOTA = 256 * 1024  # bytes a second the flooder may produce (per broker)
RECORD = 1024  # bytes of each flooding record

NETWORK = f"""\
regions:
  north: {{partitions: 3}}
  south: {{partitions: 3}}
boxes:
  - {{id: quiet-a, region: north, company: a}}
  - {{id: quiet-b, region: north, company: b}}
  - {{id: flooder, region: south, company: f,
     quota: {{produce: {FLOODER_QUOTA}, fetch: {4 * FLOODER_QUOTA}}}}}
relationships:
  - {{kind: trade, buyer: quiet-a, supplier: quiet-b}}
"""


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 1)


class _Quiet:
    """quiet-a's steady orders and their arrival in quiet-b's inbox."""

    def __init__(self, sender: KafkaAccess, receiver: KafkaAccess, ns: str, rate: int) -> None:
        self.sender, self.receiver, self.ns, self.rate = sender, receiver, ns, rate
        self.sent: dict[bytes, float] = {}
        self.latencies_ms: list[tuple[float, float]] = []  # (arrived at, latency)

    async def send(self, stop: asyncio.Event) -> None:
        producer = self.sender.producer(acks="all", enable_idempotence=True, linger_ms=0)
        await start_or_close(producer, self.sender)
        topic = naming.ingress_topic(self.ns, "quiet-a")
        try:
            n, began = 0, time.monotonic()
            while not stop.is_set():
                key = f"po-{n % 50}"
                event_id = str(uuid.uuid4())
                headers = Envelope(id=event_id, source_box="quiet-a",
                                   type="boxbus.orders.OrderAmended", time=datetime.now(UTC),
                                   region="north", partition_key=key, target_box="quiet-b",
                                   correlation_id=key).to_headers()
                self.sent[event_id.encode()] = time.monotonic()
                await producer.send(topic, b"x" * 600, key=key.encode(), headers=headers)
                n += 1
                await asyncio.sleep(max(0.0, began + n / self.rate - time.monotonic()))
        finally:
            await producer.stop()

    async def receive(self, stop: asyncio.Event) -> None:
        consumer = self.receiver.consumer(
            naming.inbox_topic(self.ns, "quiet-b"), group_id=f"{self.ns}.box.quiet-b.bench",
            auto_offset_reset="latest", enable_auto_commit=False, fetch_max_wait_ms=10)
        await start_or_close(consumer, self.receiver)
        try:
            while not stop.is_set():
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    now = time.monotonic()
                    for record in records:
                        sent = self.sent.pop(dict(record.headers).get("ce_id", b""), None)
                        if sent is not None:
                            self.latencies_ms.append((now, (now - sent) * 1000))
        finally:
            await consumer.stop()

    def between(self, start: float, end: float) -> list[float]:
        return [ms for at, ms in self.latencies_ms if start <= at < end]


async def _flood(flooder: KafkaAccess, ns: str, stop: asyncio.Event,
                 acked: list[int], offered: list[int]) -> None:
    """Offer ten times the quota (paced), keeping up to 100,000 records in flight; count the
    bytes offered and the bytes the brokers acknowledged."""
    producer = flooder.producer(acks="all", enable_idempotence=True, linger_ms=5,
                                max_batch_size=64 * 1024)
    await start_or_close(producer, flooder)
    topic = naming.ingress_topic(ns, "flooder")
    body = os.urandom(RECORD)
    pending: set[asyncio.Future[Any]] = set()
    try:
        n, began = 0, time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(max(0.0, began + n * RECORD / (10 * FLOODER_QUOTA)
                                    - time.monotonic()))
            key = f"f-{n % 64}"
            headers = Envelope(id=str(uuid.uuid4()), source_box="flooder",
                               type="boxbus.logistics.StockLevelChanged",
                               time=datetime.now(UTC), region="south", partition_key=key
                               ).to_headers()
            future = await producer.send(topic, body, key=key.encode(), headers=headers)
            future.add_done_callback(
                lambda f: acked.append(RECORD) if not f.cancelled() and not f.exception()
                else None)
            pending.add(future)
            offered.append(RECORD)
            pending = {f for f in pending if not f.done()}
            n += 1
            if len(pending) > 100_000:  # bounded (about 100 MB): far above a flood of 30 s
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    finally:
        with contextlib.suppress(KafkaError):
            await producer.stop()


async def isolation_bench(settings: Settings, operator: KafkaAccess, *, rate: int,
                          seconds: float, progress: Callable[[str], None]) -> dict[str, Any]:
    ns = settings.topic_namespace
    topology: Topology = parse_topology(NETWORK)
    progress(f"applying a three-box network as namespace {ns} (users, ACLs, quotas) ...")
    await apply_plan(operator, await make_plan(settings, operator, topology))
    store = CredentialStore.of(settings)

    def login(user: str) -> KafkaAccess:
        found = store.access(user, operator)
        if found is None:
            raise RuntimeError(f"no credentials kept for {user}: is the cluster secured?")
        return found

    quiet = _Quiet(login(naming.box_principal(ns, "quiet-a")),
                   login(naming.box_principal(ns, "quiet-b")), ns, rate)
    router_log = settings.run_dir / f"isolation-router-{ns}.log"
    router = _start_router(settings, router_log)
    stop, flooding = asyncio.Event(), asyncio.Event()
    acked: list[int] = []
    offered: list[int] = []
    tasks = [asyncio.create_task(quiet.receive(stop)), asyncio.create_task(quiet.send(stop))]
    try:
        progress(f"quiet-a sends {rate} orders/s to quiet-b through the router: warming up ...")
        await asyncio.sleep(5)
        began = time.monotonic()
        progress(f"baseline: {seconds:.0f} s ...")
        await asyncio.sleep(seconds)
        flood_began = time.monotonic()
        progress(f"flood: the flooder offers 10x its {FLOODER_QUOTA // 1024} KiB/s and more "
                 f"for {seconds:.0f} s ...")
        flood = asyncio.create_task(_flood(login(naming.box_principal(ns, "flooder")), ns,
                                           flooding, acked, offered))
        await asyncio.sleep(seconds)
        flood_ended = time.monotonic()
        flooding.set()
        await flood
        await asyncio.sleep(2)  # the last quiet orders arrive
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await task
        router.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            router.wait(30)
    baseline = quiet.between(began, flood_began)
    during = quiet.between(flood_began, flood_ended)
    flooded = sum(acked) / (flood_ended - flood_began)
    base_p99, flood_p99 = _percentile(baseline, 0.99), _percentile(during, 0.99)
    return {
        "namespace": ns, "rate": rate, "seconds": seconds,
        "baseline_p50_ms": _percentile(baseline, 0.50), "baseline_p99_ms": base_p99,
        "flood_p50_ms": _percentile(during, 0.50), "flood_p99_ms": flood_p99,
        "flood_vs_baseline_p99": round(flood_p99 / base_p99, 2)
        if flood_p99 and base_p99 else None,
        "baseline_samples": len(baseline), "flood_samples": len(during),
        "flooder_quota_bytes_per_s": FLOODER_QUOTA,
        # What the flooder tried to send; the brokers' throttling holds its client back
        # (aiokafka's send waits while the partition's batches are not acknowledged).
        "flooder_target_bytes_per_s": 10 * FLOODER_QUOTA,
        "flooder_sent_bytes_per_s": round(sum(offered) / (flood_ended - flood_began)),
        "flooder_bytes_per_s": round(flooded),
        "flooder_rate_vs_quota": round(flooded / FLOODER_QUOTA, 2),
        "quiet_mean_ms": round(statistics.fmean(baseline + during), 1)
        if baseline + during else None,
        "router_log": str(router_log),
    }


def _start_router(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """The network's router as its own process, logged in as its own user (kept in the
    credential store of ``settings.run_dir``: an identity in BOXBUS_KAFKA_SASL_* would win)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("BOXBUS_KAFKA_SASL_USERNAME", "BOXBUS_KAFKA_SASL_PASSWORD")}
    env |= {"BOXBUS_RUN_DIR": str(settings.run_dir),
            "BOXBUS_TOPIC_NAMESPACE": settings.topic_namespace, "BOXBUS_LOG_LEVEL": "WARNING"}
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "boxbus.cli.main", "router", "run"],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
