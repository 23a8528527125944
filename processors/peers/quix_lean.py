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

import sys
from collections.abc import Sequence
from typing import Any

from quixstreams.models.serializers import SerializationContext, Serializer

from processors.peers.contract import destinations, parse_args
from processors.peers.quix_app import QuixPeer, run_peer


class RowBytes(Serializer):  # type: ignore[misc]
    """A row is (topic name, value bytes): the value is written as it is."""

    def __call__(self, row: tuple[str, bytes], ctx: SerializationContext) -> bytes:
        return row[1]


class LeanQuixForwarder(QuixPeer):
    name = "quix_lean"

    def build(self, sdf: Any) -> None:
        """Two steps: one row per destination, then each row to its topic."""
        sdf = sdf.apply(self._copies, metadata=True, expand=True)
        sdf.to_topic(lambda row, _k, _t, _h: self.output(row[0], value_serializer=RowBytes()))

    def _copies(self, value: bytes, _key: Any, _timestamp: int, headers: Any
                ) -> list[tuple[str, bytes]]:
        self.consumed()
        return [(name, value) for name in destinations(headers)]


def main(argv: Sequence[str] | None = None) -> int:
    return run_peer(LeanQuixForwarder, parse_args((__doc__ or "").splitlines()[0], argv))


if __name__ == "__main__":
    sys.exit(main())
