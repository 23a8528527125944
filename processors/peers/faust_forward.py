"""The router's forwarding done with faust-streaming, as a peer in the benchmark.

What it measures: records per second of a faust agent (aiokafka underneath) that consumes the
ingress topics from the earliest offset and sends each record's key, value and headers
unchanged (raw serializers) to the topics the router sends it to (the `bench_to` header:
processors/peers/contract.py), with acks=all (`producer_acks=-1`). By default the agent takes
one event at a time (`stream.events()`); `--batch N` takes up to N events at a time
(`stream.take_events(N, within=--within)`, the event form of `stream.take`, which keeps the
headers). The clock runs from the first record consumed to the ack of the last output.

    python -m processors.peers.faust_forward --bootstrap 127.0.0.1:9092 --source bench.in.a \\
        --group faust-1 --count 200000 [--batch 500]

Prints one JSON line, {"events": N, "seconds": S, "outputs": M}, and exits 0; exits 2 when the
N records are not forwarded (and acknowledged) within --timeout seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import faust
from faust.types import EventT, TopicT

from processors.peers.contract import (
    destinations,
    give_up,
    librdkafka_login,
    parse_args,
    report,
)

BATCH_OPTIONS = (
    ("--batch", {"type": int, "default": 0,
                 "help": "take up to N events at a time (default: one at a time)"}),
    ("--within", {"type": float, "default": 0.1,
                  "help": "with --batch: hand over a partial batch after S seconds"}),
)

RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                       "key_serializer": "raw", "value_serializer": "raw"}


class FaustForwarder:
    def __init__(self, args: argparse.Namespace, datadir: str) -> None:
        self.count = args.count
        self.topics: dict[str, TopicT] = {}
        self.batch, self.within = args.batch, args.within
        self.done = self.sent = self.acked = 0
        self.started: float | None = None
        self.finished: float | None = None
        self.error: BaseException | None = None
        login = librdkafka_login(args.bootstrap)
        credentials = (faust.SASLCredentials(
            username=login["sasl.username"], password=login["sasl.password"],
            mechanism=login["sasl.mechanism"]) if "sasl.username" in login else None)
        self.app = faust.App(
            args.group, broker=f"kafka://{args.bootstrap}", broker_credentials=credentials,
            store="memory://", datadir=datadir,
            web_enabled=False, consumer_auto_offset_reset="earliest", producer_acks=-1,
            topic_replication_factor=1,
        )
        self.app.agent(self.app.topic(*args.source, **RAW), name="forward")(self.agent)
        # What the worker says goes to stderr: stdout carries the one JSON line. No terminal
        # spinner: with it the worker keeps the root logger at DEBUG for the whole run (the
        # spinner turns on every record), so every debug call of aiokafka and faust would
        # build a log record.
        self.worker = faust.Worker(self.app, loglevel="warning", quiet=True,
                                   redirect_stdouts=False, stdout=sys.stderr)
        self.worker.spinner = None

    async def agent(self, stream: Any) -> AsyncIterator[None]:
        if self.batch > 0:
            async for events in stream.take_events(self.batch, within=self.within):
                for event in events:
                    await self.forward(event)
                yield None
        else:
            async for event in stream.events():
                await self.forward(event)
                yield None

    async def forward(self, event: EventT[Any]) -> None:
        if self.done >= self.count:
            return  # past N: not forwarded, so the figures stay exact
        if self.started is None:
            self.started = time.monotonic()
        headers = event.message.headers
        for topic in map(self.topic, destinations(headers)):
            ack = asyncio.ensure_future(
                await topic.send(key=event.key, value=event.value, headers=headers))
            self.sent += 1
            ack.add_done_callback(self.on_ack)
        self.done += 1
        if self.done == self.count:
            self.check_finished()

    def topic(self, name: str) -> TopicT:
        """An output topic, made once."""
        topic = self.topics.get(name)
        if topic is None:
            topic = self.topics[name] = self.app.topic(name, **RAW)
        return topic

    def on_ack(self, ack: asyncio.Future[Any]) -> None:
        error = asyncio.CancelledError() if ack.cancelled() else ack.exception()
        if error is not None:  # a lost output: give up now, no figures
            self.error = self.error or error
            self.stop()
            return
        self.acked += 1
        self.check_finished()

    def check_finished(self) -> None:
        if self.done == self.count and self.acked == self.sent and self.finished is None:
            self.finished = time.monotonic()
            self.stop()

    def stop(self) -> None:
        """Stop the worker from a task of its own: the agent must not await its own stop."""
        if not self.worker.should_stop:
            self.worker.loop.create_task(self.worker.stop())

    def run(self, timeout: float) -> None:
        self.worker.loop.call_later(timeout, self.stop)
        try:
            self.worker.execute_from_commandline()
        except SystemExit as exc:  # how the worker says it stopped cleanly
            if exc.code not in (None, 0):
                raise


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args((__doc__ or "").splitlines()[0], argv, BATCH_OPTIONS)
    with tempfile.TemporaryDirectory(prefix="faust-forward-") as datadir:
        forwarder = FaustForwarder(args, datadir)
        forwarder.run(args.timeout)
    if forwarder.finished is None or forwarder.started is None:
        why = f": {forwarder.error!r}" if forwarder.error else ""
        return give_up("faust_forward", f"{forwarder.done} of {forwarder.count} records "
                       f"forwarded, {forwarder.acked} of {forwarder.sent} outputs acknowledged "
                       f"within {args.timeout:g} s{why}")
    return report(forwarder.done, forwarder.finished - forwarder.started, forwarder.sent)

if __name__ == "__main__":
    sys.exit(main())
