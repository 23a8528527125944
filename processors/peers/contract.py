"""What every forwarder of the router benchmark shares: its command line, how it logs in, how
it finds a record's target box, and the one JSON line it prints. Standard library only: the
Quix Streams peer runs with another interpreter (its own virtualenv)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

# Where the router sends each record of the benchmark, as topic names joined by commas: the
# benchmark asks the router's own routing table once, before any contender runs, and writes
# the answer here. Every peer sends each record to exactly these topics, so every contender
# does the same outputs per event as the router (its decisions are what the peers skip).
DESTINATIONS_HEADER = "bench_to"


def parse_args(description: str, argv: Sequence[str] | None = None,
               extra: Sequence[tuple[str, dict[str, object]]] = ()) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of a broker")
    parser.add_argument("--source", action="append", required=True,
                        help="an ingress topic to read (repeatable)")
    parser.add_argument("--group", required=True, help="consumer group id")
    parser.add_argument("--count", type=int, required=True, help="stop after N input records")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after S seconds")
    for flag, options in extra:
        parser.add_argument(flag, **options)  # type: ignore[arg-type]
    return parser.parse_args(argv)


def librdkafka_login(bootstrap: str) -> dict[str, str]:
    """How to connect, as librdkafka keys: the brokers, and the login the benchmark passes in
    BOXBUS_KAFKA_* (what bus.kafka.KafkaAccess.env writes; none on a cluster without SASL)."""
    config = {"bootstrap.servers": bootstrap}
    protocol = os.environ.get("BOXBUS_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    config["security.protocol"] = protocol.lower()
    if protocol.startswith("SASL"):
        config["sasl.mechanism"] = os.environ.get("BOXBUS_KAFKA_SASL_MECHANISM", "PLAIN")
        config["sasl.username"] = os.environ.get("BOXBUS_KAFKA_SASL_USERNAME", "")
        config["sasl.password"] = os.environ.get("BOXBUS_KAFKA_SASL_PASSWORD", "")
    return config


Headers = Iterable[tuple[str, "bytes | str | None"]] | Mapping[str, "bytes | str | None"] | None


def destinations(headers: Headers) -> list[str]:
    """The topics a record goes to (DESTINATIONS_HEADER); none if it has no such header."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in pairs:
        if name == DESTINATIONS_HEADER and value:
            return (value.decode() if isinstance(value, bytes) else value).split(",")
    return []


def report(events: int, seconds: float, outputs: int, **more: object) -> int:
    """Print the figures on stdout (the benchmark reads the last JSON line); exit status 0."""
    sys.stdout.write(json.dumps({"events": events, "seconds": round(seconds, 3),
                                 "outputs": outputs, **more}) + "\n")
    return 0


def give_up(name: str, why: str) -> int:
    """Say on stderr why there are no figures; exit status 2."""
    sys.stderr.write(f"{name}: {why}\n")
    return 2


def run_bounded(run: Callable[[], None], stop: Callable[[], None], timeout: float) -> float:
    """Run a blocking application loop, stopped by ``stop`` from a watchdog after ``timeout``
    seconds if it has not stopped by itself; the monotonic time it ended."""
    watchdog = threading.Timer(timeout, stop)
    watchdog.daemon = True
    watchdog.start()
    try:
        run()
    finally:
        watchdog.cancel()
    return time.monotonic()
