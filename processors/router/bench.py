"""``boxbus bench router``: the router's forward rate beside raw aiokafka, Quix Streams and
faust, on the network and traffic of ../shared/WORKLOAD.md, same broker, same records, one run.

1. The reference network (scale 1: head office with three internal systems, five regional
   branches, two central analytics boxes, 50 suppliers, 20 partners) is applied as a topology
   under a namespace of its own.
2. ``--events`` records of the week's mix are produced once onto the six region topics, with
   real envelope headers and opaque bodies of realistic sizes (the router never decodes them):
   store orders of the branches (placed, confirmed, amended, cancelled, comments, a stock change
   per line), purchase orders from branches and head office to suppliers and partners with
   their B2B chain, price lists, branch reports.
3. Each contender then forwards the same records, in a process of its own, reading all region
   topics with a consumer group of its own from the start, and prints its own timing (first
   record fetched to last output acknowledged):
   - ``router``: this router with its routing table (recipients by relationship and
     subscriptions, quarantine, loop guard);
   - ``raw_aiokafka``: getmany + send_batch, no decisions: the floor in aiokafka;
   - ``librdkafka``: confluent-kafka's consumer and producer, no decisions: the limit of one
     Python process (fetch, batching and network in librdkafka's C threads);
   - ``quix``: Quix Streams' idiomatic pipeline (a ``to_topic`` step per output);
   - ``quix_lean``: Quix Streams' leanest pipeline (one step per record, producing directly);
   - ``faust`` / ``faust_batch``: a faust-streaming agent, one event at a time and in batches
     (``stream.take``) — the figures behind the decision to keep faust off the hot path.

   Every contender does the same outputs per event: before any runs, the router's own routing
   table says where each record goes (its region topic, its recipients' inboxes, the mail
   topic), and that list rides on the record as the ``bench_to`` header. The router ignores
   it and decides for itself; the peers send each record to exactly those topics.

Each contender's CPU seconds and peak RSS are read from /proc, and the broker's CPU per run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bus import naming
from bus.envelope import Envelope
from bus.kafka import KafkaAccess
from bus.resources import deploy_dir
from bus.settings import Settings
from bus.signing import HEADER, KeyRing, Signer
from bus.topology import Topology, apply_plan, control, make_plan
from bus.topology.teardown import remove_namespace
from processors.peers.contract import DESTINATIONS_HEADER
from processors.procstat import proc_cpu, proc_rss_mb
from processors.router.table import RoutingTable

REGIONS = ("north", "south", "east", "west", "centre")
REPO = Path(__file__).resolve().parents[2]
CONTENDERS = ("router", "raw_aiokafka", "librdkafka", "quix", "quix_lean", "faust",
              "faust_batch")
_T = "boxbus."


def workload_topology(namespace: str, seed: int = 7) -> Topology:
    """The reference network of WORKLOAD.md at scale 1."""
    rng = random.Random(seed)
    boxes: list[dict[str, Any]] = [
        {"id": "hq", "region": "central", "company": "chain"},
        *({"id": f"hq-{s}", "region": "central", "company": "chain"}
          for s in ("sales", "billing", "service")),
        *({"id": f"analytics-{a}", "region": "central", "company": "chain"}
          for a in ("sales", "stock")),
        *({"id": f"branch-{r}", "region": r, "company": "chain"} for r in REGIONS),
        *({"id": f"sup-{n:02d}", "region": REGIONS[n % 5], "company": f"sup-{n:02d}"}
          for n in range(50)),
        *({"id": f"partner-{n:02d}", "region": REGIONS[n % 5], "company": f"partner-{n:02d}",
           "kind": "partner", "email": f"orders@partner-{n:02d}.example"} for n in range(20)),
    ]
    suppliers = [f"sup-{n:02d}" for n in range(50)]
    relationships: list[dict[str, Any]] = [
        {"kind": "internal", "systems": ["hq", "hq-sales", "hq-billing", "hq-service"]}]
    for region in REGIONS:
        branch = f"branch-{region}"
        relationships.append({"kind": "branch", "head_office": "hq", "branch": branch})
        for supplier in rng.sample(suppliers, rng.randint(10, 20)):
            relationships.append({"kind": "trade", "buyer": branch, "supplier": supplier})
        for partner in rng.sample(range(20), 3):
            relationships.append({"kind": "trade", "buyer": branch,
                                  "supplier": f"partner-{partner:02d}"})
    relationships += [{"kind": "trade", "buyer": "hq", "supplier": s} for s in suppliers]
    subscriptions: list[dict[str, Any]] = [
        *({"box": f"branch-{r}", "name": "from-hq", "types": ["PriceListSent", "DirectiveSent"],
           "where": {"source": ["hq"]}} for r in REGIONS),
        {"box": "hq", "name": "branches", "types": ["BranchReportSent", "OrderPlaced",
                                                     "StockLevelChanged"]},
        {"box": "hq-billing", "name": "to-bill",
         "types": ["OrderConfirmed", "ShipmentDispatched", "InvoiceIssued"]},
        {"box": "analytics-sales", "name": "sales", "scope": "network",
         "types": ["OrderPlaced", "OrderCancelled", "InvoiceIssued", "PaymentRecorded"]},
        {"box": "analytics-stock", "name": "stock", "scope": "network",
         "types": ["StockLevelChanged", "ShipmentDispatched", "GoodsReceived"]},
    ]
    regions = {r: {"partitions": 6} for r in (*REGIONS, "central")}
    return Topology.model_validate({
        "namespace": namespace, "regions": regions, "boxes": boxes,
        "relationships": relationships, "subscriptions": subscriptions})


Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers

SIZES = {"OrderPlaced": 620, "OrderConfirmed": 560, "OrderAmended": 600, "OrderCancelled": 180,
         "CommentAdded": 260, "StockLevelChanged": 150, "DocumentAttached": 900,
         "ShipmentDispatched": 420, "GoodsReceived": 400, "InvoiceIssued": 480,
         "PaymentRecorded": 220, "PriceListSent": 60_000, "BranchReportSent": 300}


def workload_traffic(topology: Topology, count: int, seed: int = 11) -> list[Record]:
    """``count`` records of the week's mix, in publishing order."""
    rng = random.Random(seed)
    ns = topology.namespace or "boxbus"
    trade: dict[str, list[str]] = {}
    for r in topology.relationships:
        if r.kind == "trade":
            trade.setdefault(r.buyer, []).append(r.supplier)
    region_of = {b.id: b.region for b in topology.boxes}
    bodies = {t: rng.randbytes(n) for t, n in SIZES.items()}
    out: list[Record] = []
    now = datetime.now(UTC)

    def emit(source: str, kind: str, key: str, target: str | None = None) -> None:
        region = region_of[source]
        headers = Envelope(id=str(uuid.UUID(int=rng.getrandbits(128))), source_box=source,
                           type=_type(kind), time=now, region=region, partition_key=key,
                           target_box=target, correlation_id=key).to_headers()
        # Into the source's ingress topic, as its relay writes; the router takes it from there.
        out.append((naming.ingress_topic(ns, source), key.encode(), bodies[kind], headers))

    n = 0
    while len(out) < count:
        n += 1
        branch = f"branch-{REGIONS[n % 5]}"
        if n % 25:  # a store order with its chain
            key = f"so-{n}"
            lines = max(1, min(40, int(rng.lognormvariate(1.6, 0.6))))
            emit(branch, "OrderPlaced", key)
            emit(branch, "OrderConfirmed", key)
            if rng.random() < 0.3:
                emit(branch, "OrderAmended", key)
            if rng.random() < 0.5:
                emit(branch, "CommentAdded", key)
            if rng.random() < 0.05:
                emit(branch, "OrderCancelled", key)
            for line in range(lines):
                emit(branch, "StockLevelChanged", f"{branch}/sku-{rng.randrange(5000)}/{line}")
        else:  # a purchase order to a supplier (or a partner), with the B2B chain
            buyer = "hq" if n % 100 == 0 else branch
            supplier = rng.choice(trade[buyer])
            key = f"po-{n}"
            emit(buyer, "OrderPlaced", key, supplier)
            if supplier.startswith("partner"):
                continue
            emit(supplier, "OrderConfirmed", key, buyer)
            for _ in range(2):
                emit(buyer, "CommentAdded", key, supplier)
                emit(supplier, "CommentAdded", key, buyer)
            emit(supplier, "DocumentAttached", key, buyer)
            emit(supplier, "ShipmentDispatched", key, buyer)
            emit(buyer, "GoodsReceived", key, supplier)
            emit(supplier, "InvoiceIssued", key, buyer)
            emit(buyer, "PaymentRecorded", key, supplier)
        if n % 5000 == 0:
            emit("hq", "PriceListSent", f"pl-{n}")
            for region in REGIONS:
                emit(f"branch-{region}", "BranchReportSent", f"rp-{region}-{n}")
    return out[:count]


