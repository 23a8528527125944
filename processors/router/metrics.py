"""Prometheus metrics of a router instance (``boxbus router run --metrics-port N``): what it
consumed, delivered, quarantined, dead-lettered and dropped as echoes, the commits a rebalance
refused, and how many boxes and subscriptions its routing table holds."""

from __future__ import annotations

import asyncio

from prometheus_client import Counter, Gauge

from bus.metrics import MetricsServer, Total
from processors.router.service import Router

COUNTERS = {
    "consumed": "Events read from the boxes' ingress topics.",
    "forwarded": "Records delivered to inbox and mail topics (one event to three boxes: 3).",
    "kept": "Accepted events copied to their region topic (their source proven).",
    "quarantined": "Events set aside in a quarantine topic with the reason.",
    "dead_lettered": "Records without a readable envelope, sent to the dead-letter topic.",
    "echoes_dropped": "Deliveries left out by the loop guard.",
    "commit_failures": "Commits refused after a rebalance (the new owner routes again).",
    "failed_rounds": "Rounds whose outputs could not be delivered (routed again later).",
}


async def watch_router(router: Router, server: MetricsServer, interval: float = 2.0) -> None:
    """Refresh the router's metrics every ``interval`` seconds until cancelled."""
    labels = {"group": router.group_id}
    totals = {name: Total(Counter(f"boxbus_router_{name}", text, ["group"],
                                  registry=server.registry).labels(**labels))
              for name, text in COUNTERS.items()}
    table = Gauge("boxbus_router_table_entries", "Entries of the routing table, by kind.",
                  ["group", "kind"], registry=server.registry)
    while True:
        stats = router.stats.as_dict()
        for name, total in totals.items():
            total.update(stats[name])
        for kind, count in router.table.describe().items():
            table.labels(group=router.group_id, kind=kind).set(count)
        await asyncio.sleep(interval)
