"""The aggregator as a benchmark runner, beside its faust peer
(:mod:`processors.peers.faust_aggregate`): the same command-line contract (one JSON line:
events, seconds from the first commit's fetch to the last commit, outputs = commits), each in a
process of its own, over the same region records.

    python -m processors.aggregator.bench_run --bootstrap 127.0.0.1:9092 --namespace wk1 \\
        --group wk1.alone --database-url postgresql://... --registry URL --count 458065
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

from bus.catalog import SchemaCatalog
from bus.kafka import KafkaAccess
from bus.log import configure_logging
from bus.registry import SchemaRegistry
from bus.serde import EventSerde
from bus.settings import Settings
from processors.aggregator.service import Aggregator
from processors.peers.contract import give_up, report


async def aggregate(args: argparse.Namespace) -> dict[str, Any]:
    # The identity comes from BOXBUS_KAFKA_* as the benchmark passes it.
    settings = Settings(topic_namespace=args.namespace, kafka_bootstrap_servers=args.bootstrap)
    serde = EventSerde(SchemaRegistry(args.registry), SchemaCatalog.load())
    aggregator = Aggregator(settings, KafkaAccess.from_settings(settings), args.database_url,
                            serde, group_id=args.group, max_records=args.max_records)
    stop = asyncio.Event()
    task = asyncio.create_task(aggregator.run(stop))
    started = time.perf_counter()
    async with asyncio.timeout(args.timeout):
        while aggregator.stats.consumed < args.count:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    stop.set()
    await task
    stats = aggregator.stats
    assert stats.first_fetch_at is not None and stats.last_commit_at is not None
    return {"events": stats.consumed, "outputs": stats.commits,
            "seconds": stats.last_commit_at - stats.first_fetch_at,
            "since_start_seconds": round(time.perf_counter() - started, 2)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the aggregator, timed over --count records")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--max-records", type=int, default=5000)
    parser.add_argument("--timeout", type=float, default=1200.0)
    args = parser.parse_args(argv)
    configure_logging(level="WARNING")  # stdout carries the one JSON line
    try:
        return report(**asyncio.run(aggregate(args)))
    except TimeoutError:
        return give_up("aggregator", f"not done within {args.timeout:g} s")


if __name__ == "__main__":
    sys.exit(main())
