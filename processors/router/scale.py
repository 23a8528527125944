"""``boxbus bench scale``: the same traffic over networks of 10, 200, 2,000 boxes.

For each size, in a namespace of its own on the running stack:

1. **The network.** ``--boxes N`` boxes in five regions, each a buyer of the next three (a
   ring of trade relationships), and one central analytics box subscribed network-wide to
   orders. Every box has what the topology gives it: its ingress topic with dead-letter and
   quarantine topics, its inbox with a dead-letter topic (``--partitions`` each), its Kafka
   principal (SCRAM), its ACLs, its quota and its signing key. ``boxbus topology`` plans and
   applies it; both are timed, and the topics, partitions, principals and ACLs counted.
2. **The broker.** Its resident memory and its JVM heap in use (``jcmd GC.heap_info``) before
   and after, and the time one metadata request for all the network's ingress topics takes
   (what the router's consumer asks on every refresh). Then one record goes into each
   partition of the topics the traffic is routed to, timed (``warm_up_seconds``): a
   partition's first write is far dearer than the next ones, and it is a cost of the apply,
   not of routing (the contenders after it find every partition as a running network has
   them).
3. **The router.** ``--events`` records, spread evenly over every box's ingress topic (each a
   box's order to one of its suppliers, a third of them also to analytics), are routed by the
   router in a process of its own: events/s, CPU seconds, peak memory, and the seconds from
   its start to its first record (control topics read, subscription metadata, group joined).
4. **An inbox.** The SDK's inbox of one box applies ``--inbox-events`` events of the
   reference mix exactly once (as in ``boxbus bench outbox``), on a broker that now holds the
   whole network.
5. **Clean-up.** The namespace's topics, its principals with their ACLs and quotas, and the
   bench's databases go.

The sizes run one after the other on the same broker; ratios against the smallest size say
how flat each figure stays.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bus import naming
from bus.envelope import Envelope
from bus.kafka import KafkaAccess, start_or_close
from bus.serde import EventSerde
from bus.settings import Settings
from bus.topology import Topology, apply_plan, make_plan
from bus.topology.teardown import remove_namespace
from connectors.box.bench import Bench
from processors.peers.contract import DESTINATIONS_HEADER
from processors.procstat import open_files, proc_rss_mb
from processors.router.bench import (
    SIZES,
    Record,
    Run,
    produce,
    run_contender,
    with_destinations,
)

REGIONS = ("north", "south", "east", "west", "centre")
WARM_UP = b"boxbus bench scale: a partition's first write, before the measured runs"
ANALYTICS = "analytics"


def scale_topology(namespace: str, boxes: int, partitions: int = 1) -> Topology:
    """``boxes`` boxes in five regions, each buying from the next three, and one analytics box
    that subscribes to every order of the network."""
    ids = [f"b{n:05d}" for n in range(boxes)]
    entries: list[dict[str, Any]] = [
        {"id": box, "region": REGIONS[n % len(REGIONS)], "company": box}
        for n, box in enumerate(ids)]
    entries.append({"id": ANALYTICS, "region": "central", "company": "analytics"})
    relationships = [{"kind": "trade", "buyer": box, "supplier": ids[(n + step) % boxes]}
                     for n, box in enumerate(ids) for step in (1, 2, 3)
                     if ids[(n + step) % boxes] != box]
    # Distinct pairs only (a tiny network wraps around onto the same supplier).
    unique = list({(r["buyer"], r["supplier"]): r for r in relationships}.values())
    return Topology.model_validate({
        "namespace": namespace,
        "regions": {r: {"partitions": 6} for r in (*REGIONS, "central")},
        "defaults": {"ingress_partitions": partitions, "inbox_partitions": partitions},
        "boxes": entries, "relationships": unique,
        "subscriptions": [{"box": ANALYTICS, "name": "orders", "scope": "network",
                           "types": ["OrderPlaced"]}]})


def scale_traffic(topology: Topology, count: int) -> list[Record]:
    """``count`` records spread evenly over every box's ingress topic: each an order or a
    comment from a box to one of its suppliers (orders also reach the analytics box)."""
    ns = topology.namespace or "boxbus"
    buyers = [b for b in topology.boxes if b.id != ANALYTICS]
    suppliers: dict[str, list[str]] = {}
    for r in topology.relationships:
        if r.kind == "trade":
            suppliers.setdefault(r.buyer, []).append(r.supplier)
    region_of = {b.id: b.region for b in topology.boxes}
    now = datetime.now(UTC)
    out: list[Record] = []
    for n in range(count):
        buyer = buyers[n % len(buyers)].id
        supplier = suppliers[buyer][(n // len(buyers)) % len(suppliers[buyer])]
        kind = ("OrderPlaced", "CommentAdded", "CommentAdded")[n % 3]
        domain = "orders" if kind == "OrderPlaced" else "collaboration"
        key = f"po-{buyer}-{n // len(buyers)}"
        headers = Envelope(id=str(uuid.UUID(int=n + 1)), source_box=buyer,
                           type=f"boxbus.{domain}.{kind}", time=now, region=region_of[buyer],
                           partition_key=key, target_box=supplier,
                           correlation_id=key).to_headers()
        out.append((naming.ingress_topic(ns, buyer), key.encode(),
                    b"\0" * SIZES[kind], headers))
    return out


# Descriptors the local broker holds besides one per partition (sockets, jars, its own logs).
FILES_BESIDES_PARTITIONS = 1000


async def room_for(broker_pid: int | None, partitions: int, progress: Callable[[str], None],
                   *, patience: float = 180.0) -> None:
    """Wait until the local broker has descriptors left for ``partitions`` more (it holds
    about one per partition); a clear error if it never does. A topic deleted a moment ago
    keeps its files open until the broker gets to deleting them, and 10,087 partitions of a
    2,000-box network made just after the last one's clean-up took the broker past this
    machine's limit of 20,000 (it stopped: "Too many open files")."""
    if broker_pid is None:
        return  # a broker elsewhere: its operator sized it
    deadline = time.monotonic() + patience
    while True:
        found = open_files(broker_pid)
        if found is None:
            return
        held, limit = found
        if held + partitions + FILES_BESIDES_PARTITIONS <= limit:
            return
        if partitions + FILES_BESIDES_PARTITIONS > limit or time.monotonic() > deadline:
            raise RuntimeError(
                f"the broker holds {held} of its {limit} file descriptors and a network of "
                f"{partitions} partitions needs about {partitions} more: delete the topics "
                "of networks left on it, or give it a higher limit (ulimit -n), then run the "
                "benchmark again (`boxbus dev down` and `boxbus dev up` make an empty local "
                "stack)")
        progress(f"waiting for the broker to close deleted topics' files ({held} of {limit} "
                 "descriptors held) ...")
        await asyncio.sleep(2)


