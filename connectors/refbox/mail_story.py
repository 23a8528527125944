"""The demo's chapter on a partner without a box: its order arrives by e-mail (in the local
SMTP server's Maildir, with the order's PDF and UBL and an invitation), its answer becomes a
comment in the buyer's box, it onboards with the invitation and finds its backlog in its new
box, and a small campaign of the head office fills a printer's spool. What a person can open
is written into ``out``."""

from __future__ import annotations

import email
import email.policy
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg

from bus.devstack import read_maildir
from bus.events.models import ContactKind, ContactUpserted, EventMeta
from connectors.mail.campaign import Template, contacts_of, send_campaign
from connectors.mail.onboarding import onboard
from connectors.refbox.actions import LineSpec
from connectors.refbox.network import LocalNetwork

Step = Callable[..., Awaitable[bool]]
CAMPAIGN = ("Subject: Our spring prices, {{ contact.name }}\n"
            "Dear {{ contact.name }},\n\nfrom Monday our prices change; the new list is "
            "enclosed with your next order.\n\nKind regards,\n{{ sender }}\n\n"
            "(No more letters like this: {{ unsubscribe_url }})\n")


@dataclass(frozen=True)
class MailSetup:
    key: bytes
    maildir: Path
    out: Path  # where the e-mail, its PDF and the spool go for a person to open
    smtp: tuple[str, int]


async def play_mail(network: LocalNetwork, step: Step, facts: dict[str, Any],
                    setup: MailSetup, *, buyer: str, partner: str, head_office: str,
                    region: str) -> None:
    shop = network.boxes[buyer]
    mailer = network.mailer
    assert mailer is not None and network.mailer_dsn is not None
    found: dict[str, Any] = {}
    setup.out.mkdir(parents=True, exist_ok=True)

    def arrived(order_id: str) -> EmailMessage | None:
        for stored in read_maildir(setup.maildir):
            if stored["X-Boxbus-Order"] == order_id:
                message = email.message_from_bytes(stored.as_bytes(),
                                                   policy=email.policy.default)
                assert isinstance(message, EmailMessage)
                return message
        return None

    async def order() -> str:
        found["order"] = await shop.place_order(partner, [
            LineSpec("trout-kg", Decimal(8), 1290, "Pstruh duhový / Форель", "kg"),
            LineSpec("carp-kg", Decimal("12.5"), 289, "Kapr živý", "kg")])
        return f"{buyer} ordered {found['order']} from {partner}, a partner without a box"

    async def in_maildir() -> bool:
        message = arrived(found.get("order", "?"))
        if message is None:
            return False
        eml = setup.out / f"{found['order']}.eml"
        eml.write_bytes(message.as_bytes())
        files = {"eml": str(eml)}
        for part in message.walk():
            name = part.get_filename()
            if name:
                path = setup.out / name
                content = part.get_payload(decode=True)
                path.write_bytes(content if isinstance(content, bytes) else b"")
                files["pdf" if name.endswith(".pdf") else "ubl"] = str(path)
        found["message"] = message
        facts["mail"] = {"maildir": str(setup.maildir), **files}
        return "pdf" in files and "ubl" in files

    async def what_arrived() -> str:
        mail = facts["mail"]
        return (f"subject {found['message']['Subject']!r}, with {Path(mail['pdf']).name} and "
                f"{Path(mail['ubl']).name}; open {mail['eml']} or {mail['pdf']}")

    await step(f"the order for {partner} arrives by e-mail with its PDF, its UBL and an "
               "invitation", order, in_maildir, what_arrived)

    async def answer() -> str:
        sent = found["message"]
        reply = EmailMessage()
        reply["From"] = f"Petr Novák <orders@{partner}.example>"
        reply["To"] = sent["Reply-To"]
        reply["Subject"] = f"Re: {sent['Subject']}"
        reply["Message-ID"] = make_msgid(domain=f"{partner}.example")
        reply["In-Reply-To"] = sent["Message-ID"]
        reply.set_content("We deliver on Thursday at 7.\n\nPetr\n\n"
                          f"On {datetime.now(UTC):%a, %d %b %Y} {buyer} wrote:\n> ...\n")
        assert mailer.listen is not None
        await aiosmtplib.send(reply, hostname=mailer.listen.host, port=mailer.listen.port)
        return f"{partner} answered the e-mail"

    async def commented() -> bool:
        view = await network.view(buyer)
        return any(c["order_id"] == found["order"] and c["origin_box"] == partner
                   for c in view["comments"])

    await step(f"{partner}'s answer is a comment in {buyer}'s box", answer, commented)

    async def join() -> str:
        body = found["message"].get_body(("plain",)).get_content()
        token = re.search(r"/invite/([A-Za-z0-9_.\-]+)", body)
        if token is None:
            raise RuntimeError("the e-mail carries no invitation link")
        done = await onboard(network.settings, network.kafka, network.mailer_dsn or "",
                             setup.key, partner, token.group(1), region, settle=10)
        await network.add_box(partner, region)
        return (f"{partner} onboarded into region {region} with the invitation; "
                f"{done.replayed + done.stragglers} event(s) mailed before were replayed")

    async def backlog() -> bool:
        view = await network.view(partner)
        return any(o["order_id"] == found["order"] for o in view["orders"])

    await step(f"{partner} onboards and finds its backlog in its new box", join, backlog)

    async def mailing() -> str:
        hq = network.boxes[head_office]
        now = datetime.now(UTC)
        people = [ContactUpserted(
            meta=EventMeta(event_id=str(uuid.uuid4()), source_box=head_office,
                           region=hq.region, aggregate_key=f"contact-{n:02d}",
                           occurred_at=now),
            contact_id=f"contact-{n:02d}", kind=ContactKind.PERSON,
            name=name, email=f"{name.split()[0].lower()}@customers.example",
            address=f"{n} Market Street") for n, name in enumerate(
                ["Anna Novák", "Olena Koval", "Jan Dvořák", "Ivan Petrenko", "Eva Svoboda",
                 "Marta Horák"], 1)]
        conn = await asyncpg.connect(network.dsns[head_office])
        try:
            async with conn.transaction():
                await hq.outbox.publish_many(conn, people)
        finally:
            await conn.close()
        await network.until(lambda: _published(network, head_office, hq.region, len(people)),
                            what="the head office's contacts")
        template = setup.out / "spring-prices.txt"
        template.write_text(CAMPAIGN, encoding="utf-8")
        result = await send_campaign(
            network.settings, network.kafka, network.serde, network.mailer_dsn or "",
            setup.key, box=head_office, region=hq.region, sender="Acme Retail",
            name="spring", template=Template.read(template), spool=setup.out / "spool",
            printer="front-desk", smtp=setup.smtp, rate=50)
        found["campaign"] = result
        facts["spool"] = str(setup.out / "spool" / "front-desk")
        return f"{head_office} sent its spring letter to {result.contacts} contacts"

    async def spooled() -> bool:
        folder = setup.out / "spool" / "front-desk"
        return bool(len(list(folder.glob("*.pdf"))) >= found["campaign"].letters > 0)

    async def where() -> str:
        return (f"{found['campaign'].sent} e-mails with one-click unsubscribe, "
                f"{found['campaign'].letters} letters in {facts['spool']}")

    await step("a small campaign of the head office: e-mails, and letters in the print "
               "spool", mailing, spooled, where)


async def _published(network: LocalNetwork, box: str, region: str, count: int) -> bool:
    return len(await contacts_of(network.kafka, network.serde,
                                 network.settings.topic_namespace, box, region)) >= count
