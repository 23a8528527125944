"""A whole network on one machine: the topology applied, a database and a running reference
box (relay + inbox) per box, and the router. Used by ``make demo`` and the flow tests; in
production each box and each router instance is its own process (``boxbus box run``,
``boxbus router run``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

from bus import naming
from bus.credentials import CredentialStore
from bus.db import create_database
from bus.kafka import KafkaAccess
from bus.log import get_logger
from bus.serde import EventSerde
from bus.settings import Settings
from bus.topology import Topology, apply_plan, make_plan
from bus.topology.model import BoxKind
from connectors.box import Outbox
from connectors.company import Peers, SystemService
from connectors.mail.service import Endpoint, Mailer
from connectors.refbox.actions import RefBox
from connectors.refbox.schema import migrate_refbox
from connectors.refbox.service import BoxService
from connectors.refbox.view import box_view
from processors.router import Router

log = get_logger(__name__)


class LocalNetwork:
    def __init__(self, settings: Settings, kafka: KafkaAccess, database_server: str,
                 serde: EventSerde, topology: Topology, *, routers: int = 1,
                 systems: Mapping[str, str] | None = None,
                 relay_linger_ms: int = 5) -> None:
        self.settings = settings
        self.kafka = kafka
        self.database_server = database_server
        self.serde = serde
        self.topology = topology
        self.router_count = routers
        self.boxes: dict[str, RefBox] = {}
        self.dsns: dict[str, str] = {}
        self.services: dict[str, BoxService] = {}
        self.routers: list[Router] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._routing: list[tuple[asyncio.Event, asyncio.Task[Any]]] = []
        self._mailing: list[asyncio.Event] = []
        self.mailer_dsn: str | None = None
        self.mailer: Mailer | None = None  # the newest mailer started
        # Boxes that run one of a company's internal systems (sales, delivery, billing)
        # instead of the reference box: box id -> system kind.
        self.system_kinds = dict(systems or {})
        self.systems: dict[str, SystemService] = {}
        # How long each reference box's relay lets a batch fill (0: every answer of a box in
        # request/reply leaves at once).
        self.relay_linger_ms = relay_linger_ms

    async def __aenter__(self) -> LocalNetwork:
        plan = await make_plan(self.settings, self.kafka, self.topology)
        await apply_plan(self.kafka, plan)
        real = [b for b in self.topology.boxes if b.kind is BoxKind.BOX]
        await asyncio.gather(*(self.add_box(b.id, b.region) for b in real
                               if b.id not in self.system_kinds))
        await asyncio.gather(*(self.add_system(b.id, b.region, self.system_kinds[b.id])
                               for b in real if b.id in self.system_kinds))
        for _ in range(self.router_count):
            await self.add_router()
        return self

    async def add_box(self, box_id: str, region: str) -> BoxService:
        """A running reference box: its database, its relay and inbox as its own Kafka user,
        signing what the network marks as signed with its own key. Every box of the topology
        at the start; later, a box that joined (an onboarded partner)."""
        ns = self.settings.topic_namespace
        dsn = await create_database(self.database_server, naming.box_database(ns, box_id))
        await migrate_refbox(dsn)
        store = CredentialStore.of(self.settings)
        self.dsns[box_id] = dsn
        outbox = Outbox(self.settings, self.serde,
                        signer=store.signer(naming.box_principal(ns, box_id)),
                        signed_types=self.topology.signed_types, track=True)
        self.boxes[box_id] = RefBox(box_id, region, dsn, outbox, settings=self.settings)
        service = BoxService(self.settings, dsn,
                             self.identity(naming.box_principal(ns, box_id)), box_id,
                             self.serde, region=region, poll_interval=0.5,
                             relay_linger_ms=self.relay_linger_ms)
        self.services[box_id] = service
        self._tasks.append(asyncio.create_task(service.run(), name=f"box-{box_id}"))
        return service

    async def add_system(self, box_id: str, region: str, kind: str) -> SystemService:
        """A running internal system of the company (see connectors.company), on its own
        database, as its box's own Kafka user; running once it returns."""
        ns = self.settings.topic_namespace
        dsn = await create_database(self.database_server, naming.box_database(ns, box_id))
        self.dsns[box_id] = dsn
        store = CredentialStore.of(self.settings)
        outbox = Outbox(self.settings, self.serde,
                        signer=store.signer(naming.box_principal(ns, box_id)),
                        signed_types=self.topology.signed_types, track=True)
        by_kind = {k: b for b, k in self.system_kinds.items()}
        peers = Peers(sales=by_kind.get("sales", ""), delivery=by_kind.get("delivery", ""),
                      billing=by_kind.get("billing", ""))
        service = SystemService(self.settings, dsn,
                                self.identity(naming.box_principal(ns, box_id)), box_id,
                                region, kind, peers, self.serde, outbox, poll_interval=0.5)
        self.systems[box_id] = service
        task = asyncio.create_task(service.run(), name=f"system-{box_id}")
        self._tasks.append(task)
        waiting = asyncio.create_task(service.ready.wait())
        await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            waiting.cancel()
            task.result()  # raises why it could not start
        return service

    def identity(self, user: str) -> KafkaAccess:
        """How a box or the router of this network connects: as its own Kafka user (made by
        the topology's apply), or as the network's operator on a cluster without logins."""
        return CredentialStore.of(self.settings).access(user, self.kafka) or self.kafka

    async def add_router(self) -> Router:
        """One more router instance in the group (they split the region partitions)."""
        router = Router(self.settings, self.identity(
            naming.service_principal(self.settings.topic_namespace, "router")),
            serde=self.serde)
        stop = asyncio.Event()
        task = asyncio.create_task(router.run(stop, progress_every=3600), name="router")
        self.routers.append(router)
        self._routing.append((stop, task))
        self._tasks.append(task)
        return router

    async def add_mailer(self, *, key: bytes, smtp_host: str, smtp_port: int,
                         replies: Endpoint | None = None, http: Endpoint | None = None,
                         settings: Settings | None = None) -> Mailer:
        """The network's mailer, as its own user, on its own database, sending to the SMTP
        server given and taking replies at ``replies``; running once it returns."""
        ns = self.settings.topic_namespace
        if self.mailer_dsn is None:
            self.mailer_dsn = await create_database(self.database_server,
                                                    naming.box_database(ns, "mailer"))
        mailer = Mailer(settings or self.settings, self.mailer_dsn,
                        self.identity(naming.service_principal(ns, "mailer")), self.serde,
                        key=key, smtp_host=smtp_host, smtp_port=smtp_port, listen=replies,
                        http=http)
        stop = asyncio.Event()
        task = asyncio.create_task(mailer.run(stop), name="mailer")
        self._mailing.append(stop)
        self._tasks.append(task)
        self.mailer = mailer
        waiting = asyncio.create_task(mailer.ready.wait())
        await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            waiting.cancel()
            task.result()  # raises why it could not start
        return mailer

    async def remove_router(self) -> Router:
        """Stop the newest router instance (its round in flight finishes and commits)."""
        stop, task = self._routing.pop()
        router = self.routers.pop()
        stop.set()
        await task
        return router

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        for stop, _ in self._routing:
            stop.set()
        for stop in self._mailing:
            stop.set()
        for service in self.services.values():
            service.stop()
        for system in self.systems.values():
            system.stop()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for task, result in zip(self._tasks, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError):
                log.error("network part failed", part=task.get_name(), error=repr(result))

    def failed(self) -> list[str]:
        """Parts that stopped with an error while the network should be running."""
        return [f"{t.get_name()}: {t.exception()!r}" for t in self._tasks
                if t.done() and not t.cancelled() and t.exception() is not None]

    async def view(self, box_id: str) -> dict[str, Any]:
        return await box_view(self.dsns[box_id])

    async def until(self, check: Callable[[], Awaitable[bool]], timeout: float = 30,
                    what: str = "the network to settle") -> None:
        """Wait until ``check()`` holds; TimeoutError names what did not happen."""
        try:
            async with asyncio.timeout(timeout):
                while not await check():
                    if failed := self.failed():
                        raise RuntimeError(f"while waiting for {what}: {'; '.join(failed)}")
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}") from None
