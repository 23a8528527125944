"""Is a consumed record a valid event? The checks, in the order a router can afford them:
size and headers first (no decoding), then the body, then whether headers and body agree."""

from __future__ import annotations

from dataclasses import dataclass

from bus import naming
from bus.envelope import Envelope
from bus.errors import InvalidEnvelope, OversizeEvent, RegionMismatch
from bus.events import EventBase
from bus.record import KafkaRecord
from bus.serde import EventSerde

MAX_EVENT_BYTES = 1024 * 1024  # larger documents travel by reference (claim check)


@dataclass(frozen=True)
class Checked:
    envelope: Envelope
    event: EventBase


def check_headers(record: KafkaRecord, namespace: str,
                  max_bytes: int = MAX_EVENT_BYTES) -> Envelope:
    """What can be checked without decoding the body; raises a BadEvent subclass."""
    size = len(record.value or b"")
    if size > max_bytes:
        raise OversizeEvent(
            f"the value is {size} bytes, over the {max_bytes}-byte limit for one event",
            hint="send large documents by reference (DocumentAttached.content_ref)",
        )
    envelope = Envelope.from_headers(record.headers or ())
    region = naming.region_of_topic(namespace, record.topic)
    if region is not None and envelope.region != region:
        raise RegionMismatch(
            f"ce_region is {envelope.region!r} but the record is in the topic of region "
            f"{region!r}",
            hint=f"publish {envelope.region} events to {namespace}.region.{envelope.region}",
        )
    key = record.key.decode(errors="replace") if record.key is not None else None
    if key != envelope.partition_key:
        raise InvalidEnvelope(
            f"the record key is {key!r} but ce_partitionkey is {envelope.partition_key!r}: "
            "per-aggregate order needs the aggregate key as the record key",
        )
    return envelope


async def check_record(record: KafkaRecord, serde: EventSerde, namespace: str,
                       max_bytes: int = MAX_EVENT_BYTES) -> Checked:
    envelope = check_headers(record, namespace, max_bytes)
    event = await serde.decode(record.value)
    disagreement = envelope.disagreement_with(event)
    if disagreement is not None:
        raise InvalidEnvelope(f"headers and body disagree: {disagreement}")
    return Checked(envelope, event)
