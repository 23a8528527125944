"""The router as a benchmark runner: the same command-line contract as the peers in
:mod:`processors.peers` (one JSON line: events, seconds from the first record fetched to the
last round's commit, outputs), so that the benchmark runs every contender the same way, each in
a process of its own.

    python -m processors.router.bench_run --bootstrap 127.0.0.1:9092 --namespace bench1 \\
        --group router-1 --count 200000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

from bus.kafka import KafkaAccess
from bus.log import configure_logging
from bus.settings import Settings
from processors.peers.contract import give_up, report
from processors.router.service import Router


async def route(args: argparse.Namespace) -> dict[str, Any]:
    # The identity comes from BOXBUS_KAFKA_* as the benchmark passes it.
    settings = Settings(topic_namespace=args.namespace, kafka_bootstrap_servers=args.bootstrap)
    router = Router(settings, KafkaAccess.from_settings(settings), group_id=args.group,
                    max_records=args.max_records)
    began = time.perf_counter()
    await router.start()
    try:
        async with asyncio.timeout(args.timeout):
            while router.stats.consumed < args.count:
                await router.round()
        ended = time.perf_counter()
    finally:
        await router.stop()
    # Outputs as the peers count them: each record kept in its region topic, and each copy
    # to a recipient.
    return {"events": router.stats.consumed,
            "outputs": router.stats.forwarded + router.stats.kept,
            "seconds": ended - (router.first_fetch_at or ended),
            "quarantined": router.stats.quarantined,
            # What a bigger network costs before the first record: the control topics read,
            # the subscription's metadata, the group joined (boxbus bench scale).
            "start_seconds": round((router.first_fetch_at or ended) - began, 3),
            "ingress_topics": len(router.subscribed_topics)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the router, timed over --count records")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--max-records", type=int, default=5000)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    configure_logging(level="WARNING")  # stdout carries the one JSON line
    try:
        return report(**asyncio.run(route(args)))
    except TimeoutError:
        return give_up("router", f"not done within {args.timeout:g} s")


if __name__ == "__main__":
    sys.exit(main())
