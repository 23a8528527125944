"""The router's forwarding done with Quix Streams, as a peer in the benchmark: the idiomatic
pipeline, every output a step of the dataframe.

What it measures: records per second of a Quix Streams `Application` (librdkafka underneath)
that consumes the ingress topics from the earliest offset and produces each record's key, value
and headers unchanged (raw bytes serializers) to the topics the router sends it to (the
`bench_to` header: processors/peers/contract.py), with acks=all. A record has one to
`--max-outputs` destinations, so each dataframe is a chain of `to_topic` steps, each choosing
its topic from the header, with a `filter` before each further step that lets through only the
records with that many destinations. Outputs go through the application's own producer, so its
checkpoints commit the input offsets only after their outputs are acknowledged. The clock runs
from the first record consumed to the end of the final checkpoint, whose flush waits for every
output's ack (it also commits the input offsets and closes the consumer, a few milliseconds).

    python -m processors.peers.quix_forward --bootstrap 127.0.0.1:9092 --source bench.in.a \\
        --group quix-1 --count 200000 --max-outputs 4

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

from processors.peers.contract import destinations, give_up, librdkafka_login, parse_args, report

OPTIONS = (("--max-outputs", {"type": int, "required": True,
                              "help": "the most destinations a record has"}),)


class QuixForwarder:
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
        for source in args.source:  # one dataframe per ingress topic, the same pipeline
            sdf = self.app.dataframe(self._raw_topic(source))
            sdf = sdf.update(self._consumed)
            for n in range(args.max_outputs):
                if n:
                    sdf = sdf.filter(lambda _v, _k, _t, headers, n=n:
                                     len(destinations(headers)) > n, metadata=True)
                sdf = sdf.to_topic(lambda _v, _k, _t, headers, n=n: self._nth(headers, n))

    def _raw_topic(self, name: str) -> Topic:
        """Keys and values stay the bytes they were: no decoding, no encoding."""
        return self.app.topic(name, key_serializer="bytes", value_serializer="bytes",
                              key_deserializer="bytes", value_deserializer="bytes")

    def _consumed(self, _value: bytes) -> None:
        if self.started is None:
            self.started = time.monotonic()

    def _nth(self, headers: Any, n: int) -> Topic:
        """The record's n-th destination; topics are looked up once."""
        name = destinations(headers)[n]
        topic = self.topics.get(name)
        if topic is None:
            topic = self.topics[name] = self._raw_topic(name)
        self.outputs += 1
        return topic

    def _processed(self, _topic: str, _partition: int, _offset: int) -> None:
        """Called once per input record after its outputs were produced: stop at exactly N
        (the app then leaves its loop before polling another record, and flushes)."""
        self.done += 1
        if self.done == self.count:
            self.app.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args((__doc__ or "").splitlines()[0], argv, OPTIONS)
    with tempfile.TemporaryDirectory(prefix="quix-forward-") as state_dir:
        forwarder = QuixForwarder(args, state_dir)
        watchdog = threading.Timer(args.timeout, forwarder.app.stop)
        watchdog.daemon = True
        watchdog.start()
        try:
            forwarder.app.run()
        finally:
            watchdog.cancel()
        finished = time.monotonic()
    if forwarder.done < forwarder.count or forwarder.started is None:
        return give_up("quix_forward", f"{forwarder.done} of {forwarder.count} records "
                       f"forwarded within {args.timeout:g} s")
    return report(forwarder.done, finished - forwarder.started, forwarder.outputs)


if __name__ == "__main__":
    sys.exit(main())
