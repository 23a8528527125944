"""A running internal system: its relay, its inbox (with receipts), its responder (the
questions it answers) and its asking instance, in one process, stopped together."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bus.kafka import KafkaAccess
from bus.log import get_logger
from bus.serde import EventSerde
from bus.settings import Settings
from connectors.box import Inbox, Outbox, Relay, UnknownTypePolicy
from connectors.box.rpc import Requester, Responder
from connectors.box.running import run_together
from connectors.company.schema import migrate_system
from connectors.company.systems import SYSTEMS, Billing, Peers, System

log = get_logger(__name__)


class SystemService:
    def __init__(self, settings: Settings, dsn: str, kafka: KafkaAccess, box_id: str,
                 region: str, kind: str, peers: Peers, serde: EventSerde, outbox: Outbox, *,
                 poll_interval: float = 1.0) -> None:
        self.kind = kind
        self.box_id = box_id
        self.dsn = dsn
        self.requester = (Requester(settings, kafka, box_id, region, serde, dsn, outbox=outbox)
                          if kind in ("sales", "billing") else None)
        self.system: System = SYSTEMS[kind](box_id, region, dsn, outbox, peers, self.requester)
        answers = self.system.answers()
        # A system that answers questions sends each answer as soon as it is committed: the
        # asker waits on it (no batch-filling linger in its relay).
        self.relay = Relay(settings, dsn, kafka, box_id, poll_interval=poll_interval,
                           linger_ms=0 if answers.by_type else 5)
        # A system takes what it has handlers for; what else its subscriptions bring is
        # skipped with a log line (a subscription is the network's, not the system's, choice).
        self.inbox = Inbox(settings, dsn, kafka, box_id, self.system.handlers(), serde,
                           receipts=True, region=region, track=True, outbox=outbox,
                           unknown_types=UnknownTypePolicy.SKIP)
        self.responder = (Responder(settings, dsn, kafka, box_id, region, answers, serde,
                                    outbox=outbox) if answers.by_type else None)
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.relay.stop()
        self.inbox.stop()
        if self.responder is not None:
            self.responder.stop()

    async def run(self) -> None:
        await migrate_system(self.dsn, self.kind)
        if self.requester is not None:
            await self.requester.start()
        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(self.relay.run(), name=f"relay-{self.box_id}"),
            asyncio.create_task(self.inbox.run(), name=f"inbox-{self.box_id}")]
        if self.responder is not None:
            tasks.append(asyncio.create_task(self.responder.run(),
                                             name=f"responder-{self.box_id}"))
        if isinstance(self.system, Billing):  # usage waiting for its client's rates
            tasks.append(asyncio.create_task(self.system.price_waiting(self._stopping),
                                             name=f"pricer-{self.box_id}"))
        self.ready.set()
        log.info("internal system running", box=self.box_id, system=self.kind)
        try:
            await run_together(tasks, self.stop)
        finally:
            if self.requester is not None:
                with contextlib.suppress(Exception):
                    await self.requester.stop()
