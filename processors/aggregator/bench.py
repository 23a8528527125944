"""``boxbus bench week``: the reference week (:mod:`processors.aggregator.week`) replayed
through the real pipeline on the running stack, as fast as it goes, and checked.

1. The reference network (../shared/WORKLOAD.md, scale 1 in shape) is applied under a
   namespace of its own, and an analytics database made for it.
2. The router (``boxbus router run``) and ``--instances`` aggregators (``boxbus aggregator
   run``) start as processes of their own, each as its own Kafka user.
3. The week's events at ``--scale`` are built and published into the ingress topics of their
   source boxes, as each box's relay would (Avro bodies with registered schemas, envelope
   headers), in publishing order.
4. The router routes them (region topics, inboxes of the boxes entitled to them), and the
   aggregators fold the region topics into the analytics database; the run ends when the
   aggregators' stored positions reach the region topics' ends.
5. The aggregates are compared with an independent recomputation from the region topics
   (:mod:`processors.aggregator.verify`).

Reported: events/s of each stage (publishing, routing, aggregating), the wall time from the
first event published to the aggregators' last commit, end-to-end latency p50/p99 (relay's
produce to the aggregator's commit), CPU seconds and peak RSS of every process (the bench
itself, router, aggregators, broker, PostgreSQL), and whether the aggregates are right.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import fastavro

from bus import naming, wire
from bus.catalog import SchemaCatalog
from bus.db import create_database
from bus.envelope import Envelope
from bus.kafka import KafkaAccess
from bus.registry import SchemaRegistry
from bus.settings import Settings
from bus.topics import topic_ends
from bus.topology import Topology, apply_plan, make_plan
from processors.aggregator.progress import positions
from processors.aggregator.verify import differences, recompute
from processors.aggregator.week import REGIONS, Planned, Week, type_name
from processors.procstat import proc_cpu, proc_rss_mb
from processors.router.bench import run_contender, workload_topology

Progress = Callable[[str, int, int], None]  # stage, done, total


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[str]
    cpu_start: float = 0.0
    cpu: float = 0.0
    peak_rss_mb: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    log: Path | None = None

    def sample(self) -> None:
        cpu = proc_cpu(self.proc.pid)
        if cpu is not None:
            self.cpu = cpu - self.cpu_start
        self.peak_rss_mb = max(self.peak_rss_mb, proc_rss_mb(self.proc.pid) or 0.0)

    def stop(self, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            self.sample()
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        text = out or ""
        try:
            self.result = json.loads(text[text.index("{"):])
        except ValueError:
            told = self.log.read_text().strip().splitlines() if self.log else []
            self.result = {"error": (told or [f"exit {self.proc.returncode}"])[-1],
                           "log": str(self.log)}


class Publisher:
    """Encodes planned events as their boxes' relays would and produces them: into each
    source box's ingress topic (for the router), or with ``straight_to_regions`` into its
    region topic as the router would (tests of the aggregator alone)."""

    def __init__(self, kafka: KafkaAccess, registry: SchemaRegistry, catalog: SchemaCatalog,
                 namespace: str, *, straight_to_regions: bool = False) -> None:
        self.kafka = kafka
        self.straight_to_regions = straight_to_regions
        self.registry = registry
        self.catalog = catalog
        self.namespace = namespace
        self._ids: dict[tuple[str, str], int] = {}
        self.published = 0
        self.by_type: dict[str, int] = {}

    async def record(self, planned: Planned) -> tuple[str, bytes, bytes, list[tuple[str, bytes]]]:
        meta = planned.meta
        fullname = type_name(planned.type)
        topic = (naming.region_topic(self.namespace, meta["region"])
                 if self.straight_to_regions
                 else naming.ingress_topic(self.namespace, meta["source_box"]))
        schema = self.catalog[fullname]
        schema_id = self._ids.get((topic, fullname))
        if schema_id is None:
            schema_id = self._ids[(topic, fullname)] = await self.registry.register(
                naming.subject(topic, schema.fullname), schema)
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema.parsed, planned.data)
        envelope = Envelope(
            id=meta["event_id"], source_box=meta["source_box"], type=fullname,
            time=meta["occurred_at"], region=meta["region"],
            partition_key=meta["aggregate_key"],
            dataschema=f"{self.registry.url}/schemas/ids/{schema_id}",
            target_box=meta["target_box"], correlation_id=meta["correlation_id"],
            causation_id=meta["causation_id"])
        self.by_type[planned.type] = self.by_type.get(planned.type, 0) + 1
        return (topic, meta["aggregate_key"].encode(),
                wire.frame(schema_id, buffer.getvalue()), envelope.to_headers())

    async def build(self, week: Week, path: Path,
                    progress: Callable[[int], None] = lambda n: None) -> int:
        """Build every record of the week into ``path`` (chunks of pickled records): what the
        boxes' outboxes hold before their relays publish; the count."""
        count = 0
        with path.open("wb") as out:
            chunk: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
            for planned in week.events():
                chunk.append(await self.record(planned))
                if len(chunk) == CHUNK:
                    pickle.dump(chunk, out, protocol=pickle.HIGHEST_PROTOCOL)
                    count += len(chunk)
                    progress(count)
                    chunk = []
            pickle.dump(chunk, out, protocol=pickle.HIGHEST_PROTOCOL)
            count += len(chunk)
            progress(count)
        return count

    async def publish(self, path: Path, progress: Callable[[int], None] = lambda n: None,
                      *, first: int = 0, last: int | None = None) -> None:
        """Produce the built records (those from ``first`` to before ``last``), in order, as
        the boxes' relays would."""
        producer = self.kafka.producer(acks="all", linger_ms=10, max_batch_size=512 * 1024,
                                       max_request_size=4 * 1024 * 1024)
        await producer.start()
        try:
            with path.open("rb") as records:
                at = 0
                while last is None or at < last:
                    try:
                        chunk = pickle.load(records)
                    except EOFError:
                        break
                    wanted = chunk[max(first - at, 0):None if last is None else last - at]
                    at += len(chunk)
                    sent = [await producer.send(topic, value, key=key, headers=headers)
                            for topic, key, value, headers in wanted]
                    await asyncio.gather(*sent)
                    self.published += len(wanted)
                    if wanted:
                        progress(self.published)
        finally:
            await producer.stop()