def with_destinations(topology: Topology, traffic: list[Record]) -> list[Record]:
    """The records with the ``bench_to`` header: where the router's own table sends each one
    (its region topic, then its recipients' topics), so that every peer does the same
    outputs per event as the router (processors/peers/contract.py)."""
    ns = topology.namespace or "boxbus"
    table = RoutingTable.from_control(ns, control.desired_records(topology))
    owners = {naming.ingress_topic(ns, box.id): box.id for box in topology.boxes}
    out: list[Record] = []
    for topic, key, value, headers in traffic:
        decision = table.decide(dict(headers), owners[topic])
        if decision.quarantine or decision.invalid or decision.region_topic is None:
            raise ValueError(f"the workload's record on {topic} would not be routed: "
                             f"{decision.quarantine or decision.reason}")
        to = [decision.region_topic, *(r.topic for r in decision.recipients)]
        out.append((topic, key, value, [*headers, (DESTINATIONS_HEADER, ",".join(to).encode())]))
    return out


def _type(short: str) -> str:
    domain = {"OrderPlaced": "orders", "OrderConfirmed": "orders", "OrderAmended": "orders",
              "OrderCancelled": "orders", "CommentAdded": "collaboration",
              "DocumentAttached": "collaboration", "StockLevelChanged": "logistics",
              "ShipmentDispatched": "logistics", "GoodsReceived": "logistics",
              "InvoiceIssued": "finance", "PaymentRecorded": "finance",
              "PriceListSent": "network", "BranchReportSent": "network"}[short]
    return f"{_T}{domain}.{short}"


