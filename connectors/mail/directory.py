"""Who the mailer writes to and on whose behalf: the boxes of the network as the control topic
``boxes`` holds them (each partner's e-mail address, language and company; each sending
box's company, shown as the sender). Read at start and again when a box it does not know
turns up or the copy is older than ``max_age``, so a partner added or changed with
``boxbus topology apply`` is written to without a restart.
"""

from __future__ import annotations

import time

from pydantic import ValidationError

from bus.kafka import KafkaAccess
from bus.log import get_logger
from bus.topology import control
from bus.topology.model import Box, BoxKind

log = get_logger(__name__)


class Directory:
    def __init__(self, kafka: KafkaAccess, namespace: str, max_age: float = 30.0) -> None:
        self.kafka = kafka
        self.namespace = namespace
        self.max_age = max_age
        self.boxes: dict[str, Box] = {}
        self._read_at = float("-inf")

    async def refresh(self) -> None:
        records = (await control.read_control(self.kafka, self.namespace)).get("boxes", {})
        boxes = {}
        for key, value in records.items():
            try:
                entry = control.decode(value)
                entry.pop("format", None)
                boxes[key] = Box.model_validate(entry)
            except (ValueError, ValidationError) as exc:
                log.warning("control record of a box not readable; left out", box=key,
                            error=str(exc))
        self.boxes = boxes
        self._read_at = time.monotonic()

    async def box(self, box_id: str, *, fresh: bool = False) -> Box | None:
        """The box (or partner) as the network knows it now; None if it is not known.
        ``fresh``: read the control topic again first (a rare, important question: may this
        reply be taken?)."""
        if fresh or box_id not in self.boxes or time.monotonic() - self._read_at > \
                self.max_age:
            await self.refresh()
        return self.boxes.get(box_id)

    async def partner(self, box_id: str, *, fresh: bool = False) -> Box | None:
        """The partner without a box, or None if ``box_id`` is not one (any more)."""
        found = await self.box(box_id, fresh=fresh)
        return found if found is not None and found.kind is BoxKind.PARTNER else None

    def company(self, box_id: str) -> str:
        """The name shown for a box: its company, else its id."""
        found = self.boxes.get(box_id)
        return found.company if found is not None else box_id
