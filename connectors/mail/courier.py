"""Delivering the queued e-mails: each partner's in the order they were queued, partners side
by side, none waiting on another's mailbox.

A round looks for partners with queued mail whose mailbox may be tried now, and gives each to
a worker (at most ``workers`` at once, each with its own SMTP connection). A worker takes a
session lock on the partner in PostgreSQL (so that two mailer processes never write to one
partner at once, and its mail keeps its order), then sends its queued e-mails one after the
other, each rendered from the event as it was queued:

- **accepted**: the row becomes ``sent``, with its Message-ID, in its own transaction;
- **temporary failure** (4xx, no connection): the partner waits, from 5 s doubling up to an
  hour, and its mail stays queued behind the failed one; an e-mail that has waited
  ``mail_retry_hours`` (24 h; counted from when the partner began failing or when it was
  queued, whichever is later) is given up as below;
- **the mailer's own trouble** (its login or sender address refused, a database or Kafka
  away while giving an e-mail up, a bug): the partner waits a minute; nothing is counted
  against it;
- **an e-mail that cannot be made** from its event: given up as below; the rest go on;
- **permanent failure** (5xx), or a failure report sent later to the e-mail's bounce address: the
  record goes to the partner's dead-letter topic (``<ns>.box.<partner>.mail.dlq``) with the
  reason, and, in one transaction, the row becomes ``dead`` and a ``DeliveryReceipt``
  (REJECTED, with the reason) goes into the mailer's outbox for the sending box, written for
  the partner into its ingress topic (the router proves and delivers it like any receipt).

Where a crash can send an e-mail twice: after the SMTP server accepted it and before the
``sent`` row committed. Started again, the mailer sends it again, with the same Message-ID
(the event id): mail clients show one message, and servers that deduplicate drop the copy.
Nothing is lost: a row is ``sent`` only after the server's acceptance.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bus import naming
from bus.deadletter import DeadLetterWriter
from bus.envelope import CORRELATION_ID
from bus.errors import BadEvent
from bus.events import EventBase
from bus.events.models import DeliveryReceipt, EventMeta, ReceiptStatus
from bus.log import get_logger
from bus.record import PlainRecord
from bus.serde import EventSerde
from bus.settings import Settings
from connectors.box.outbox import Outbox, headers_from_json
from connectors.mail.addresses import MailAddresses
from connectors.mail.directory import Directory
from connectors.mail.invitations import Invitations
from connectors.mail.letter import Party
from connectors.mail.message import Addressing, compose
from connectors.mail.smtp import Answer, Outcome, SmtpSender

log = get_logger(__name__)

FIRST_PAUSE, LONGEST_PAUSE = 5.0, 3600.0


class Undeliverable(BadEvent):
    code = "undeliverable-mail"


class _Unmakeable(Exception):
    """Rendering the e-mail of an event failed (a bug, an event no template can lay out):
    that e-mail is given up; a registry or database away is not this, and waits."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(repr(cause))
        self.cause = cause


def lock_key(partner: str) -> int:
    return zlib.crc32(f"boxbus-mail:{partner}".encode()) & 0x7FFFFFFF


def pause_after(failures: int, jitter: float) -> float:
    """Seconds a partner waits after its ``failures``-th failure in a row."""
    return float(min(LONGEST_PAUSE, FIRST_PAUSE * 2 ** (failures - 1)) * (0.75 + jitter / 2))


@dataclass
class CourierStats:
    sent: int = 0
    deferred: int = 0  # temporary failures
    dead: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "deferred": self.deferred, "dead": self.dead}


