"""The router's forwarding done with Quix Streams, as a peer in the benchmark.

What it measures: records per second of a Quix Streams `Application` (librdkafka underneath)
that consumes the region topics from the earliest offset, reads the `ce_targetbox` header and
produces each record's key, value and headers unchanged (raw bytes serializers) to that box's
inbox topic and to every `--extra` topic, with acks=all. The clock runs from the first record
consumed to the end of the final checkpoint, whose flush waits for every output's ack (it also
commits the input offsets and closes the consumer, a few milliseconds).

    python -m processors.peers.quix_forward --bootstrap 127.0.0.1:9092 --source bench.region.a \\
        --inbox-prefix bench.box. --extra bench.audit --group quix-1 --count 200000

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

from processors.peers.contract import (
    give_up,
    librdkafka_login,
    parse_args,
    region_topic,
    report,
    target_box,
)


class QuixForwarder:
    def __init__(self, args: argparse.Namespace, state_dir: str) -> None:
        self.count = args.count
        self.inbox_prefix = args.inbox_prefix
        self.region_prefix = args.region_prefix
        self.done = 0
        self.to_inboxes = 0
        self.started: float | None = None
        self.app = Application(
            broker_address=ConnectionConfig.from_librdkafka_dict(
                librdkafka_login(args.bootstrap)),
            consumer_group=args.group,
            auto_offset_reset="earliest", auto_create_topics=False, use_changelog_topics=False,
            producer_extra_config={"acks": "all"}, state_dir=state_dir, loglevel="WARNING",
            on_message_processed=self._processed,
        )
        self.inboxes: dict[str, Topic] = {}
        self.regions: dict[str, Topic] = {}
        self.extras = [self._raw_topic(name) for name in args.extra]
        for source in args.source:  # one dataframe per region topic, the same pipeline
            sdf = self.app.dataframe(self._raw_topic(source))
            sdf = sdf.update(self._consumed)
            sdf = sdf.to_topic(self._region)
            for extra in self.extras:
                sdf = sdf.to_topic(extra)
            sdf = sdf.filter(lambda _v, _k, _t, headers: target_box(headers) is not None,
                             metadata=True)
            sdf.to_topic(self._inbox)

    def _raw_topic(self, name: str) -> Topic:
        """Keys and values stay the bytes they were: no decoding, no encoding."""
        return self.app.topic(name, key_serializer="bytes", value_serializer="bytes",
                              key_deserializer="bytes", value_deserializer="bytes")

    def _consumed(self, _value: bytes) -> None:
        if self.started is None:
            self.started = time.monotonic()

    def _region(self, _value: Any, _key: Any, _timestamp: int, headers: Any) -> Topic:
        """The region topic the record is kept in, as the router keeps it."""
        name = region_topic(headers, self.region_prefix)
        topic = self.regions.get(name)
        if topic is None:
            topic = self.regions[name] = self._raw_topic(name)
        return topic

    def _inbox(self, _value: Any, _key: Any, _timestamp: int, headers: Any) -> Topic:
        """The destination of one record, from its header; topics are looked up once."""
        box = target_box(headers) or ""  # the filter before let only records with one through
        topic = self.inboxes.get(box)
        if topic is None:
            topic = self.inboxes[box] = self._raw_topic(f"{self.inbox_prefix}{box}.inbox")
        self.to_inboxes += 1
        return topic

    def _processed(self, _topic: str, _partition: int, _offset: int) -> None:
        """Called once per input record after its outputs were produced: stop at exactly N
        (the app then leaves its loop before polling another record, and flushes)."""
        self.done += 1
        if self.done == self.count:
            self.app.stop()

    @property
    def outputs(self) -> int:
        return self.done * (1 + len(self.extras)) + self.to_inboxes


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args((__doc__ or "").splitlines()[0], argv)
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
