"""The baseline of the router benchmark: forwarding with plain aiokafka, nothing else.

What it measures: records per second of one asyncio process that consumes the source topics
from the earliest offset (``getmany``) and sends each record's unchanged key, value and headers
to the topics the router sends it to (the ``bench_to`` header: processors/peers/contract.py),
appended to one ``BatchBuilder`` per output partition (crc32 of the key, as the router does)
and sent with ``send_batch``, acks=all; then it commits the round's input offsets. No routing
table, no quarantine, no dead letters: the floor the router is held to.

    python -m processors.peers.raw_forward --bootstrap 127.0.0.1:9092 --source T [--source T2]
        --group raw-1 --count 200000

Prints one JSON line, {"events": N, "seconds": S, "outputs": M}; exits 2 after --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import zlib
from collections.abc import Sequence
from typing import Any

from aiokafka.structs import OffsetAndMetadata

from bus.kafka import KafkaAccess
from bus.settings import Settings
from processors.peers.contract import destinations, give_up, parse_args, report


async def forward(args: argparse.Namespace) -> dict[str, Any]:
    # Plain aiokafka clients, connected as the benchmark passes it (BOXBUS_KAFKA_*).
    kafka = KafkaAccess.from_settings(Settings(), args.bootstrap)
    consumer = kafka.consumer(*args.source, group_id=args.group, enable_auto_commit=False,
                              auto_offset_reset="earliest",
                              max_partition_fetch_bytes=4 * 1024 * 1024)
    producer = kafka.producer(acks="all", enable_idempotence=True, max_batch_size=512 * 1024)
    await producer.start()
    await consumer.start()
    partitions: dict[str, int] = {}
    done = outputs = 0
    started: float | None = None
    try:
        async with asyncio.timeout(args.timeout):
            while done < args.count:
                fetched = await consumer.getmany(timeout_ms=200, max_records=5000)
                if not fetched:
                    continue
                if started is None:
                    started = time.perf_counter()
                batches: dict[tuple[str, int], Any] = {}
                futures = []
                for records in fetched.values():
                    for record in records:
                        headers = list(record.headers)
                        hashed = zlib.crc32(record.key)
                        for topic in destinations(headers):
                            if topic not in partitions:
                                partitions[topic] = len(await producer.partitions_for(topic))
                            tp = (topic, hashed % partitions[topic])
                            batch = batches.get(tp) or producer.create_batch()
                            batches[tp] = batch
                            if batch.append(key=record.key, value=record.value,
                                            timestamp=record.timestamp, headers=headers) is None:
                                futures.append(await producer.send_batch(batch, tp[0],
                                                                         partition=tp[1]))
                                batch = batches[tp] = producer.create_batch()
                                batch.append(key=record.key, value=record.value,
                                             timestamp=record.timestamp, headers=headers)
                            outputs += 1
                        done += 1
                for (topic, partition), batch in batches.items():
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                await asyncio.gather(*futures)
                await consumer.commit({tp: OffsetAndMetadata(rs[-1].offset + 1, "")
                                       for tp, rs in fetched.items()})
    finally:
        await consumer.stop()
        await producer.stop()
    return {"events": done, "seconds": time.perf_counter() - (started or time.perf_counter()),
            "outputs": outputs}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args((__doc__ or "").splitlines()[0], argv)
    try:
        return report(**asyncio.run(forward(args)))
    except TimeoutError:
        return give_up("raw_forward", f"not done within {args.timeout:g} s")


if __name__ == "__main__":
    sys.exit(main())
