"""The envelope: CloudEvents 1.0 attributes of an event, carried as Kafka headers (the Kafka
protocol binding, binary content mode). The record key is the aggregate key; the value is the
Confluent wire format. A router reads these headers and forwards the record without decoding
the Avro body.

Headers (all UTF-8):

=====================  ====================================================================
``ce_specversion``     ``1.0``
``ce_id``              the event id (``meta.event_id``)
``ce_source``          ``/boxes/<source box>``
``ce_type``            the Avro full name, e.g. ``boxbus.orders.OrderPlaced``
``ce_time``            RFC 3339 UTC with milliseconds (``meta.occurred_at``)
``content-type``       ``application/avro``
``ce_dataschema``      where the writer schema is, e.g. ``<registry>/schemas/ids/42`` (optional)
``ce_region``          region of the event (extension)
``ce_partitionkey``    the aggregate key (the CloudEvents partitioning extension)
``ce_targetbox``       the box the event is meant for (extension, optional)
``ce_correlationid``   the business conversation (extension, optional)
``ce_causationid``     the event that caused this one (extension, optional)
=====================  ====================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from bus.errors import InvalidEnvelope
from bus.events.base import EventBase

SPECVERSION = "ce_specversion"
ID = "ce_id"
SOURCE = "ce_source"
TYPE = "ce_type"
TIME = "ce_time"
CONTENT_TYPE = "content-type"
DATASCHEMA = "ce_dataschema"
REGION = "ce_region"
PARTITION_KEY = "ce_partitionkey"
TARGET_BOX = "ce_targetbox"
CORRELATION_ID = "ce_correlationid"
CAUSATION_ID = "ce_causationid"
# Not CloudEvents: on the mail topic, the partner without a box the router sent the record for.
RECIPIENT = "boxbus_recipient"
# Set by a box's outbox on the events it tracks: the router reports where each went
# (EventsRouted into the box's inbox), for the box's business receipts.
TRACK = "boxbus_track"
# On a question and its answer (request/reply): the partition of the asking box's replies
# topic that the asking instance reads; the router delivers the answer there.
REPLY_PARTITION = "boxbus_reply_partition"

REQUIRED = (SPECVERSION, ID, SOURCE, TYPE, TIME, CONTENT_TYPE, REGION, PARTITION_KEY)
SOURCE_PREFIX = "/boxes/"

Headers = Sequence[tuple[str, bytes]]

# The headers an envelope is read from (any other header is the application's or boxbus's).
_ENVELOPE_HEADERS = frozenset({SPECVERSION, ID, SOURCE, TYPE, TIME, CONTENT_TYPE, DATASCHEMA,
                               REGION, PARTITION_KEY, TARGET_BOX, CORRELATION_ID,
                               CAUSATION_ID})
_SOURCE_CUT = len(SOURCE_PREFIX)


def _utf8(raw: bytes | None) -> bool:
    try:
        raw is None or raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def header_text(headers: Headers, name: str) -> str | None:
    """A header's value as text, for logs and tools (None if absent or without a value)."""
    for key, raw in headers:
        if key == name and raw is not None:
            return raw.decode(errors="replace")
    return None


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("no timezone")
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Envelope:
    """The routing attributes of one event, as a value."""

    SPEC: ClassVar[str] = "1.0"
    MEDIA_TYPE: ClassVar[str] = "application/avro"

    id: str
    source_box: str
    type: str
    time: datetime
    region: str
    partition_key: str
    dataschema: str | None = None
    target_box: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None

    @property
    def source(self) -> str:
        return SOURCE_PREFIX + self.source_box

    @classmethod
    def of(cls, event: EventBase, *, dataschema: str | None = None) -> Envelope:
        """The envelope of an event: every attribute comes from its ``meta``."""
        meta = event.meta
        return cls(
            id=meta.event_id, source_box=meta.source_box, type=event.TYPE,
            time=meta.occurred_at, region=meta.region, partition_key=meta.aggregate_key,
            dataschema=dataschema, target_box=meta.target_box,
            correlation_id=meta.correlation_id, causation_id=meta.causation_id,
        )

    def to_headers(self) -> list[tuple[str, bytes]]:
        headers = [
            (SPECVERSION, self.SPEC.encode()),
            (ID, self.id.encode()),
            (SOURCE, self.source.encode()),
            (TYPE, self.type.encode()),
            (TIME, format_time(self.time).encode()),
            (CONTENT_TYPE, self.MEDIA_TYPE.encode()),
            (REGION, self.region.encode()),
            (PARTITION_KEY, self.partition_key.encode()),
        ]
        for name, value in ((DATASCHEMA, self.dataschema), (TARGET_BOX, self.target_box),
                            (CORRELATION_ID, self.correlation_id),
                            (CAUSATION_ID, self.causation_id)):
            if value is not None:
                headers.append((name, value.encode()))
        return headers

    @classmethod
    def from_headers(cls, headers: Headers) -> Envelope:
        """Read the envelope of a record; InvalidEnvelope names the header that is wrong."""
        # Kafka allows a header without a value: it counts as empty. (Read on every record a
        # consumer takes: one pass, no more work than the checks need.)
        try:
            found = {name: raw.decode() if raw is not None else ""
                     for name, raw in headers if name in _ENVELOPE_HEADERS}
        except UnicodeDecodeError:
            bad = next(name for name, raw in headers
                       if name in _ENVELOPE_HEADERS and not _utf8(raw))
            raise InvalidEnvelope(f"header {bad} is not UTF-8 text") from None
        if len(found) < len(REQUIRED) or not all(found.get(name) for name in REQUIRED):
            missing = [name for name in REQUIRED if not found.get(name)]
            raise InvalidEnvelope(
                f"required header(s) {', '.join(missing)} missing or empty",
                hint="publish events through boxbus (or set every CloudEvents header listed in "
                "bus/envelope.py)",
            )
        if found[SPECVERSION] != cls.SPEC:
            raise InvalidEnvelope(f"ce_specversion is {found[SPECVERSION]!r}, not '1.0'")
        if found[CONTENT_TYPE] != cls.MEDIA_TYPE:
            raise InvalidEnvelope(
                f"content-type is {found[CONTENT_TYPE]!r}, not {cls.MEDIA_TYPE!r}")
        source = found[SOURCE]
        if not source.startswith(SOURCE_PREFIX) or source == SOURCE_PREFIX:
            raise InvalidEnvelope(
                f"ce_source is {source!r}, not '{SOURCE_PREFIX}<box id>'")
        try:
            time = parse_time(found[TIME])
        except ValueError:
            raise InvalidEnvelope(
                f"ce_time is {found[TIME]!r}, not an RFC 3339 time with a zone") from None
        return cls(
            id=found[ID], source_box=source[_SOURCE_CUT:], type=found[TYPE],
            time=time, region=found[REGION], partition_key=found[PARTITION_KEY],
            dataschema=found.get(DATASCHEMA), target_box=found.get(TARGET_BOX),
            correlation_id=found.get(CORRELATION_ID), causation_id=found.get(CAUSATION_ID),
        )

    def disagreement_with(self, event: EventBase) -> str | None:
        """What differs between these headers and the event's own ``meta``, if anything: a
        record whose headers say something else than its body is not trusted."""
        meta = event.meta
        if (self.id, self.type, self.source_box, self.region, self.partition_key,
                self.target_box, self.correlation_id, self.causation_id, self.time) == (
                meta.event_id, event.TYPE, meta.source_box, meta.region, meta.aggregate_key,
                meta.target_box, meta.correlation_id, meta.causation_id, meta.occurred_at):
            return None  # the common case, in one comparison
        body = Envelope.of(event, dataschema=self.dataschema)
        for name in ("id", "type", "source_box", "region", "partition_key", "target_box",
                     "correlation_id", "causation_id", "time"):
            ours, theirs = getattr(self, name), getattr(body, name)
            if ours != theirs:
                return f"header {name}={ours!r} but the event body says {theirs!r}"
        return None
