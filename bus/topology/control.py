"""The compacted control topics: ``<ns>.control.boxes``, ``.relationships``,
``.subscriptions`` and ``.signing``. Each record is one entry of the topology, keyed by its
identity (a box id, ``trade/<buyer>/<supplier>``, ``<box>/<subscription name>``), its value
canonical JSON with a format version; a removed entry is a tombstone (no value). Compaction
keeps the last record of each key, so reading a control topic from its start gives the network
as it is now, and a router that follows them sees a new partner or subscription without a
restart. The signing topic holds the signed event types (record ``types``) and every box's
public keys (records ``keys/<box>/<key id>``), which are never tombstoned: an auditor can
verify an old event after its box left.
"""

from __future__ import annotations

import json
from typing import Any

from bus import naming
from bus.kafka import KafkaAccess
from bus.topics import read_topic
from bus.topology.model import Topology, relationship_key

FORMAT = 1


def encode(entry: dict[str, Any]) -> bytes:
    return json.dumps({"format": FORMAT, **entry}, sort_keys=True,
                      separators=(",", ":")).encode()


def decode(value: bytes) -> dict[str, Any]:
    entry = json.loads(value)
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        raise ValueError(f"not a boxbus control record of format {FORMAT}")
    return entry


def desired_records(topology: Topology) -> dict[str, dict[str, bytes]]:
    """What the control topics should hold for ``topology``, by kind, then key."""
    return {
        "boxes": {box.id: encode(box.model_dump(mode="json")) for box in topology.boxes},
        "relationships": {
            relationship_key(r): encode({**r.model_dump(mode="json"),
                                         "members": list(r.members())})
            for r in topology.relationships},
        "subscriptions": {
            s.key: encode(s.model_dump(mode="json")) for s in topology.subscriptions},
        "signing": {SIGNED_TYPES: encode({"types": list(topology.signed_types)})},
    }


SIGNED_TYPES = "types"  # the key of the signed types' record in the signing control topic
KEYS = "keys/"  # the prefix of the public keys' records there


async def read_control(kafka: KafkaAccess, namespace: str) -> dict[str, dict[str, bytes]]:
    """The current records of every control topic, by kind, then key (tombstones applied);
    empty for a control topic that does not exist yet."""
    found: dict[str, dict[str, bytes]] = {}
    for kind in naming.CONTROL_KINDS:
        topic = naming.control_topic(namespace, kind)
        records = await read_topic(kafka, topic)
        current: dict[str, bytes] = {}
        for record in sorted(records, key=lambda r: (r.partition, r.offset)):
            key = record.key.decode()
            if record.value is None:
                current.pop(key, None)
            else:
                current[key] = record.value
        found[kind] = current
    return found
