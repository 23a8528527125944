"""The inbox's check of signed business documents, before anything is applied.

The network says which event types must be signed and publishes every box's public keys in
``<ns>.control.signing`` (made by ``topology apply``). An event of a signed type whose
signature is missing, does not match, or was made with a key its source did not hold at the
event's time is refused: it goes to the dead-letter topic with the reason, and nothing of it is
applied. A key the inbox does not know yet (a box rotated its key) makes it read the keys again,
at most every few seconds.
"""

from __future__ import annotations

import time

from bus import naming
from bus.errors import BadSignature, KafkaAccessDenied
from bus.kafka import KafkaAccess
from bus.log import get_logger
from bus.record import KafkaRecord
from bus.signing import KeyRing, PublicKey
from bus.topics import read_topic
from bus.topology.control import KEYS, SIGNED_TYPES, decode

log = get_logger(__name__)


class SignatureCheck:
    def __init__(self, kafka: KafkaAccess, namespace: str, *, refresh_every: float = 5.0
                 ) -> None:
        self.kafka = kafka
        self.topic = naming.control_topic(namespace, "signing")
        self.refresh_every = refresh_every
        self.types: frozenset[str] = frozenset()
        self.ring = KeyRing()
        self._loaded_at = float("-inf")

    async def load(self) -> None:
        """Read the signed types and the keys (nothing to check on a network without them)."""
        self._loaded_at = time.monotonic()
        try:
            records = await read_topic(self.kafka, self.topic)
        except KafkaAccessDenied as exc:
            # Failing closed: an inbox that cannot know which events must be signed applies
            # none unchecked.
            raise KafkaAccessDenied(
                f"{self.kafka.principal} may not read {self.topic}, so the inbox cannot check "
                "signatures and does not start",
                hint="apply the network's topology again (`boxbus topology apply FILE`): it "
                "grants every box read access to it") from exc
        current: dict[str, bytes | None] = {}
        for record in records:
            current[record.key.decode()] = record.value
        types = current.get(SIGNED_TYPES)
        self.types = frozenset(decode(types)["types"]) if types else frozenset()
        self.ring = KeyRing(PublicKey.from_record(decode(value))
                            for key, value in current.items()
                            if key.startswith(KEYS) and value is not None)

    async def refused(self, record: KafkaRecord, event_type: str) -> BadSignature | None:
        """Why ``record`` must not be applied, or None."""
        if event_type not in self.types:
            return None
        headers = dict(record.headers or ())
        verdict = self.ring.verify(headers, record.value)
        if not verdict.ok and time.monotonic() - self._loaded_at >= self.refresh_every:
            await self.load()  # a key published since (a new box, a rotated key)
            verdict = self.ring.verify(headers, record.value)
        return None if verdict.ok else BadSignature(verdict.reason)