async def produce(kafka: KafkaAccess, records: list[Record]) -> float:
    producer = kafka.producer(acks="all", linger_ms=5, max_batch_size=256 * 1024,
                              max_request_size=2 * 1024 * 1024)
    await producer.start()
    started = time.perf_counter()
    try:
        for start in range(0, len(records), 5000):
            futures = [await producer.send(t, v, key=k, headers=h)
                       for t, k, v, h in records[start:start + 5000]]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


@dataclass
class Run:
    name: str
    events: int = 0
    outputs: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    broker_cpu_seconds: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return round(self.events / self.seconds) if self.seconds and not self.error else 0.0


async def run_contender(name: str, command: list[str], broker_pid: int | None,
                        timeout: float, kafka: KafkaAccess) -> Run:
    run = Run(name)
    broker_before = proc_cpu(broker_pid) if broker_pid else None
    # The contender connects as the benchmark does (BOXBUS_KAFKA_*: peers/contract.py).
    env = {**os.environ, "PYTHONPATH": str(REPO), **kafka.env()}
    proc = await asyncio.create_subprocess_exec(*command, env=env, cwd=REPO,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cpu = rss = 0.0
    reading = asyncio.ensure_future(proc.communicate())
    try:
        async with asyncio.timeout(timeout + 30):
            while not reading.done():
                cpu = proc_cpu(proc.pid) or cpu
                rss = proc_rss_mb(proc.pid) or rss
                await asyncio.wait([reading], timeout=0.2)
    except TimeoutError:
        proc.kill()
        run.error = "did not finish in time"
        await reading
        return run
    stdout, stderr = reading.result()
    run.cpu_seconds, run.peak_rss_mb = round(cpu, 2), round(rss, 1)
    if broker_pid and broker_before is not None:
        after = proc_cpu(broker_pid)
        run.broker_cpu_seconds = round(after - broker_before, 2) if after else None
    lines = [line for line in stdout.decode().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        run.error = (stderr.decode().strip().splitlines() or ["exit " + str(proc.returncode)]
                     )[-1][:300]
        return run
    found = json.loads(lines[-1])
    run.events, run.outputs = found["events"], found.get("outputs", 0)
    run.seconds = round(found["seconds"], 3)
    run.extra = {k: v for k, v in found.items() if k not in ("events", "outputs", "seconds")}
    return run


QUIX_CONSTRAINTS = deploy_dir() / "bench" / "quix-constraints.txt"


async def quix_python(cache_dir: Path, progress: Callable[[str], None]) -> str:
    """The interpreter of the Quix Streams environment, created on first use (its pins clash
    with boxbus's own: see deploy/bench/quix-constraints.txt)."""
    env_dir = cache_dir / "quix-venv"
    python = env_dir / "bin" / "python"
    stamp = env_dir / f".installed-{zlib.crc32(QUIX_CONSTRAINTS.read_bytes())}"
    if stamp.exists():
        return str(python)
    progress(f"creating the Quix Streams environment in {env_dir} (once) ...")
    for command in ([sys.executable, "-m", "venv", "--clear", str(env_dir)],
                    [str(python), "-m", "pip", "install", "-q", "-c", str(QUIX_CONSTRAINTS),
                     "quixstreams"]):
        proc = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE,
                                                    stderr=subprocess.STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:4])} failed: "
                               f"{out.decode(errors='replace').strip()[-300:]}")
    stamp.touch()
    return str(python)


