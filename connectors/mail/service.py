"""The mailer (``boxbus mailer run``): partners without a box get their events by e-mail and
answer by e-mail. It connects to Kafka as the network's ``mailer`` user and keeps its state in
its own PostgreSQL (:mod:`connectors.mail.store`). Four parts run in one process:

1. **Intake**: the box SDK's inbox on the mail topic (group ``<ns>.mailer``). Every record is
   checked like any box's event (schema, envelope, the sender's signature); one that is not
   valid goes to ``<ns>.mail.dlq``. A valid one is queued in ``mail_outgoing`` for its partner
   (the router's ``boxbus_recipient`` header), with the order's thread, in the same
   transaction as the topic offset after it: a crash re-reads it and queues nothing twice
   (one row per event and partner).
2. **Courier** (:mod:`connectors.mail.courier`): sends the queued e-mails over SMTP, each
   partner's in order, partners side by side; retries, gives up, reports.
3. **Endpoints**: the HTTP one (:mod:`connectors.mail.web`: one-click unsubscribe, the
   invitation page) and an SMTP server (aiosmtpd, on this process's event loop) for the
   mailer's own addresses. A partner's answer to an order's reply address becomes a
   ``CommentAdded`` from the partner to the buyer (quoted lines cut off; refused from outside
   the partner's mail domain); a failure report to an e-mail's bounce address gives that
   e-mail up. Any other address is refused (550); a failure on the mailer's side answers
   451, so the sending server tries again. The comment's id comes from the reply address and
   the reply's Message-ID, so a reply delivered twice is one comment.
4. **Relay**: the box SDK's relay publishes what the mailer writes for partners (comments,
   receipts) from its outbox into each partner's ingress topic, where the router proves the
   source like any box's.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import functools
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError
from aiosmtpd.smtp import SMTP, Envelope, Session

from bus import naming
from bus.deadletter import DeadLetterWriter
from bus.envelope import RECIPIENT, header_text
from bus.envelope import Envelope as EventEnvelope
from bus.errors import BoxbusError
from bus.events import EVENT_TYPES, EventBase
from bus.events.models import CommentAdded, EventMeta
from bus.kafka import KafkaAccess
from bus.log import get_logger
from bus.record import KafkaRecord
from bus.serde import EventSerde
from bus.settings import Settings
from connectors.box import Applied, Handlers, Rejected
from connectors.box.inbox import Inbox
from connectors.box.outbox import BUS_ANSWERS, Outbox, headers_json
from connectors.box.relay import Relay
from connectors.mail import store
from connectors.mail.addresses import MailAddresses, UnknownAddress, new_reference
from connectors.mail.campaign import suppress
from connectors.mail.courier import Courier
from connectors.mail.directory import Directory
from connectors.mail.invitations import Invitations
from connectors.mail.letter import order_of
from connectors.mail.message import message_id, one_line
from connectors.mail.replies import bounce_reason, failed_for_good, reply_text
from connectors.mail.web import mail_app

log = get_logger(__name__)

MAILER = "mailer"  # its name as a service of the network (user, group, relay lock)


def recipient_of(record: KafkaRecord, envelope: EventEnvelope) -> str:
    """Which partner a record of the mail topic is for; the dedupe key is event and partner
    (one event may go to two partners, one record each)."""
    return f"{envelope.id}/{header_text(record.headers, RECIPIENT) or ''}"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


class Mailer:
    def __init__(self, settings: Settings, dsn: str, kafka: KafkaAccess, serde: EventSerde,
                 *, key: bytes, smtp_host: str, smtp_port: int,
                 listen: Endpoint | None = None, http: Endpoint | None = None,
                 workers: int = 4) -> None:
        self.settings = settings
        self.dsn = dsn
        self.kafka = kafka
        self.serde = serde
        self.namespace = settings.topic_namespace
        self.group_id = f"{self.namespace}.{MAILER}"
        self.addresses = MailAddresses(key, settings.mail_domain)
        self.invitations = Invitations(key, settings.mail_public_url)
        self.directory = Directory(kafka, self.namespace)
        self.outbox = Outbox(settings, serde)
        self.smtp_host, self.smtp_port = smtp_host, smtp_port
        self.listen = listen
        self.http = http
        self.workers = workers
        self.replies = 0
        self.bounces = 0
        self.ready = asyncio.Event()  # set once every part runs (the endpoint listens)
        self.courier: Courier | None = None
        self.intake: Inbox | None = None
        self._pool: asyncpg.Pool | None = None
        self._server: asyncio.Server | None = None

    # -- intake ------------------------------------------------------------------------------

    def handlers(self) -> Handlers:
        handlers = Handlers()
        domain = self.settings.mail_domain

        async def queue(event: EventBase, applied: Applied) -> None:
            record = applied.record
            assert record is not None and record.value is not None  # the inbox passes it
            partner = header_text(record.headers, RECIPIENT)
            if not partner:
                raise Rejected("a record of the mail topic without the boxbus_recipient "
                               "header: only the router writes this topic, and it names "
                               "the partner of every record")
            if event.TYPE in BUS_ANSWERS:
                return  # a box's receipt of the partner's reply: nothing to write to a person
            thread = order_of(event)
            conn = applied.conn
            await conn.execute(
                "INSERT INTO mail_threads (partner, thread_key, reference, buyer_box, "
                "root_message_id) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (partner, "
                "buyer_box, thread_key) DO NOTHING",
                partner, thread, new_reference(), event.meta.source_box,
                message_id(event.meta.event_id, domain))
            await conn.execute(
                "INSERT INTO mail_outgoing (event_id, partner, event_type, thread_key, "
                "source_box, record_topic, record_partition, record_offset, record_key, "
                "record_value, headers) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
                "$11::jsonb) ON CONFLICT (event_id, partner) DO NOTHING",
                event.meta.event_id, partner, event.TYPE, thread, event.meta.source_box,
                record.topic, record.partition, record.offset, record.key, record.value,
                headers_json(list(record.headers)))
            await conn.execute("INSERT INTO mail_partners (partner) VALUES ($1) "
                               "ON CONFLICT DO NOTHING", partner)

        handlers.on(*EVENT_TYPES.values())(queue)
        return handlers

    # -- the reply endpoint ------------------------------------------------------------------

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        try:
            self.addresses.read(address)
        except UnknownAddress as exc:
            return f"550 5.1.1 {exc}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        try:
            for address in envelope.rcpt_tos:
                kind, value = self.addresses.read(address)
                if kind == "reply":
                    outcome = await self.reply_came(value, message, raw)
                else:
                    outcome = await self._bounce_came(value, message)
                if outcome:
                    return outcome
        except Exception as exc:  # nothing a sending server should give up on: it tries again
            return await self.handle_exception(exc)
        return "250 2.0.0 accepted"

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd's hook for what a handler did not catch, and ours: a database, Kafka or
        registry away, or a bug, is no reason for the partner's server to give up (a 5xx):
        451, it tries again later."""
        if isinstance(error, OSError | asyncpg.PostgresError | asyncpg.InterfaceError |
                      BoxbusError | KafkaError):
            log.warning("mail not taken now; the sending server will try again",
                        error=repr(error))
        else:
            log.error("taking a message failed; the sending server will try again",
                      error=repr(error), exc_info=error)
        return "451 4.3.0 cannot take the message now, try again later"

    async def reply_came(self, reference: str, message: EmailMessage,
                         raw: bytes) -> str | None:
        """The partner's answer becomes a comment in the buyer's box; an error answer for
        the SMTP client, or None when it was taken.

        Refused (550, with the reason): an address of no conversation; a partner that left
        or now has a box of its own (it answers there); a sender outside the partner's mail
        domain (the reply address is in every e-mail of the order, so it is no secret); an
        answer without a word of its own."""
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            thread = await conn.fetchrow(
                "SELECT partner, thread_key, buyer_box FROM mail_threads WHERE reference = $1",
                reference)
        if thread is None:
            return "550 5.1.1 this reply address belongs to no conversation here"
        partner = await self.directory.partner(thread["partner"], fresh=True)
        if partner is None:
            if await self.directory.box(thread["partner"]) is not None:
                return ("550 5.7.1 this partner has a box of its own now: answer the order "
                        "there")
            return "550 5.1.1 the partner of this conversation left the network"
        name, address = parseaddr(str(message.get("From", "")))
        domain = (partner.email or "").rpartition("@")[2].lower()
        local, at, sent_from = address.rpartition("@")
        if not (local and at) or sent_from.lower() != domain:
            log.warning("reply from outside the partner's domain refused",
                        partner=partner.id, sender=address, order=thread["thread_key"])
            return (f"550 5.7.1 answers to this order come from {domain} addresses; "
                    "write from your company's address")
        text = reply_text(message)
        if not text:
            return ("550 5.6.0 the answer has no text of its own (only the quoted e-mail): "
                    "write your answer above or between the quoted lines")
        seen = message.get("Message-ID") or hashlib.sha256(raw).hexdigest()
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"boxbus-reply:{reference}:{seen}"))
        comment = CommentAdded(
            meta=EventMeta(event_id=event_id, source_box=partner.id, region=partner.region,
                           aggregate_key=thread["thread_key"], occurred_at=datetime.now(UTC),
                           target_box=thread["buyer_box"],
                           correlation_id=thread["thread_key"]),
            subject_id=thread["thread_key"], comment_id=f"mail-{event_id[:18]}",
            author=one_line(name or address or partner.company), text=text)
        encoded = await self.outbox.encode([comment])
        async with self._pool.acquire() as conn, conn.transaction():
            await self.outbox.publish_many(conn, encoded)
        self.replies += 1
        log.info("reply taken as a comment", partner=partner.id, order=thread["thread_key"],
                 buyer=thread["buyer_box"], event_id=event_id,
                 correlation_id=thread["thread_key"])
        return None

    async def _bounce_came(self, value: str, message: EmailMessage) -> str | None:
        """A delivery status notification that says an e-mail failed for good gives it up:
        an order e-mail (the value is its row: dead-lettered, its sender told) or a
        campaign's (the value names box, campaign and contact: the address is suppressed).
        Anything else sent to a bounce address (an out-of-office answer, a "delayed"
        warning) is taken and ignored."""
        assert self.courier is not None and self._pool is not None
        if not failed_for_good(message):
            log.info("message to a bounce address that reports no failure; ignored",
                     bounce=value, subject=str(message.get("Subject", "")))
            return None
        reason = bounce_reason(message)
        if value.startswith("c"):
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "UPDATE campaign_sends SET status = 'bounced', detail = $2 WHERE "
                    "bounce_ref = $1 RETURNING box, email", value, reason)
                if row is not None:
                    await suppress(conn, row["box"], row["email"], f"bounced: {reason}")
            self.bounces += row is not None
            return None
        if await self.courier.bounced(int(value), reason):
            self.bounces += 1
        return None

    # -- running -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await store.migrate(self.dsn)
        await self.directory.refresh()
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1,
                                               max_size=self.workers + 4)
        dead_letters = DeadLetterWriter(self.kafka, self.group_id)
        await dead_letters.start([])
        mail = naming.mail_topic(self.namespace)
        self.intake = Inbox(self.settings, self.dsn, self.kafka, MAILER, self.handlers(),
                            self.serde, topics=[mail], group_id=self.group_id,
                            identity=recipient_of)
        self.courier = Courier(self.settings, self._pool, self.serde, self.directory,
                               self.addresses, self.invitations, dead_letters, self.outbox,
                               smtp_host=self.smtp_host, smtp_port=self.smtp_port,
                               workers=self.workers)
        relay = Relay(self.settings, self.dsn, self.kafka, MAILER)
        if self.listen is not None:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(
                functools.partial(SMTP, self, hostname=self.settings.mail_domain,
                                  data_size_limit=10 * 1024 * 1024),
                self.listen.host, self.listen.port)
        web = None
        if self.http is not None:
            import uvicorn

            web = uvicorn.Server(uvicorn.Config(
                mail_app(self._pool, self.addresses, self.invitations), host=self.http.host,
                port=self.http.port, log_level="warning", access_log=False, lifespan="off"))
            # The mailer's command handles the signals; uvicorn must not take them over.
            web.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        listener = await self._pool.acquire()
        await listener.add_listener("boxbus_mail", self._queued)
        tasks = [asyncio.create_task(self.intake.run(), name="mailer-intake"),
                 asyncio.create_task(self.courier.run(stop), name="mailer-courier"),
                 asyncio.create_task(relay.run(), name="mailer-relay")]
        if web is not None:
            tasks.append(asyncio.create_task(web.serve(), name="mailer-web"))
            # uvicorn says it is listening only through this flag.
            while not web.started and not tasks[-1].done():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        self.ready.set()
        log.info("mailer started", group=self.group_id, smtp=f"{self.smtp_host}:"
                 f"{self.smtp_port}", replies=f"{self.listen.host}:{self.listen.port}"
                 if self.listen else None)
        try:
            waiting = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([*tasks, waiting],
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not waiting and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            stop.set()
            self.intake.stop()
            relay.stop()
            if web is not None:
                web.should_exit = True
            if self._server is not None:
                self._server.close()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await listener.remove_listener("boxbus_mail", self._queued)
            await self._pool.release(listener)
            await dead_letters.stop()
            await self._pool.close()

    def _queued(self, *_: Any) -> None:
        if self.courier is not None:
            self.courier.wake.set()