CHUNK = 5000


async def _group_committed(kafka: KafkaAccess, group: str) -> int:
    admin = kafka.admin()
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(meta.offset for meta in offsets.values() if meta.offset > 0)


def _start(name: str, command: list[str], env: dict[str, str], logs: Path) -> Process:
    """A process of the pipeline; what it logs goes to a file (a pipe nobody reads until the
    end would fill and stall it)."""
    with (logs / f"{name}.log").open("w") as log:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    return Process(name, proc, log=logs / f"{name}.log")


async def bench_week(settings: Settings, kafka: KafkaAccess, *, registry_url: str,
                     database_server: str, scale: float, instances: int, stack_pids:
                     dict[str, int], timeout: float, verify: bool, say: Callable[[str], None],
                     progress: Progress, topology: Topology | None = None,
                     compare: int = 0) -> dict[str, Any]:
    ns = settings.topic_namespace
    topology = topology or workload_topology(ns)
    say(f"applying the reference network as namespace {ns} ...")
    started = time.perf_counter()
    await apply_plan(kafka, await make_plan(settings, kafka, topology))
    apply_s = time.perf_counter() - started
    dsn = await create_database(database_server, f"{ns}_analytics")
    registry = SchemaRegistry(registry_url)
    catalog = SchemaCatalog.load()
    env = {**os.environ, "BOXBUS_TOPIC_NAMESPACE": ns, "BOXBUS_LOG_LEVEL": "WARNING",
           "BOXBUS_DATABASE_URL": dsn}
    cli = [sys.executable, "-m", "boxbus.cli.main"]
    logs = Path(tempfile.mkdtemp(prefix=f"boxbus-week-{ns}-"))
    processes = [_start("router", [*cli, "router", "run", "--json"], env, logs)]
    processes += [_start(f"aggregator-{n + 1}", [*cli, "aggregator", "run", "--json"], env,
                         logs) for n in range(instances)]
    week = Week(topology, scale)
    publisher = Publisher(kafka, registry, catalog, ns)
    ingress = sorted({naming.ingress_topic(ns, b.id) for b in topology.boxes
                      if b.kind != "partner"})
    regions = [naming.region_topic(ns, r) for r in (*REGIONS, "central")]
    marks: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="boxbus-week-") as scratch:
            say(f"building the week at scale {scale} (the boxes' outboxes: events, Avro "
                "bodies, envelopes) ...")
            built_at = time.perf_counter()
            events = await publisher.build(week, Path(scratch) / "week.records",
                                           lambda n: progress("build", n, 0))
            build_s = time.perf_counter() - built_at
            progress("build", events, events)
            say(f"publishing {events:,} events into the boxes' ingress topics; the router and "
                f"{instances} aggregator(s) run beside ...")
            stack = {name: proc_cpu(pid) or 0.0 for name, pid in stack_pids.items()}
            for p in processes:
                p.cpu_start = proc_cpu(p.proc.pid) or 0.0
            t0 = time.time()
            self_cpu = time.process_time()
            await publisher.publish(Path(scratch) / "week.records",
                                    lambda n: progress("publish", n, events))
        marks["published"] = time.time()
        expected_events = publisher.published
        ingress_total = sum((await topic_ends(kafka, ingress)).values())
        routed = aggregated = 0
        region_total: int | None = None
        async with asyncio.timeout(timeout):
            while True:
                for p in processes:
                    p.sample()
                    if p.proc.poll() is not None:
                        p.stop()
                        raise RuntimeError(f"{p.name} stopped: {p.result}")
                if routed < ingress_total:
                    routed = await _group_committed(kafka, f"{ns}.router")
                    progress("route", routed, ingress_total)
                    if routed >= ingress_total:
                        marks["routed"] = time.time()
                        region_total = sum((await topic_ends(kafka, regions)).values())
                else:
                    assert region_total is not None
                    aggregated = sum((await positions(dsn, f"{ns}.aggregator")).values())
                    progress("aggregate", aggregated, region_total)
                    if aggregated >= region_total:
                        break
                await asyncio.sleep(0.5)
    finally:
        for p in processes:
            p.stop()
    stack_cpu = {name: round((proc_cpu(pid) or 0.0) - stack[name], 1)
                 for name, pid in stack_pids.items()}
    aggregators = [p.result for p in processes[1:]]
    first = min(a.get("first_commit_at") or t0 for a in aggregators)
    last = max(a.get("last_commit_at") or 0 for a in aggregators)
    router = processes[0].result
    result: dict[str, Any] = {
        "namespace": ns, "scale": scale, "aggregator_instances": instances, "logs": str(logs),
        "topology_apply_seconds": round(apply_s, 1), "build_seconds": round(build_s, 1),
        "events": expected_events, "mix": publisher.by_type,
        "region_records": region_total,
        "wall_seconds": round(last - t0, 1),
        "publish_seconds": round(marks["published"] - t0, 1),
        "publish_events_per_s": round(expected_events / (marks["published"] - t0)),
        "route_events_per_s": round(router.get("consumed", 0) / (marks["routed"] - t0)),
        "aggregate_events_per_s": round(sum(a.get("consumed", 0) for a in aggregators)
                                        / max(last - first, 1e-3)),
        "latency_p50_ms": max((a.get("latency_p50_ms") or 0) for a in aggregators),
        "latency_p99_ms": max((a.get("latency_p99_ms") or 0) for a in aggregators),
        "late_events": None, "late_on_purpose": week.late, "copies": week.copies,
        "aggregates_equal_recomputation": None,
        "processes": {
            "bench (publish)": {"cpu_seconds": round(time.process_time() - self_cpu, 1),
                                           "peak_rss_mb": round(proc_rss_mb(os.getpid()) or 0)},
            **{p.name: {"cpu_seconds": round(p.cpu, 1), "peak_rss_mb": round(p.peak_rss_mb)}
               for p in processes},
            **{name: {"cpu_seconds": cpu} for name, cpu in stack_cpu.items()}},
        "router": router, "aggregators": aggregators,
    }
    conn = await asyncpg.connect(dsn)
    try:
        result["late_events"] = await conn.fetchval(
            "SELECT coalesce(sum(late), 0) FROM agg_events_hourly")
        if verify:
            say("recomputing the aggregates from the region topics ...")
            ends = await topic_ends(kafka, regions)
            total = sum(ends.values())
            done = 0

            def read(n: int) -> None:
                nonlocal done
                done += n
                progress("verify", done, total)

            expected = await recompute(kafka, registry, ends, read)
            found = await differences(conn, expected)
            result["aggregates_equal_recomputation"] = not found
            result["differences"] = found
    finally:
        await conn.close()
    result["database"] = dsn.rsplit("/", 1)[-1]
    if compare:
        result["alone"] = await _alone(settings, kafka, registry_url, database_server,
                                       regions, min(compare, region_total or 0),
                                       stack_pids.get("kafka-1"), timeout, say)
    return result


