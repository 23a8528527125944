"""``boxbus bench rpc``: questions through the real path, paced. A network of two related boxes
in request/reply runs on the local stack (the topology applied with their users and ACLs, the
router, each box's relay); one instance of sales asks billing ``BillingPeriodRequested`` at a
steady rate, and billing's responder answers each from its database in the question's
transaction. Each question's round trip is timed from just before it is encoded to the moment
its answer is decoded: asker → router → billing's responder (a PostgreSQL transaction) →
outbox → relay → router → the asker's replies partition.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bus import naming
from bus.catalog import SchemaCatalog
from bus.events.models import BillingPeriodRequested, Money
from bus.kafka import KafkaAccess
from bus.registry import SchemaRegistry
from bus.serde import EventSerde
from bus.settings import Settings
from bus.topology import parse_topology
from connectors.box.handlers import Applied
from connectors.box.rpc import Answers, Requester, RequestFailed, Responder
from connectors.refbox.network import LocalNetwork

NETWORK = """\
regions:
  central: {partitions: 3}
boxes:
  - {id: sales, region: central, company: acme, rpc: true}
  - {id: billing, region: central, company: acme, rpc: true}
relationships:
  - {kind: internal, systems: [sales, billing]}
"""

answers = Answers()


@answers.to(BillingPeriodRequested)
async def billing_period(question: BillingPeriodRequested, applied: Applied) -> dict[str, Any]:
    row = await applied.conn.fetchrow(
        "SELECT invoiced, paid FROM bench_ledger WHERE client_id = $1", question.client_id)
    invoiced, paid = (row["invoiced"], row["paid"]) if row else (0, 0)
    return {"client_id": question.client_id,
            "period_start": datetime(2026, 11, 1, tzinfo=UTC),
            "period_end": datetime(2026, 12, 1, tzinfo=UTC),
            "invoiced": Money(amount_minor=invoiced, currency="EUR"),
            "paid": Money(amount_minor=paid, currency="EUR"),
            "balance": Money(amount_minor=invoiced - paid, currency="EUR"),
            "open_invoices": int(invoiced > paid)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bench_rpc(settings: Settings, kafka: KafkaAccess, *, registry_url: str,
                    database_server: str, requests: int = 1000, rate: float = 50.0,
                    timeout: float = 2.0, warmup: int = 20,
                    say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    serde = EventSerde(SchemaRegistry(registry_url), SchemaCatalog.load(settings.schemas_dir))
    say("applying a two-box network (sales asks, billing answers) and starting the router ...")
    # Billing's relay sends each answer as it is committed (linger 0), as a system that
    # answers questions is run (connectors.company.service).
    async with LocalNetwork(settings, kafka, database_server, serde,
                            parse_topology(NETWORK), relay_linger_ms=0) as network:
        conn = await asyncpg.connect(network.dsns["billing"])
        try:
            await conn.execute("CREATE TABLE IF NOT EXISTS bench_ledger (client_id text "
                               "PRIMARY KEY, invoiced bigint, paid bigint)")
            await conn.executemany("INSERT INTO bench_ledger VALUES ($1, $2, $3) ON CONFLICT "
                                   "DO NOTHING", [(f"client-{n}", 1000 * n, 400 * n)
                                                  for n in range(100)])
        finally:
            await conn.close()
        ns = settings.topic_namespace
        responder = Responder(settings, network.dsns["billing"],
                              network.identity(naming.box_principal(ns, "billing")),
                              "billing", "central", answers, serde,
                              outbox=network.boxes["billing"].outbox)
        answering = asyncio.create_task(responder.run())
        asking = Requester(settings, network.identity(naming.box_principal(ns, "sales")),
                           "sales", "central", serde, network.dsns["sales"],
                           outbox=network.boxes["sales"].outbox, label="sales/bench")
        try:
            await asking.start()
            say(f"warming up with {warmup} questions ...")
            for n in range(warmup):
                await asking.ask(BillingPeriodRequested, "billing", timeout=10,
                                 client_id=f"client-{n % 100}")
            asking.stats.latencies_ms.clear()
            say(f"asking {requests} questions at {rate:g}/s ...")
            before = time.process_time()
            started = time.perf_counter()
            outcomes = await _paced(asking, requests, rate, timeout)
            wall = time.perf_counter() - started
            cpu = time.process_time() - before
        finally:
            await asking.stop()
            responder.stop()
            await answering
    latencies = list(asking.stats.latencies_ms)
    return {
        "requests": requests, "rate_per_s": rate, "timeout_s": timeout,
        "rpc_p50_ms": round(percentile(latencies, 0.50), 2),
        "rpc_p90_ms": round(percentile(latencies, 0.90), 2),
        "rpc_p99_ms": round(percentile(latencies, 0.99), 2),
        "rpc_max_ms": round(max(latencies, default=0.0), 2),
        "rpc_mean_ms": round(statistics.fmean(latencies), 2) if latencies else 0.0,
        "rpc_answered": len(latencies), "rpc_timeouts": outcomes["timeouts"],
        "rpc_failed": outcomes["failed"], "rpc_late": asking.stats.late,
        "seconds": round(wall, 2), "achieved_per_s": round(requests / wall, 1),
        "process_cpu_seconds": round(cpu, 2),
        "relay_linger_ms": 0,
        "note": "one process runs both boxes' relays, the responder, the asker and the router",
    }


async def _paced(asking: Requester, requests: int, rate: float,
                 timeout: float) -> dict[str, int]:
    outcomes = {"timeouts": 0, "failed": 0}
    started = time.perf_counter()

    async def one(n: int) -> None:
        try:
            await asking.ask(BillingPeriodRequested, "billing", timeout=timeout,
                             client_id=f"client-{n % 100}")
        except RequestFailed as exc:
            outcomes["timeouts" if exc.retriable else "failed"] += 1

    tasks = []
    for n in range(requests):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    return outcomes
