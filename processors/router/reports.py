"""The router's reports to the boxes that track what they send: ``EventsRouted`` events, per box
and round, listing each tracked event (header ``boxbus_track``) with the boxes it was delivered
to, or why it was refused. They are written into the box's inbox topic after the round's
deliveries were acknowledged (so a delivery the brokers refused is reported as refused, never
as delivered) and before the round commits (so a report is lost only with the round, which is
then routed and reported again).

A report never holds the routing back:
- a box's entries are split into reports of at most ``MAX_REPORT_BYTES`` (a broadcast to many
  boxes names them all), and an id or a reason of absurd length is not reported at all;
- a report the brokers refuse for good is dropped with a warning;
- when the schema registry does not answer within 3 s, no reports are made for the next
  ``PAUSE_SECONDS``: the box sees those events as sent and not routed (overdue after a while),
  never as delivered when they were not.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bus import naming
from bus.envelope import ID, TARGET_BOX, TYPE
from bus.events.models import EventMeta, EventsRouted, RoutedEvent
from bus.log import get_logger
from bus.serde import EventSerde
from processors.router.outputs import DROPPABLE, key_hash
from processors.router.table import RoutingTable

log = get_logger(__name__)
ROUTER = naming.ROUTER_SOURCE
MAX_REPORT_BYTES = 256 * 1024
MAX_ID = 200  # longer event ids (or types) are not reported: nobody writes such an id
MAX_REASON = 500
PAUSE_SECONDS = 30.0
ENCODE_TIMEOUT = 3.0  # a first report to a box registers its subject: a few registry calls


@dataclass
class Report:
    event_id: str
    event_type: str
    target: str | None = None  # the box it is addressed to, if any
    recipients: list[str] = field(default_factory=list)
    by_mail: list[str] = field(default_factory=list)
    code: str | None = None
    reason: str | None = None
    missed: list[str] = field(default_factory=list)  # recipients it did not reach
    missed_code: str | None = None
    missed_reason: str | None = None

    def delivered(self, box: str, partner: bool) -> None:
        self.recipients.append(box)
        if partner:
            self.by_mail.append(box)

    def refused(self, code: str, reason: str) -> None:
        self.code, self.reason = code, reason[:MAX_REASON]

    def undelivered(self, box: str, code: str, reason: str) -> None:
        """A recipient it did not reach. The event counts as refused when that was its
        addressee (a subscriber's copy reaching someone else does not make up for it), or
        when it reached nobody at all (decided when the report is written)."""
        if box in self.recipients:
            self.recipients.remove(box)
        if box in self.by_mail:
            self.by_mail.remove(box)
        self.missed.append(box)
        if box == self.target or self.missed_code is None:
            self.missed_code, self.missed_reason = code, reason[:MAX_REASON]

    def outcome(self) -> tuple[str | None, str | None]:
        """(code, reason) of the refusal the report gives, or (None, None)."""
        if self.code is not None:
            return self.code, self.reason
        if self.missed and (self.target in self.missed or not self.recipients):
            return self.missed_code, self.missed_reason
        return None, None

    def size(self) -> int:
        return (len(self.event_id) + len(self.event_type) + len(self.reason or "") + 16
                + sum(len(b) + 2 for b in self.recipients) * 2)


class Reports:
    """The entries of one round, by box. ``about`` is called on the hot path for tracked
    records only."""

    def __init__(self, namespace: str, table: RoutingTable) -> None:
        self.namespace = namespace
        self.table = table
        self._by_box: dict[str, list[Report]] = {}
        self._by_record: dict[int, Report] = {}

    def __bool__(self) -> bool:
        return bool(self._by_box)

    def about(self, owner: str, record: Any, headers: Mapping[str, bytes]) -> Report | None:
        """A new entry in ``owner``'s report for ``record`` (None for a record of no known
        box, or with an id too long to report: nobody to report to, nothing to name)."""
        event_id, kind = headers.get(ID) or b"", headers.get(TYPE) or b""
        if owner not in self.table.boxes or not event_id or len(event_id) > MAX_ID or len(
                kind) > MAX_ID:
            return None
        target = headers.get(TARGET_BOX)
        report = Report(event_id.decode("utf-8", "replace"), kind.decode("utf-8", "replace"),
                        target.decode("utf-8", "replace") if target else None)
        self._by_box.setdefault(owner, []).append(report)
        self._by_record[id(record)] = report
        return report

    def of(self, record: Any) -> Report | None:
        return self._by_record.get(id(record))

    def events(self) -> list[tuple[str, list[Report]]]:
        """Each box's entries, in chunks that keep a report well under a record's limit."""
        chunks = []
        for box, entries in self._by_box.items():
            chunk: list[Report] = []
            size = 0
            for entry in entries:
                if chunk and size + entry.size() > MAX_REPORT_BYTES:
                    chunks.append((box, chunk))
                    chunk, size = [], 0
                chunk.append(entry)
                size += entry.size()
            chunks.append((box, chunk))
        return chunks


class Reporter:
    """Makes the reports of a round into records, and stays out of the way when the registry
    does not answer."""

    def __init__(self, serde: EventSerde) -> None:
        self.serde = serde
        self._paused_until = 0.0
        self.written = 0
        self.skipped = 0

    def paused(self) -> bool:
        return time.monotonic() < self._paused_until

    def pause(self) -> None:
        self._paused_until = time.monotonic() + PAUSE_SECONDS

    async def write(self, reports: Reports, add: Callable[..., None],
                    partitions: Mapping[str, int]) -> None:
        now = datetime.now(UTC)
        for box, entries in reports.events():
            topic = naming.inbox_topic(reports.namespace, box)
            if topic not in partitions or self.paused():
                self.skipped += len(entries)
                continue  # a partner without a box (the mailer tracks nothing) or no inbox
            event = EventsRouted(
                meta=EventMeta(event_id=str(uuid.uuid4()), source_box=ROUTER,
                               region=reports.table.boxes[box].region, aggregate_key=box,
                               occurred_at=now, target_box=box),
                events=tuple(RoutedEvent(event_id=e.event_id, event_type=e.event_type,
                                         recipients=tuple(e.recipients),
                                         by_mail=tuple(e.by_mail), refused_code=code,
                                         refused_reason=reason)
                             for e in entries for code, reason in [e.outcome()]),
                routed_at=now)
            try:
                async with asyncio.timeout(ENCODE_TIMEOUT):
                    encoded = await self.serde.encode(event, topic)
            except Exception as exc:
                self._paused_until = time.monotonic() + PAUSE_SECONDS
                self.skipped += len(entries)
                log.warning("the router's reports cannot be made (the schema registry?); "
                            "none for a while: the boxes see those events as sent, not routed",
                            box=box, events=len(entries), pause_seconds=PAUSE_SECONDS,
                            error=repr(exc))
                continue
            add(topic, key_hash(encoded.key), 0, encoded.key, encoded.value,
                int(now.timestamp() * 1000), list(encoded.headers), DROPPABLE, box)
            self.written += len(entries)
