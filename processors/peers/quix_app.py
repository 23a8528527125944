"""What both Quix Streams peers share (processors/peers/quix_forward.py, quix_lean.py): the
application, made as the benchmark connects, counting records up to N, and the run."""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

from quixstreams import Application
from quixstreams.kafka.configuration import ConnectionConfig
from quixstreams.models import Topic

from processors.peers.contract import give_up, librdkafka_login, report, run_bounded


class QuixPeer:
    """A Quix Streams application reading the benchmark's sources; a subclass adds its
    dataframes in ``build``."""

    name = "quix"

    def __init__(self, args: argparse.Namespace, state_dir: str) -> None:
        self.args = args
        self.count = args.count
        self.done = self.outputs = 0
        self.started: float | None = None
        self.topics: dict[str, Topic] = {}
        self.app = Application(
            broker_address=ConnectionConfig.from_librdkafka_dict(
                librdkafka_login(args.bootstrap)),
            consumer_group=args.group,
            auto_offset_reset="earliest", auto_create_topics=False, use_changelog_topics=False,
            producer_extra_config={"acks": "all"}, state_dir=state_dir, loglevel="WARNING",
            on_message_processed=self._processed,
        )
        for source in args.source:
            self.build(self.app.dataframe(self.app.topic(
                source, key_deserializer="bytes", value_deserializer="bytes")))

    def build(self, sdf: Any) -> None:
        raise NotImplementedError

    def consumed(self) -> None:
        if self.started is None:
            self.started = time.monotonic()

    def output(self, name: str, **serializers: Any) -> Topic:
        """An output topic, made once; each call counts one output."""
        topic = self.topics.get(name)
        if topic is None:
            topic = self.topics[name] = self.app.topic(
                name, **({"key_serializer": "bytes", "value_serializer": "bytes"}
                         | serializers))
        self.outputs += 1
        return topic

    def _processed(self, _topic: str, _partition: int, _offset: int) -> None:
        """Called once per input record after its outputs were produced: stop at exactly N
        (the app then leaves its loop before polling another record, and flushes)."""
        self.done += 1
        if self.done == self.count:
            self.app.stop()


def run_peer(kind: type[QuixPeer], args: argparse.Namespace) -> int:
    """Run the peer over N records; the one JSON line, or why there is none."""
    with tempfile.TemporaryDirectory(prefix=f"{kind.name}-") as state_dir:
        peer = kind(args, state_dir)
        finished = run_bounded(peer.app.run, peer.app.stop, args.timeout)
    if peer.done < peer.count or peer.started is None:
        return give_up(kind.name, f"{peer.done} of {peer.count} records forwarded within "
                       f"{args.timeout:g} s")
    return report(peer.done, finished - peer.started, peer.outputs)
