"""The limit of the router benchmark: forwarding with librdkafka (confluent-kafka), nothing else.

What it measures: records per second of one process whose consumer (librdkafka's C client,
``consume`` in batches of up to 5,000) reads the ingress topics from the earliest offset and
whose producer (acks=all, idempotent, linger 5 ms) sends each record's unchanged key, value and
headers to the topics the router sends it to (the ``bench_to`` header:
processors/peers/contract.py). Fetching, decompressing, batching, compressing and the network
all run in librdkafka's C threads; Python only hands records from one client to the other.
After each batch the input offsets are committed asynchronously; the clock runs from the first
record consumed to the flush after the last one, when every output is acknowledged. No routing
table, no quarantine, no dead letters, no decisions: what one Python process can move, at best.

    python -m processors.peers.rdkafka_forward --bootstrap 127.0.0.1:9092 --source T \\
        --group rdkafka-1 --count 200000

Prints one JSON line, {"events": N, "seconds": S, "outputs": M}; exits 2 after --timeout.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer

from processors.peers.contract import destinations, give_up, librdkafka_login, parse_args, report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args((__doc__ or "").splitlines()[0], argv)
    login = librdkafka_login(args.bootstrap)
    consumer = Consumer({**login, "group.id": args.group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "enable.partition.eof": False})
    producer = Producer({**login, "acks": "all", "enable.idempotence": True, "linger.ms": 5,
                         "batch.size": 512 * 1024, "queue.buffering.max.messages": 1_000_000})
    failed: list[Any] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failed.append(error)

    done = outputs = 0
    started: float | None = None
    deadline = time.monotonic() + args.timeout
    consumer.subscribe(list(args.source))
    try:
        while done < args.count and time.monotonic() < deadline and not failed:
            messages = consumer.consume(num_messages=min(5000, args.count - done), timeout=0.2)
            if not messages:
                continue
            if started is None:
                started = time.monotonic()
            for message in messages:
                if message.error() is not None:
                    raise KafkaException(message.error())
                headers = message.headers()
                for topic in destinations(headers):
                    while True:
                        try:
                            producer.produce(topic, message.value(), message.key(),
                                             headers=headers, on_delivery=delivered)
                            break
                        except BufferError:
                            producer.poll(0.05)  # the local queue is full: let it drain
                    outputs += 1
                done += 1
            producer.poll(0)  # serve delivery reports
            consumer.commit(asynchronous=True)
        unsent = producer.flush(max(0.0, deadline - time.monotonic()))
        finished = time.monotonic()
    finally:
        consumer.close()
    if done < args.count or started is None or unsent or failed:
        return give_up("rdkafka_forward", f"{done} of {args.count} records forwarded, "
                       f"{unsent} outputs unacknowledged, {len(failed)} refused "
                       f"({failed[0] if failed else 'none'}) within {args.timeout:g} s")
    return report(done, finished - started, outputs)


if __name__ == "__main__":
    sys.exit(main())