async def warm_up(kafka: KafkaAccess, partitions: dict[str, int]) -> float:
    """Write one record into every partition of ``partitions`` (topic -> count); the seconds
    it took. A partition's first write costs the broker far more than the next ones (its
    segment's files and indexes are opened then), and a network's topics are written for
    years after they are made: without this, the first contender measured after a topology
    apply paid for every fresh partition of the network (at 2,000 boxes the router took
    9.8 s for what took it 1.4-1.6 s twice right after, on the same partitions)."""
    producer = kafka.producer(acks="all", linger_ms=5)
    await start_or_close(producer, kafka)
    began = time.perf_counter()
    try:
        sent = [await producer.send(topic, WARM_UP, partition=partition)
                for topic, count in partitions.items() for partition in range(count)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return time.perf_counter() - began


def broker_heap_mb(pid: int | None) -> float | None:
    """The broker JVM's heap in use, from ``jcmd <pid> GC.heap_info`` (None without jcmd)."""
    jcmd = shutil.which("jcmd")
    if pid is None or jcmd is None:
        return None
    try:
        out = subprocess.run([jcmd, str(pid), "GC.heap_info"], capture_output=True, text=True,
                             timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        words = line.replace(",", " ").split()
        if "used" in words:  # "garbage-first heap   total 262144K, used 123456K"
            used = words[words.index("used") + 1]
            if used.endswith("K") and used[:-1].isdigit():
                return round(int(used[:-1]) / 1024, 1)
    return None


async def metadata_seconds(kafka: KafkaAccess, topics: list[str]) -> float:
    """One metadata request for ``topics`` (what a consumer subscribed to them asks on every
    refresh), timed."""
    admin = kafka.admin()
    await start_or_close(admin, kafka)
    try:
        began = time.perf_counter()
        await admin.describe_topics(topics)
        return time.perf_counter() - began
    finally:
        await admin.close()


async def measure(settings: Settings, kafka: KafkaAccess, *, size: int, events: int,
                  inbox_events: int, partitions: int, server_dsn: str, serde_for: Callable[
                      [Settings], EventSerde], broker_pid: int | None, timeout: float,
                  progress: Callable[[str], None], rounds: int = 1) -> dict[str, Any]:
    ns = f"sc{uuid.uuid4().hex[:5]}n{size}"
    with tempfile.TemporaryDirectory(prefix="boxbus-scale-") as keys:
        # The boxes' passwords and signing keys go to a folder of the run's own, not among
        # the local stack's credentials.
        run = settings.model_copy(update={"topic_namespace": ns, "run_dir": Path(keys)})
        return await _measure(run, kafka, size=size, events=events, inbox_events=inbox_events,
                              partitions=partitions, server_dsn=server_dsn,
                              serde_for=serde_for, broker_pid=broker_pid, timeout=timeout,
                              progress=progress, rounds=rounds)


async def _measure(run: Settings, kafka: KafkaAccess, *, size: int, events: int,
                   inbox_events: int, partitions: int, server_dsn: str,
                   serde_for: Callable[[Settings], EventSerde], broker_pid: int | None,
                   timeout: float, progress: Callable[[str], None], rounds: int = 1
                   ) -> dict[str, Any]:
    ns = run.topic_namespace
    topology = scale_topology(ns, size, partitions)
    figures: dict[str, Any] = {"boxes": size, "namespace": ns}
    figures["broker_rss_mb_before"] = proc_rss_mb(broker_pid) if broker_pid else None
    figures["broker_heap_mb_before"] = broker_heap_mb(broker_pid)
    # The inbox runs beside the network, in a namespace of its own: the network's signing
    # record would have it verify signatures the bench's events do not carry.
    beside = run.model_copy(update={"topic_namespace": f"{ns}i"})
    bench = Bench(beside, kafka, server_dsn, serde_for(beside), progress)
    try:
        progress(f"{size} boxes: planning the network ...")
        began = time.perf_counter()
        plan = await make_plan(run, kafka, topology)
        figures["plan_seconds"] = round(time.perf_counter() - began, 2)
        counts: dict[str, int] = {}
        for change in plan.changes:
            counts[change.action] = counts.get(change.action, 0) + 1
        figures["topics"] = counts.get("create-topic", 0)
        figures["partitions"] = sum(c.data["partitions"] for c in plan.changes
                                    if c.action == "create-topic")
        figures["principals"] = counts.get("create-principal", 0)
        figures["acls"] = counts.get("add-acl", 0)
        figures["control_records"] = counts.get("write-control", 0)
        await room_for(broker_pid, figures["partitions"], progress)
        progress(f"{size} boxes: applying {figures['topics']} topics "
                 f"({figures['partitions']} partitions), {figures['principals']} principals, "
                 f"{figures['acls']} ACLs ...")
        began = time.perf_counter()
        await apply_plan(kafka, plan)
        figures["apply_seconds"] = round(time.perf_counter() - began, 2)
        ingress = [naming.ingress_topic(ns, b.id) for b in topology.boxes]
        figures["metadata_request_ms"] = round(
            1000 * await metadata_seconds(kafka, ingress), 1)

        progress(f"{size} boxes: producing {events} records over {len(ingress)} ingress "
                 "topics ...")
        traffic = with_destinations(topology, scale_traffic(topology, events))
        await produce(kafka, traffic)
        sources = sorted({t for t, _, _, _ in traffic})
        outputs = sorted({to for _, _, _, headers in traffic for name, value in headers
                          if name == DESTINATIONS_HEADER for to in value.decode().split(",")})
        del traffic
        partitions_of = {c.target: c.data["partitions"] for c in plan.changes
                         if c.action == "create-topic"}
        progress(f"{size} boxes: a first record into each partition of {len(outputs)} output "
                 "topics ...")
        figures["warm_up_seconds"] = round(await warm_up(
            kafka, {t: partitions_of[t] for t in outputs}), 2)
        # Each contender reads the same records again in each round (a group of its own);
        # the best round counts, every round's rate is kept (the machine is noisy).
        best: dict[str, Run] = {}
        every: dict[str, list[float]] = {"raw_aiokafka": [], "router": []}
        for round_no in range(1, rounds + 1):
            progress(f"{size} boxes, round {round_no}/{rounds}: raw aiokafka over the "
                     f"{events} records (the floor) ...")
            raw = await run_contender("raw_aiokafka", [
                sys.executable, "-m", "processors.peers.raw_forward",
                *(a for s in sources for a in ("--source", s)), "--bootstrap", kafka.bootstrap,
                "--count", str(events), "--timeout", str(timeout),
                "--group", f"{ns}.bench.raw{round_no}"], broker_pid, timeout, kafka)
            progress(f"{size} boxes, round {round_no}/{rounds}: the router over the {events} "
                     "records ...")
            router = await run_contender("router", [
                sys.executable, "-m", "processors.router.bench_run", "--namespace", ns,
                "--bootstrap", kafka.bootstrap, "--count", str(events), "--timeout",
                str(timeout), "--group", f"{ns}.bench.router{round_no}"], broker_pid, timeout,
                kafka)
            for contender in (raw, router):
                if contender.error:
                    raise RuntimeError(f"{contender.name} did not forward the {events} "
                                       f"records: {contender.error}")
                every[contender.name].append(contender.events_per_s)
                if (contender.name not in best
                        or contender.events_per_s > best[contender.name].events_per_s):
                    best[contender.name] = contender
        raw, router = best["raw_aiokafka"], best["router"]
        figures |= {"raw_aiokafka_rounds": every["raw_aiokafka"],
                    "router_rounds": every["router"]}
        figures |= {
            "raw_aiokafka_events_per_s": raw.events_per_s,
            "raw_aiokafka_cpu_seconds": raw.cpu_seconds,
            "router_events_per_s": router.events_per_s,
            "router_outputs_per_event": round(router.outputs / router.events, 2),
            "router_cpu_seconds": router.cpu_seconds,
            "router_peak_rss_mb": router.peak_rss_mb,
            "router_start_seconds": router.extra.get("start_seconds"),
            "router_ingress_topics": router.extra.get("ingress_topics"),
        }
        progress(f"{size} boxes: an inbox applying {inbox_events} events ...")
        await bench.inbox_vs_per_event(inbox_events, 200)
        figures["inbox_events_per_s"] = bench.results["inbox_events_per_s"]
        figures["broker_rss_mb_after"] = proc_rss_mb(broker_pid) if broker_pid else None
        figures["broker_heap_mb_after"] = broker_heap_mb(broker_pid)
    finally:
        progress(f"{size} boxes: cleaning up the namespace ...")
        began = time.perf_counter()
        await bench.drop_databases()
        await remove_namespace(kafka, ns)
        await remove_namespace(kafka, beside.topic_namespace)
        figures["clean_up_seconds"] = round(time.perf_counter() - began, 2)
    return figures


async def bench_scale(settings: Settings, kafka: KafkaAccess, *, sizes: list[int], events: int,
                      inbox_events: int, partitions: int, server_dsn: str,
                      serde_for: Callable[[Settings], EventSerde], broker_pid: int | None,
                      timeout: float, progress: Callable[[str], None], rounds: int = 2
                      ) -> dict[str, Any]:
    runs = []
    for size in sizes:
        runs.append(await measure(settings, kafka, size=size, events=events,
                                  inbox_events=inbox_events, partitions=partitions,
                                  server_dsn=server_dsn, serde_for=serde_for,
                                  broker_pid=broker_pid, timeout=timeout, progress=progress,
                                  rounds=rounds))
    first = runs[0]

    def flat(key: str) -> float | None:
        rates = [r[key] for r in runs if r.get(key)]
        return round(min(rates) / max(rates), 3) if len(rates) == len(runs) else None

    return {
        "events": events, "inbox_events": inbox_events, "partitions_per_box_topic": partitions,
        "rounds": rounds, "sizes": runs,
        # The slowest size's rate over the fastest's: 1.0 is perfectly flat (goal >= 0.8).
        "router_flatness": flat("router_events_per_s"),
        "raw_aiokafka_flatness": flat("raw_aiokafka_events_per_s"),
        "inbox_flatness": flat("inbox_events_per_s"),
        "router_vs_smallest": [round(r["router_events_per_s"] / first["router_events_per_s"], 3)
                               for r in runs],
    }

