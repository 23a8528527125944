"""The aggregator's work done with faust-streaming tables, as the peer of ``boxbus bench week``
(the measurement behind building the aggregator on aiokafka and PostgreSQL, not on faust).

A faust agent reads the region topics from the earliest offset, one event at a time (faust
writes a table row to the changelog partition of the event being processed, which a batch from
``stream.take_events`` does not have), decodes each record with boxbus's serde, folds it with
the aggregator's own pure fold (:class:`processors.aggregator.fold.Fold`), and keeps every
aggregate and the per-order state in faust tables (in-memory stores backed by changelog
topics), with ``processing_guarantee="exactly_once"`` (Kafka transactions for the changelog
writes and the consumed offsets). Faust keeps a table's rows in the partition of the event that
wrote them, so aggregate keys carry the source partition: each partition owns its partial sums,
and a reader adds them up, the way faust's docs ask for without a repartition.

    python -m processors.peers.faust_aggregate --bootstrap 127.0.0.1:9092 \\
        --source ns.region.north ... --group faust-agg-1 --count 458065 \\
        --registry http://127.0.0.1:8081/apis/ccompat/v7

Prints one JSON line, {"events": N, "seconds": S, "outputs": M} (M: table updates), exits 0;
exits 2 when the N records are not aggregated within --timeout seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Any

import faust

from bus.catalog import SchemaCatalog
from bus.errors import BadEvent
from bus.registry import SchemaRegistry
from bus.serde import EventSerde
from processors.aggregator.fold import LATE, Fold, OrderState, SalesKey
from processors.peers.contract import give_up, librdkafka_login, report

RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                       "key_serializer": "raw", "value_serializer": "raw"}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", action="append", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=1200.0)
    return parser.parse_args(argv)


class FaustAggregator:
    def __init__(self, args: argparse.Namespace, datadir: str) -> None:
        self.args = args
        self.done = self.updates = 0
        self.started: float | None = None
        self.finished: float | None = None
        self.serde = EventSerde(SchemaRegistry(args.registry), SchemaCatalog.load())
        login = librdkafka_login(args.bootstrap)
        credentials = (faust.SASLCredentials(
            username=login["sasl.username"], password=login["sasl.password"],
            mechanism=login["sasl.mechanism"]) if "sasl.username" in login else None)
        self.app = faust.App(
            args.group, broker=f"kafka://{args.bootstrap}", broker_credentials=credentials,
            store="memory://", datadir=datadir, web_enabled=False,
            consumer_auto_offset_reset="earliest", producer_acks=-1,
            processing_guarantee="exactly_once", topic_replication_factor=1,
            topic_partitions=args.partitions)
        # One table per kind of state; values are JSON-able.
        self.aggregates = self.app.Table("aggregates", partitions=args.partitions)
        self.orders = self.app.Table("orders", partitions=args.partitions)
        self.watermarks = self.app.Table("watermarks", partitions=args.partitions)
        self.app.agent(self.app.topic(*args.source, **RAW), name="aggregate")(self.agent)
        self.worker = faust.Worker(self.app, loglevel="warning", quiet=True,
                                   redirect_stdouts=False, stdout=sys.stderr)
        self.worker.spinner = None

    async def agent(self, stream: Any) -> AsyncIterator[None]:
        # One event at a time: faust writes a table row to the changelog partition of the
        # event being processed, which a batch (stream.take_events) does not have.
        try:
            async for event in stream.events():
                await self.one(event)
                yield None
        except Exception:
            self.stop()  # no figures: the run gives up at once instead of at its timeout
            raise

    async def one(self, event: Any) -> None:
        if self.started is None:
            self.started = time.monotonic()
        await self.fold(event.message.partition, [event])
        self.done += 1
        if self.done >= self.args.count and self.finished is None:
            self.finished = time.monotonic()
            self.stop()

    async def fold(self, partition: int, batch: list[Any]) -> None:
        decoded = []
        for event in batch:
            try:
                decoded.append((event, await self.serde.decode(event.value)))
            except BadEvent:
                continue
        ids: set[str] = {i for _, e in decoded
                         if isinstance(i := getattr(e, "order_id", None), str)}
        known = {i: self.orders.get(f"{partition}|{i}") for i in ids}
        orders = {i: _state(v) for i, v in known.items() if v and v[0] == "s"}
        purchases = {i: v[1] for i, v in known.items() if v and v[0] == "p"}
        folding = Fold(orders, purchases)
        for event, body in decoded:
            mark_key = f"{event.message.topic}|{partition}|{body.meta.source_box}"
            mark = self.watermarks.get(mark_key)
            occurred = body.meta.occurred_at.timestamp()
            folding.add(body, late=mark is not None and mark - occurred >= LATE.total_seconds())
            if mark is None or occurred > mark:
                self.watermarks[mark_key] = occurred
        changes = folding.changes
        deltas: list[tuple[str, dict[Any, Any]]] = [
            ("sales", changes.sales), ("products", changes.products), ("counts", changes.counts)]
        for table, rows in deltas:
            for key, delta in rows.items():
                slot = f"{partition}|{table}|{_key(key)}"
                current = self.aggregates.get(slot) or {}
                values = asdict(delta)
                self.aggregates[slot] = {k: _plain(_num(current.get(k, 0)) + _num(v))
                                         for k, v in values.items()}
                self.updates += 1
        facts: list[tuple[str, dict[Any, Any]]] = [
            ("stock", changes.stock), ("invoices", changes.invoices),
            ("payments", changes.payments), ("reports", changes.reports),
            ("purchases", changes.purchases), ("shipments", changes.shipments)]
        for table, rows in facts:
            for key, fact in rows.items():
                self.aggregates[f"{partition}|{table}|{_key(key)}"] = json.loads(
                    json.dumps(asdict(fact), default=str))
                self.updates += 1
        for order_id, state in changes.orders.items():
            self.orders[f"{partition}|{order_id}"] = ["s", json.loads(json.dumps(
                asdict(state), default=str))]
            self.updates += 1
        for order_id, purchase in changes.purchases.items():
            if purchase.revision is not None:
                self.orders[f"{partition}|{order_id}"] = ["p", purchase.revision]

    def stop(self) -> None:
        if not self.worker.should_stop:
            self.worker.loop.create_task(self.worker.stop())

    def run(self) -> None:
        self.worker.loop.call_later(self.args.timeout, self.stop)
        try:
            self.worker.execute_from_commandline()
        except SystemExit as exc:
            if exc.code not in (None, 0):
                raise


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    return "|".join(str(v) for v in asdict(key).values())


def _num(value: Any) -> Any:
    return Decimal(value) if isinstance(value, str) else value


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def _state(value: Any) -> OrderState:
    data = value[1]
    key = data["key"]
    return OrderState(
        SalesKey(datetime.fromisoformat(key["bucket"]), key["region"], key["box"],
                 key["store"], key["currency"]),
        int(data["revenue_minor"]), Decimal(data["units"]),
        {sku: (int(c), Decimal(u), int(n)) for sku, (c, u, n) in data["articles"].items()},
        bool(data["cancelled"]))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="faust-aggregate-") as datadir:
        peer = FaustAggregator(args, datadir)
        peer.run()
    if peer.finished is None or peer.started is None:
        return give_up("faust_aggregate", f"{peer.done} of {args.count} records aggregated "
                       f"within {args.timeout:g} s")
    return report(peer.done, peer.finished - peer.started, peer.updates)


if __name__ == "__main__":
    asyncio.set_event_loop(asyncio.new_event_loop())
    sys.exit(main())