async def _alone(settings: Settings, kafka: KafkaAccess, registry_url: str,
                 database_server: str, regions: list[str], count: int,
                 broker_pid: int | None, timeout: float, say: Callable[[str], None]
                 ) -> dict[str, Any]:
    """The same region records aggregated again by each contender alone, one after the
    other, each in a process of its own: the aggregator (aiokafka, PostgreSQL) and the same
    fold in faust-streaming tables with exactly-once processing."""
    ns = settings.topic_namespace
    py = sys.executable
    dsn = await create_database(database_server, f"{ns}_alone")
    common = ["--bootstrap", kafka.bootstrap, "--registry", registry_url, "--count", str(count),
              "--timeout", str(timeout)]
    contenders = {
        "aggregator": [py, "-m", "processors.aggregator.bench_run", "--namespace", ns,
                       "--group", f"{ns}.alone", "--database-url", dsn, *common],
        "faust_tables": [py, "-m", "processors.peers.faust_aggregate",
                         *(a for topic in regions for a in ("--source", topic)),
                         "--group", f"{ns}.faust", *common],
    }
    found: dict[str, Any] = {"records": count}
    for name, command in contenders.items():
        say(f"{name} alone over {count:,} region records ...")
        run = await run_contender(name, command, broker_pid, timeout, kafka)
        found[name] = {"events_per_s": run.events_per_s, "seconds": run.seconds,
                       "cpu_seconds": run.cpu_seconds, "peak_rss_mb": run.peak_rss_mb,
                       "broker_cpu_seconds": run.broker_cpu_seconds, "error": run.error}
    faust = found["faust_tables"]["events_per_s"]
    found["aggregator_vs_faust"] = (round(found["aggregator"]["events_per_s"] / faust, 1)
                                    if faust else None)
    return found
