"""The router's forwarding done with Quix Streams in its leanest form that keeps the same
guarantee, as a peer in the benchmark.

What it measures: records per second of a Quix Streams `Application` (librdkafka underneath)
that consumes the ingress topics from the earliest offset with one dataframe per topic of two
steps: `apply(expand=True)` turns each record into one row per topic the router sends it to
(the `bench_to` header: processors/peers/contract.py), and one `to_topic` step sends each row
to its topic, with the record's key and headers, its value unchanged (a serializer that writes
the row's bytes as they are). Everything goes through the application's own producer (acks=all),
so its checkpoints commit the input offsets only once their outputs are acknowledged: the
router's guarantee. (A step that produces with a producer of its own, outside the
checkpoints, is faster still and loses that guarantee: it is not the same work.) The
idiomatic pipeline (processors/peers/quix_forward.py) spends a `to_topic` and a `filter` step
per further output instead. The clock runs from the first record consumed to the end of the
final checkpoint, whose flush waits for every output's ack.

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
from quixstreams.models import Topic
from quixstreams.models.serializers import SerializationContext, Serializer

from processors.peers.contract import destinations, give_up, librdkafka_login, parse_args, report


class RowBytes(Serializer):  # type: ignore[misc]
    """A row is (topic name, value bytes): the value is written as it is."""

    def __call__(self, row: tuple[str, bytes], ctx: SerializationContext) -> bytes:
        return row[1]


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
            on_message_processed=self._processed,
        )
        self.topics: dict[str, Topic] = {}
        for source in args.source:
            topic = self.app.topic(source, key_deserializer="bytes", value_deserializer="bytes")
            sdf = self.app.dataframe(topic).apply(self._copies, metadata=True, expand=True)
            sdf.to_topic(self._topic)

    def _copies(self, value: bytes, _key: Any, _timestamp: int, headers: Any
                ) -> list[tuple[str, bytes]]:
        if self.started is None:
            self.started = time.monotonic()
        return [(name, value) for name in destinations(headers)]

    def _topic(self, row: tuple[str, bytes], _key: Any, _timestamp: int, _headers: Any
               ) -> Topic:
        topic = self.topics.get(row[0])
        if topic is None:
            topic = self.topics[row[0]] = self.app.topic(
                row[0], key_serializer="bytes", value_serializer=RowBytes())
        self.outputs += 1
        return topic

    def _processed(self, _topic: str, _partition: int, _offset: int) -> None:
        """Called once per input record after its outputs were produced: stop at exactly N
        (the app then leaves its loop before polling another record, and flushes)."""
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
            forwarder.app.run()
        finally:
            watchdog.cancel()
        finished = time.monotonic()
    if forwarder.done < forwarder.count or forwarder.started is None:
        return give_up("quix_lean", f"{forwarder.done} of {forwarder.count} records "
                       f"forwarded within {args.timeout:g} s")
    return report(forwarder.done, finished - forwarder.started, forwarder.outputs)


if __name__ == "__main__":
    sys.exit(main())
