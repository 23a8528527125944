"""A running reference box: its relay (outbox to Kafka) and its inbox (its inbox topic to its
tables) side by side in one process, stopped together."""

from __future__ import annotations

import asyncio

from bus.kafka import KafkaAccess
from bus.log import get_logger
from bus.serde import EventSerde
from bus.settings import Settings
from connectors.box import Inbox, Outbox, Relay
from connectors.box.running import run_together
from connectors.refbox.handlers import box_handlers
from connectors.refbox.schema import migrate_refbox

log = get_logger(__name__)


class BoxService:
    def __init__(self, settings: Settings, dsn: str, kafka: KafkaAccess, box_id: str,
                 serde: EventSerde, *, region: str, poll_interval: float = 1.0,
                 relay_linger_ms: int = 5) -> None:
        self.box_id = box_id
        self.dsn = dsn
        self.relay = Relay(settings, dsn, kafka, box_id, poll_interval=poll_interval,
                           linger_ms=relay_linger_ms)
        # Business receipts on: the box answers what is addressed to it, and keeps what
        # became of what it sent (the router's reports and the recipients' answers).
        self.inbox = Inbox(settings, dsn, kafka, box_id, box_handlers(settings), serde,
                           receipts=True,
                           region=region, track=True, outbox=Outbox(settings, serde))

    def stop(self) -> None:
        self.relay.stop()
        self.inbox.stop()

    async def run(self) -> None:
        """Migrate the box's database, then relay and apply until ``stop()``; if one of the
        two fails, the other is stopped and the error raised."""
        await migrate_refbox(self.dsn)
        tasks = [asyncio.create_task(self.relay.run(), name=f"relay-{self.box_id}"),
                 asyncio.create_task(self.inbox.run(), name=f"inbox-{self.box_id}")]
        log.info("box running", box=self.box_id)
        await run_together(tasks, self.stop)