def signature_rates(traffic: list[Record], seconds: float = 1.0) -> dict[str, float]:
    """Ed25519 signatures (the sender's) and verifications (the recipient's) a second on one
    core, over the first OrderPlaced record of the traffic, as the outbox and inbox do them."""
    _topic, _key, value, headers = next(r for r in traffic
                                         if dict(r[3])["ce_type"].endswith(b"OrderPlaced"))
    source = dict(headers)["ce_source"].decode().removeprefix("/boxes/")
    signer = Signer.new(source)
    ring = KeyRing([signer.public_key(datetime(2000, 1, 1, tzinfo=UTC))])
    found = dict(headers)
    signed = {**found, HEADER: signer.sign(found, value)}
    rates: dict[str, float] = {}
    for name, work in (("sign_per_s", lambda: signer.sign(found, value)),
                       ("verify_per_s", lambda: ring.verify(signed, value))):
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            for _ in range(200):
                work()
            done += 200
        rates[name] = round(done / (time.perf_counter() - began))
    assert ring.verify({**found, HEADER: signer.sign(found, value)}, value).ok
    return rates


async def warm_up(kafka: KafkaAccess, topics: list[str], count: int) -> None:
    consumer = kafka.consumer(*topics, enable_auto_commit=False, group_id=None,
                              auto_offset_reset="earliest",
                              max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        seen = 0
        async with asyncio.timeout(120):
            while seen < count:
                seen += sum(len(r) for r in (await consumer.getmany(timeout_ms=500,
                                                                     max_records=10_000)).values())
    finally:
        await consumer.stop()


async def bench(settings: Settings, kafka: KafkaAccess, *, events: int, only: set[str],
                broker_pid: int | None, timeout: float, rounds: int,
                progress: Callable[[str], None]) -> dict[str, Any]:
    """Every chosen contender over the same records; the namespace is removed after."""
    try:
        return await _bench(settings, kafka, events=events, only=only, broker_pid=broker_pid,
                            timeout=timeout, rounds=rounds, progress=progress)
    finally:
        progress(f"removing the benchmark's network {settings.topic_namespace} ...")
        await remove_namespace(kafka, settings.topic_namespace)


async def _bench(settings: Settings, kafka: KafkaAccess, *, events: int, only: set[str],
                 broker_pid: int | None, timeout: float, rounds: int,
                 progress: Callable[[str], None]) -> dict[str, Any]:
    ns = settings.topic_namespace
    topology = workload_topology(ns)
    progress(f"applying the reference network as namespace {ns} ...")
    await apply_plan(kafka, await make_plan(settings, kafka, topology))
    progress(f"producing {events} records of the week's mix onto the ingress topics ...")
    traffic = with_destinations(topology, workload_traffic(topology, events))
    produce_s = await produce(kafka, traffic)
    sources = sorted({t for t, _, _, _ in traffic})
    most_outputs = max(len(dict(h)[DESTINATIONS_HEADER].split(b",")) for *_, h in traffic)
    py = sys.executable
    quix_py = py
    if {"quix", "quix_lean"} & only:
        try:
            quix_py = await quix_python(settings.cache_dir, progress)
        except (OSError, RuntimeError) as exc:
            progress(f"Quix Streams is not available: {exc}")
    common = ["--bootstrap", kafka.bootstrap, "--count", str(events), "--timeout", str(timeout)]
    peer = [*(a for s in sources for a in ("--source", s)), *common]
    commands = {
        "router": [py, "-m", "processors.router.bench_run", "--namespace", ns, *common],
        "raw_aiokafka": [py, "-m", "processors.peers.raw_forward", *peer],
        "librdkafka": [py, "-m", "processors.peers.rdkafka_forward", *peer],
        "quix": [quix_py, "-m", "processors.peers.quix_forward", *peer,
                 "--max-outputs", str(most_outputs)],
        "quix_lean": [quix_py, "-m", "processors.peers.quix_lean", *peer],
        "faust": [py, "-m", "processors.peers.faust_forward", *peer],
        "faust_batch": [py, "-m", "processors.peers.faust_forward", "--batch", "500", *peer],
    }
    progress("reading the records once, so that every contender finds them in the page cache "
             "...")
    await warm_up(kafka, sources, events)
    runs: list[Run] = []
    order = [name for name in CONTENDERS if name in only]
    samples: dict[str, list[Run]] = {name: [] for name in order}
    for round_no in range(rounds):
        # Alternate the order: no contender always runs first after the produce, or last.
        for name in order if round_no % 2 == 0 else order[::-1]:
            progress(f"round {round_no + 1}/{rounds}: {name} over the {events} records ...")
            command = [*commands[name], "--group", f"{ns}.bench.{name}.{round_no}"]
            run = await run_contender(name, command, broker_pid, timeout, kafka)
            samples[name].append(run)
            progress(f"  {name}: {run.events_per_s:,.0f} events/s" + (
                f" (error: {run.error})" if run.error else ""))
    for name in order:  # each contender's best round: the least disturbed by the machine
        best = max(samples[name], key=lambda r: r.events_per_s)
        best.extra["events_per_s_each_round"] = [r.events_per_s for r in samples[name]]
        runs.append(best)
    by_name = {r.name: r for r in runs}

    def ratio(a: str, b: str) -> float | None:
        if a in by_name and b in by_name and by_name[b].events_per_s:
            return round(by_name[a].events_per_s / by_name[b].events_per_s, 3)
        return None

    types: dict[str, int] = {}
    for _, _, _, headers in traffic:
        kind = dict(headers)["ce_type"].decode().rsplit(".", 1)[1]
        types[kind] = types.get(kind, 0) + 1
    progress("signing and verifying an order's record on one core ...")
    signing = signature_rates(traffic)
    return {
        "namespace": ns, "events": events, "rounds": rounds,
        "produce_seconds": round(produce_s, 2), **signing,
        "source_topics": sources, "mix": dict(sorted(types.items(), key=lambda kv: -kv[1])),
        **{f"{r.name}_events_per_s": r.events_per_s for r in runs},
        "router_vs_raw_aiokafka": ratio("router", "raw_aiokafka"),
        "router_vs_quix": ratio("router", "quix"),
        "router_vs_quix_lean": ratio("router", "quix_lean"),
        "router_vs_librdkafka": ratio("router", "librdkafka"),
        "quix_lean_vs_quix": ratio("quix_lean", "quix"),
        "faust_vs_raw_aiokafka": ratio("faust", "raw_aiokafka"),
        "faust_batch_vs_raw_aiokafka": ratio("faust_batch", "raw_aiokafka"),
        "runs": [{**vars(r), "events_per_s": r.events_per_s,
                  "outputs_per_event": round(r.outputs / r.events, 2) if r.events else None}
                 for r in runs],
    }
