"""The router's forwarding done with Quix Streams in its leanest form, as a peer in the
benchmark: one step per record, producing directly.

What it measures: records per second of a Quix Streams `Application` (librdkafka underneath)
that consumes the ingress topics from the earliest offset with one dataframe per topic, whose
only step (`update`, with the record's metadata) produces the record's key, value and headers
unchanged to each topic the router sends it to (the `bench_to` header:
processors/peers/contract.py) with a producer of the application's (`get_producer`, made once;
acks=all, idempotent), and counts it. It skips the work of the idiomatic pipeline
(processors/peers/quix_forward.py: a `to_topic` step per output, a `filter` per further
output), and with it a guarantee: the application's checkpoints do not wait for this
producer, so they may commit input offsets whose outputs are not acknowledged yet (a crash
then loses them). The clock runs from the first record consumed to the flush of that
producer after the last record, when every output is acknowledged.

    python -m processors.peers.quix_lean --bootstrap 127.0.0.1:9092 --source bench.in.a \\
        --group quix-lean-1 --count 200000

Prints one JSON line, {"events": N, "seconds": S, "outputs": M}, and exits 0; exits 2 when the
N records are not forwarded within --timeout seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

from quixstreams import Application
from quixstreams.kafka.configuration import ConnectionConfig

from processors.peers.contract import destinations, give_up, librdkafka_login, parse_args, report


class LeanQuixForwarder:
    def __init__(self, args: argparse.Namespace, state_dir: str) -> None:
        self.count = args.count
        self.done = self.outputs = 0
        self.started: float | None = None
        self.app = Application(
            broker_address=ConnectionConfig.from_librdkafka_dict(
                librdkafka_login(args.bootstrap)),
            consumer_group=args.group,
            auto_offset_reset="earliest", auto_create_topics=False, use_changelog_topics=False,
            producer_extra_config={"acks": "all"}, state_dir=state_dir, loglevel="WARNING",
        )
        self.producer = self.app.get_producer()
        for source in args.source:
            topic = self.app.topic(source, key_deserializer="bytes", value_deserializer="bytes")
            self.app.dataframe(topic).update(self._forward, metadata=True)

    def _forward(self, value: bytes, key: bytes, _timestamp: int, headers: Any) -> None:
        if self.done >= self.count:
            return  # past N: not forwarded, so the figures stay exact
        if self.started is None:
            self.started = time.monotonic()
        for name in destinations(headers):
            self.producer.produce(topic=name, value=value, key=key, headers=headers)
            self.outputs += 1
        self.done += 1
        if self.done == self.count:
            self.app.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args((__doc__ or "").splitlines()[0], argv)
    with tempfile.TemporaryDirectory(prefix="quix-lean-") as state_dir:
        forwarder = LeanQuixForwarder(args, state_dir)
        watchdog = threading.Timer(args.timeout, forwarder.app.stop)
        watchdog.daemon = True
        watchdog.start()
        try:
            with forwarder.producer:
                forwarder.app.run()
                unsent = forwarder.producer.flush(timeout=args.timeout)
        finally:
            watchdog.cancel()
        finished = time.monotonic()
    if forwarder.done < forwarder.count or forwarder.started is None or unsent:
        return give_up("quix_lean", f"{forwarder.done} of {forwarder.count} records forwarded "
                       f"({unsent} outputs unacknowledged) within {args.timeout:g} s")
    return report(forwarder.done, finished - forwarder.started, forwarder.outputs)


if __name__ == "__main__":
    sys.exit(main())
