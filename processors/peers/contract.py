"""What every forwarder of the router benchmark shares: its command line, how it logs in, how
it finds a record's target box, and the one JSON line it prints. Standard library only: the
Quix Streams peer runs with another interpreter (its own virtualenv)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence

TARGET_HEADER = "ce_targetbox"
REGION_HEADER = "ce_region"


def parse_args(description: str, argv: Sequence[str] | None = None,
               extra: Sequence[tuple[str, dict[str, object]]] = ()) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of a broker")
    parser.add_argument("--source", action="append", required=True,
                        help="a region topic to read (repeatable)")
    parser.add_argument("--inbox-prefix", required=True, help="inbox of box X: PREFIX + X.inbox")
    parser.add_argument("--region-prefix", required=True,
                        help="keep every record in the region topic PREFIX + its ce_region")
    parser.add_argument("--extra", action="append", default=[],
                        help="also send every record here (repeatable)")
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


def _header(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None,
            wanted: str) -> str | None:
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in pairs:
        if name == wanted and value:
            return value.decode()
    return None


def target_box(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None
               ) -> str | None:
    return _header(headers, TARGET_HEADER)


def region_topic(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None,
                 prefix: str) -> str:
    """The region topic a record is kept in, as the router keeps it."""
    return prefix + (_header(headers, REGION_HEADER) or "")


def report(events: int, seconds: float, outputs: int, **more: object) -> int:
    """Print the figures on stdout (the benchmark reads the last JSON line); exit status 0."""
    sys.stdout.write(json.dumps({"events": events, "seconds": round(seconds, 3),
                                 "outputs": outputs, **more}) + "\n")
    return 0


def give_up(name: str, why: str) -> int:
    """Say on stderr why there are no figures; exit status 2."""
    sys.stderr.write(f"{name}: {why}\n")
    return 2
