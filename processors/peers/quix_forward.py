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

import sys
from collections.abc import Sequence
from typing import Any

from processors.peers.contract import destinations, parse_args
from processors.peers.quix_app import QuixPeer, run_peer

OPTIONS = (("--max-outputs", {"type": int, "required": True,
                              "help": "the most destinations a record has"}),)


class QuixForwarder(QuixPeer):
    name = "quix_forward"

    def build(self, sdf: Any) -> None:
        """The same pipeline on every ingress topic: a to_topic step per possible output."""
        sdf = sdf.update(lambda _value: self.consumed())
        for n in range(self.args.max_outputs):
            if n:
                sdf = sdf.filter(lambda _v, _k, _t, headers, n=n:
                                 len(destinations(headers)) > n, metadata=True)
            sdf = sdf.to_topic(lambda _v, _k, _t, headers, n=n:
                               self.output(destinations(headers)[n]))


def main(argv: Sequence[str] | None = None) -> int:
    return run_peer(QuixForwarder, parse_args((__doc__ or "").splitlines()[0], argv, OPTIONS))


if __name__ == "__main__":
    sys.exit(main())