class Courier:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, serde: EventSerde,
                 directory: Directory, addresses: MailAddresses, invitations: Invitations,
                 dead_letters: DeadLetterWriter, outbox: Outbox, *, smtp_host: str, smtp_port: int,
                 workers: int = 4, batch: int = 50) -> None:
        self.settings = settings
        self.pool = pool
        self.serde = serde
        self.directory = directory
        self.addresses = addresses
        self.invitations = invitations
        self.dead_letters = dead_letters
        self.outbox = outbox
        self.smtp_host, self.smtp_port = smtp_host, smtp_port
        self.workers = workers
        self.batch = batch
        self.retry_for = timedelta(hours=settings.mail_retry_hours)
        self.stats = CourierStats()
        self.wake = asyncio.Event()
        self._senders: asyncio.Queue[SmtpSender] = asyncio.Queue()
        for _ in range(workers):
            self._senders.put_nowait(SmtpSender(settings, smtp_host, smtp_port))
        self._busy: dict[str, asyncio.Task[None]] = {}
        # E-mails are rendered (the PDF: milliseconds of CPU) off the event loop, one at a
        # time: the loop keeps serving intake, replies and links meanwhile.
        self._render = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mail-render")

    async def run(self, stop: asyncio.Event, idle: float = 0.5) -> None:
        away = 0  # rounds the database did not answer, in a row
        try:
            while not stop.is_set():
                try:
                    started = await self.round()
                    away = 0
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                    away += 1
                    pause = min(10.0, 0.5 * 2 ** away)
                    log.warning("mailer database not answering; the courier waits",
                                error=repr(exc), retry_in=pause)
                    await asyncio.sleep(pause)
                    continue
                if not started:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(idle):
                            await self.wake.wait()
                else:
                    await asyncio.sleep(0)
                    await self._one_finished(idle)
        finally:
            if self._busy:
                await asyncio.gather(*self._busy.values(), return_exceptions=True)
            while not self._senders.empty():
                await self._senders.get_nowait().close()
            self._render.shutdown(wait=False)

    async def _one_finished(self, idle: float) -> None:
        if len(self._busy) >= self.workers:
            await asyncio.wait(self._busy.values(), timeout=idle,
                               return_when=asyncio.FIRST_COMPLETED)

    async def round(self) -> int:
        """Give partners with mail due to free workers; how many were started."""
        free = self.workers - len(self._busy)
        if free <= 0:
            return 0
        async with self.pool.acquire() as conn:
            due = [r["partner"] for r in await conn.fetch(
                "SELECT o.partner FROM mail_outgoing o "
                "LEFT JOIN mail_partners p ON p.partner = o.partner "
                "WHERE o.status = 'queued' AND p.handed_over_at IS NULL "
                "AND coalesce(p.next_attempt_at, '-infinity') <= clock_timestamp() "
                "GROUP BY o.partner ORDER BY min(o.id) LIMIT $1",
                self.workers * 2)]
        started = 0
        for partner in due:
            if partner in self._busy or started >= free:
                continue
            task = asyncio.create_task(self._partner(partner), name=f"mail:{partner}")
            self._busy[partner] = task
            task.add_done_callback(functools.partial(self._done, partner))
            started += 1
        return started

    def _done(self, partner: str, task: asyncio.Task[None]) -> None:
        self._busy.pop(partner, None)
        self.wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivering a partner's mail failed; it is tried again",
                      partner=partner, error=repr(task.exception()))

    async def _partner(self, partner: str) -> None:
        sender = await self._senders.get()
        try:
            async with self.pool.acquire() as conn:
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1)",
                                           lock_key(partner)):
                    return  # another mailer process is writing to this partner
                try:
                    await self._deliver_queued(conn, partner, sender)
                except Exception as exc:
                    # Kafka away while giving an e-mail up, a bug: the partner waits a
                    # minute rather than being tried again at once, for ever.
                    log.error("delivering a partner's mail failed; it waits a minute",
                              partner=partner, error=repr(exc), exc_info=exc)
                    await self._wait(conn, partner, 60.0, repr(exc))
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", lock_key(partner))
        finally:
            self._senders.put_nowait(sender)

    @staticmethod
    async def _wait(conn: asyncpg.Connection, partner: str, seconds: float, why: str) -> None:
        """The partner is not tried for ``seconds``; its failures are not counted (it is not
        its mailbox that failed)."""
        await conn.execute(
            "INSERT INTO mail_partners (partner, next_attempt_at, last_error) VALUES ($1, "
            "clock_timestamp() + make_interval(secs => $2), $3) ON CONFLICT (partner) DO "
            "UPDATE SET next_attempt_at = excluded.next_attempt_at, last_error = $3",
            partner, seconds, why)

    async def _deliver_queued(self, conn: asyncpg.Connection, partner: str,
                              sender: SmtpSender) -> None:
        rows = await conn.fetch(
            "SELECT o.*, t.reference, t.root_message_id FROM mail_outgoing o "
            "JOIN mail_threads t ON t.partner = o.partner AND t.buyer_box = o.source_box "
            "AND t.thread_key = o.thread_key "
            "WHERE o.partner = $1 AND o.status = 'queued' AND NOT EXISTS (SELECT 1 FROM "
            "mail_partners p WHERE p.partner = o.partner AND p.handed_over_at IS NOT NULL) "
            "ORDER BY o.id LIMIT $2",
            partner, self.batch)
        if not rows:
            return
        box = await self.directory.partner(partner)
        for row in rows:
            if box is None:
                if await self.directory.box(partner) is None:
                    await self.give_up(conn, row, f"partner {partner!r} is no longer in the "
                                       "network: nothing can be sent to it")
                    continue
                # A box now, its handover unfinished: its mail waits for the onboarding
                # (or `boxbus partner replay`) to write it into the box.
                log.warning("partner has a box now; its mail waits for its onboarding to "
                            "finish", partner=partner, queued=len(rows))
                await self._wait(conn, partner, 60.0, "has a box now: finish its onboarding "
                                 f"(boxbus partner onboard {partner} ...)")
                return
            try:
                answer = await self._send(conn, row, box, sender)
            except _Unmakeable as exc:  # this e-mail cannot be made: given up, the rest go
                log.error("e-mail could not be made; given up", partner=partner,
                          event_id=row["event_id"], type=row["event_type"],
                          error=repr(exc.cause), exc_info=exc.cause)
                await self.give_up(conn, row, f"the e-mail could not be made: {exc.cause!r}")
                continue
            if answer.outcome is Outcome.SENT:
                continue
            if answer.outcome is Outcome.PERMANENT:
                await self.give_up(conn, row, answer.detail)
                continue
            if answer.ours:  # the mailer's login or sender address: nobody's fault but ours
                await self._wait(conn, partner, 60.0, answer.detail)
                return
            if await self._defer(conn, partner, row["queued_at"], answer):
                return  # the partner waits; its next mail stays behind this one
            await self.give_up(conn, row, f"{box.email} could not be reached for "
                               f"{self.settings.mail_retry_hours:g} h; last answer: "
                               f"{answer.detail}")

    async def _send(self, conn: asyncpg.Connection, row: asyncpg.Record, box: Any,
                    sender: SmtpSender) -> Answer:
        try:
            event = await self.serde.decode(row["record_value"])
        except BadEvent as exc:
            # It decoded when it was queued: only a registry that lost the schema gets here.
            return Answer(Outcome.PERMANENT, f"the event cannot be read any more: {exc}")
        source = row["source_box"]
        now = datetime.now(UTC)
        token, nonce = self.invitations.make(row["partner"])
        await self.invitations.record(conn, row["partner"], nonce)
        to = Addressing(
            partner=Party(box.id, box.company), partner_email=box.email,
            language=box.language, sender=Party(source, self.directory.company(source)),
            mail_from=self.settings.mail_from, domain=self.settings.mail_domain,
            reply_to=self.addresses.reply(row["reference"]),
            thread_root=row["root_message_id"],
            invite_url=self.invitations.link(token), invite_until=self.invitations.until(now))
        try:
            mail = await asyncio.get_running_loop().run_in_executor(
                self._render, functools.partial(compose, event, to, sent_at=now))
        except Exception as exc:  # (a registry away raised above, and waits; not this)
            raise _Unmakeable(exc) from exc
        answer = await sender.send(mail.data, sender=self.addresses.bounce(row["id"]),
                                   recipient=box.email)
        if answer.outcome is Outcome.SENT:
            async with conn.transaction():
                await conn.execute(
                    "UPDATE mail_outgoing SET status = 'sent', sent_at = clock_timestamp(), "
                    "attempts = attempts + 1, message_id = $2, last_error = NULL "
                    "WHERE id = $1 AND status = 'queued'", row["id"], mail.message_id)
                await conn.execute(
                    "UPDATE mail_partners SET failing_since = NULL, failures = 0, "
                    "next_attempt_at = '-infinity', last_error = NULL WHERE partner = $1 "
                    "AND failures > 0", row["partner"])
            self.stats.sent += 1
            log.info("e-mail sent", partner=row["partner"], event_id=row["event_id"],
                     type=row["event_type"], message_id=mail.message_id,
                     correlation_id=event.meta.correlation_id)
        return answer

    async def _defer(self, conn: asyncpg.Connection, partner: str, queued_at: datetime,
                     answer: Answer) -> bool:
        """Note a temporary failure; whether the e-mail may still wait: each e-mail waits up
        to the retry window from when its partner began failing or from when it was queued,
        whichever is later (the tenth order behind a dead mailbox is given up a day after it
        was placed, not ten days later; one placed an hour ago still has its day)."""
        row = await conn.fetchrow(
            "INSERT INTO mail_partners (partner, failing_since, failures, last_error) "
            "VALUES ($1, clock_timestamp(), 1, $2) ON CONFLICT (partner) DO UPDATE SET "
            "failing_since = coalesce(mail_partners.failing_since, clock_timestamp()), "
            "failures = mail_partners.failures + 1, last_error = $2 "
            "RETURNING failures, clock_timestamp() - greatest(failing_since, $3) "
            "AS failing_for", partner, answer.detail, queued_at)
        self.stats.deferred += 1
        if row["failing_for"] >= self.retry_for:
            return False
        pause = pause_after(row["failures"], random.random())
        await conn.execute("UPDATE mail_partners SET next_attempt_at = clock_timestamp() + "
                           "make_interval(secs => $2) WHERE partner = $1", partner, pause)
        log.warning("partner's mailbox not reachable now; its mail waits", partner=partner,
                    failures=row["failures"], retry_in=round(pause, 1), reason=answer.detail)
        return True

    async def give_up(self, conn: asyncpg.Connection, row: asyncpg.Record, reason: str
                      ) -> None:
        """The e-mail cannot be delivered: the record to the partner's dead-letter topic,
        then the row ``dead`` and a REJECTED receipt for the sending box, together."""
        headers = headers_from_json(row["headers"])
        record = PlainRecord(row["record_topic"], row["record_partition"],
                             row["record_offset"], 0, row["record_key"], row["record_value"],
                             headers)
        letters = naming.partner_letters_topic(self.settings.topic_namespace, row["partner"])
        partner = await self.directory.box(row["partner"])
        if partner is not None:  # (a partner removed from the network has no topic left)
            await self.dead_letters.write(record, Undeliverable(reason), to=letters)
        async with conn.transaction():
            status = await conn.fetchval(
                "UPDATE mail_outgoing SET status = 'dead', last_error = $2, "
                "attempts = attempts + 1 WHERE id = $1 AND status IN ('queued', 'sent') "
                "RETURNING status", row["id"], reason)
            if status is not None and partner is not None:
                await self.outbox.publish(conn, _receipt(row, partner.region, headers, reason))
        self.stats.dead += 1
        log.error("e-mail given up", partner=row["partner"], event_id=row["event_id"],
                  type=row["event_type"], reason=reason,
                  correlation_id=dict(headers).get(CORRELATION_ID, b"").decode() or None)

    async def bounced(self, mail_id: int, reason: str) -> bool:
        """A bounce came back for e-mail ``mail_id``: given up like a 5xx."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM mail_outgoing WHERE id = $1", mail_id)
            if row is None or row["status"] == "dead":
                return False
            if await self.directory.partner(row["partner"]) is None:
                # It has a box now (its mail was replayed there), or it left: no one to tell.
                log.info("bounce of a partner that is no partner any more; ignored",
                         partner=row["partner"], event_id=row["event_id"])
                return False
            await self.give_up(conn, row, f"the e-mail bounced: {reason}")
            return True


def _receipt(row: asyncpg.Record, region: str, headers: Iterable[tuple[str, bytes]],
             reason: str) -> EventBase:
    now = datetime.now(UTC)
    correlation = dict(headers).get(CORRELATION_ID, b"").decode() or None
    return DeliveryReceipt(
        meta=EventMeta(event_id=f"mail-receipt-{row['event_id']}-{row['partner']}",
                       source_box=row["partner"], region=region,
                       aggregate_key=row["thread_key"], occurred_at=now,
                       target_box=row["source_box"], correlation_id=correlation,
                       causation_id=row["event_id"]),
        receipt_for_event_id=row["event_id"], receipt_for_type=row["event_type"],
        status=ReceiptStatus.REJECTED, reason=reason, processed_at=now)
