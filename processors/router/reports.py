"""The router's reports to the boxes that track what they send: one ``EventsRouted`` per box
and round, listing each tracked event (header ``boxbus_track``) with the boxes it was delivered
to, or why it was refused. Written into the box's inbox topic with the round's other outputs,
so a report is committed exactly when the deliveries it describes are.

A report that cannot be made (the schema registry is away) is left out with a warning rather
than holding the round: the box then sees those events as sent and not yet routed (overdue
after a while), never as delivered when they were not.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bus import naming
from bus.envelope import ID, TYPE
from bus.events.models import EventMeta, EventsRouted, RoutedEvent
from bus.log import get_logger
from bus.serde import EventSerde
from processors.router.outputs import key_hash
from processors.router.table import RoutingTable

log = get_logger(__name__)
ROUTER = "router"  # the source_box of a report: the router speaks for no box


@dataclass
class Report:
    event_id: str
    event_type: str
    recipients: list[str] = field(default_factory=list)
    by_mail: list[str] = field(default_factory=list)
    code: str | None = None
    reason: str | None = None

    def delivered(self, box: str, partner: bool) -> None:
        self.recipients.append(box)
        if partner:
            self.by_mail.append(box)

    def refused(self, code: str, reason: str) -> None:
        self.code, self.reason = code, reason


class Reports:
    def __init__(self, namespace: str, table: RoutingTable) -> None:
        self.namespace = namespace
        self.table = table
        self._by_box: dict[str, list[Report]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_box)

    def about(self, owner: str, headers: Mapping[str, bytes]) -> Report | None:
        """A new entry in ``owner``'s report for the record with these headers (None for a
        record of no known box, or without an id: nobody to report to)."""
        if owner not in self.table.boxes or not headers.get(ID):
            return None
        report = Report(headers[ID].decode("utf-8", "replace"),
                        headers.get(TYPE, b"").decode("utf-8", "replace"))
        self._by_box.setdefault(owner, []).append(report)
        return report

    async def write(self, serde: EventSerde, add: Callable[..., None],
                    partitions: Mapping[str, int]) -> None:
        now = datetime.now(UTC)
        for box, entries in self._by_box.items():
            topic = naming.inbox_topic(self.namespace, box)
            if topic not in partitions:
                continue  # a partner without a box (the mailer tracks nothing) or no inbox
            event = EventsRouted(
                meta=EventMeta(event_id=str(uuid.uuid4()), source_box=ROUTER,
                               region=self.table.boxes[box].region, aggregate_key=box,
                               occurred_at=now, target_box=box),
                events=tuple(RoutedEvent(event_id=e.event_id, event_type=e.event_type,
                                         recipients=tuple(e.recipients),
                                         by_mail=tuple(e.by_mail), refused_code=e.code,
                                         refused_reason=e.reason) for e in entries),
                routed_at=now)
            try:
                encoded = await serde.encode(event, topic)
            except Exception as exc:
                log.warning("the router's report to a box could not be made; its events show "
                            "as sent and not routed", box=box, events=len(entries),
                            error=repr(exc))
                continue
            headers: list[Any] = list(encoded.headers)
            add(topic, key_hash(encoded.key), 0, encoded.key, encoded.value,
                int(now.timestamp() * 1000), headers)
