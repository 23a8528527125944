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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from bus import naming
from bus.kafka import KafkaAccess
from bus.log import get_logger
from bus.topics import read_topic
from bus.topology.model import (
    Box,
    Branch,
    Internal,
    Relationship,
    Subscription,
    Topology,
    Trade,
    relationship_key,
)

log = get_logger(__name__)

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


@dataclass(frozen=True)
class Network:
    """The network as its control topics hold it, as the topology's own typed values."""

    boxes: tuple[Box, ...] = ()
    relationships: tuple[Trade | Branch | Internal, ...] = ()
    subscriptions: tuple[Subscription, ...] = ()


_RELATIONSHIP: TypeAdapter[Trade | Branch | Internal] = TypeAdapter(Relationship)
_RELATIONSHIP_KINDS: dict[str, type[Trade | Branch | Internal]] = {
    "trade": Trade, "branch": Branch, "internal": Internal}


def _known(entry: dict[str, Any], model: type[Any] | None) -> dict[str, Any]:
    """The fields ``model`` has: a newer boxbus may add some, which this one reads past (the
    topology file itself stays strict)."""
    return entry if model is None else {k: v for k, v in entry.items() if k in model.model_fields}


def network_of(records: Mapping[str, Mapping[str, bytes]]) -> Network:
    """The typed network of the control topics' current records (by kind, then key). Fields a
    newer boxbus added are read past; a record this version cannot read at all (damaged, or a
    kind it does not know) is left out and logged: the rest of the network keeps working."""
    def entries(kind: str) -> list[tuple[str, dict[str, Any]]]:
        found = []
        for key, value in sorted(records.get(kind, {}).items()):
            try:
                entry = decode(value)
            except ValueError as exc:
                log.error("control record not readable; left out", kind=kind, key=key,
                          error=str(exc))
                continue
            entry.pop("format", None)
            entry.pop("members", None)  # derived (a relationship's), not a field
            found.append((key, entry))
        return found

    def typed(kind: str, read: Any) -> list[Any]:
        values = []
        for key, entry in entries(kind):
            try:
                values.append(read(entry))
            except ValidationError as exc:
                log.error("control record does not match this version's model; left out",
                          kind=kind, key=key, error=str(exc.errors()[0]["msg"]))
        return values

    def relationship(entry: dict[str, Any]) -> Trade | Branch | Internal:
        return _RELATIONSHIP.validate_python(
            _known(entry, _RELATIONSHIP_KINDS.get(entry.get("kind", ""))))

    return Network(
        tuple(typed("boxes", lambda e: Box.model_validate(_known(e, Box)))),
        tuple(typed("relationships", relationship)),
        tuple(typed("subscriptions",
                    lambda e: Subscription.model_validate(_known(e, Subscription)))))
