"""A campaign of a box to its 1,000 contacts (from its own ContactUpserted events, through
the router): 50 unsubscribed before and 20 bouncing leave exactly 930 e-mails and 930 PDF
letters in the printer's spool; a campaign stopped halfway and run again sends nobody twice;
a one-click unsubscribe keeps that contact out of the next one; a merge field a contact
lacks fails the preview."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiosmtplib
import asyncpg
import httpx
import pytest
from pypdf import PdfReader

from bus import Settings
from bus.catalog import SchemaCatalog
from bus.devstack import StackInfo, procs
from bus.errors import ConfigError
from bus.events.models import ContactKind, ContactUpserted, EventMeta
from bus.kafka import KafkaAccess
from bus.registry import SchemaRegistry
from bus.serde import EventSerde
from bus.topology import parse_topology
from connectors.mail.campaign import Template, contacts_of, render, send_campaign, suppress
from connectors.mail.service import Endpoint
from connectors.refbox.network import LocalNetwork
from tests.mail.mailbox import Mailbox
from tests.mail.test_mailer import report

pytestmark = pytest.mark.stack

NETWORK = """\
regions:
  north: {partitions: 3}
boxes:
  - {id: hq, region: north, company: Acme Retail}
"""
KEY = b"campaign test key"
CONTACTS = 1000
TEMPLATE = ("Subject: Spring prices for {{ contact.company or contact.name }}\n"
            "Dear {{ contact.name }},\n\nour new prices start on Monday.\n\n"
            "Kind regards,\n{{ sender }}\n\nNo more of these: {{ unsubscribe_url }}\n")


def email_of(n: int) -> str:
    if n % 50 == 7:  # 20 of them: their server refuses them for good
        return f"nobody{n}@bounce.example"
    return f"person{n}@customers.example"


@pytest.fixture(scope="module")
async def network(settings: Settings, stack: StackInfo, kafka: KafkaAccess
                  ) -> AsyncIterator[tuple[LocalNetwork, Mailbox, Settings]]:
    assert stack.database_url and stack.schema_registry_url
    port = procs.free_ports(1)[0]
    ns_settings = Settings(run_dir=settings.run_dir, topic_namespace=f"cm{uuid.uuid4().hex[:8]}",
                           mail_public_url=f"http://127.0.0.1:{port}")
    serde = EventSerde(SchemaRegistry(stack.schema_registry_url), SchemaCatalog.load())
    mailbox = await Mailbox().start()
    async with LocalNetwork(ns_settings, kafka, stack.database_url, serde,
                            parse_topology(NETWORK)) as running:
        await running.add_mailer(key=KEY, smtp_host=mailbox.host, smtp_port=mailbox.port,
                                 http=Endpoint("127.0.0.1", port),
                                 replies=Endpoint("127.0.0.1", procs.free_ports(1)[0]))
        hq = running.boxes["hq"]
        now = datetime.now(UTC)
        contacts = [ContactUpserted(
            meta=EventMeta(event_id=str(uuid.uuid4()), source_box="hq", region="north",
                           aggregate_key=f"c{n:04d}", occurred_at=now),
            contact_id=f"c{n:04d}", kind=ContactKind.PERSON, name=f"Customer {n} Dvořák",
            email=email_of(n), company="Kavárna Říčany" if n % 2 else None,
            address=f"Náměstí {n}\nPraha") for n in range(CONTACTS)]
        conn = await asyncpg.connect(running.dsns["hq"])
        try:
            async with conn.transaction():
                await hq.outbox.publish_many(conn, contacts)
        finally:
            await conn.close()

        async def published() -> bool:
            return len(await contacts_of(kafka, serde, ns_settings.topic_namespace, "hq",
                                         "north")) == CONTACTS
        await running.until(published, timeout=60, what="the contacts on the region topic")
        yield running, mailbox, ns_settings
        assert running.failed() == []
    await mailbox.stop()


async def test_a_campaign_reaches_930_of_1000_and_resumes_without_repeating(
        network: tuple[LocalNetwork, Mailbox, Settings], kafka: KafkaAccess,
        tmp_path: Path) -> None:
    net, mailbox, settings = network
    assert net.mailer_dsn
    conn = await asyncpg.connect(net.mailer_dsn)
    try:
        for n in range(0, CONTACTS, 20):  # 50 unsubscribed before
            await suppress(conn, "hq", email_of(n), "unsubscribed")
    finally:
        await conn.close()
    smtp = (mailbox.host, mailbox.port)

    class Stop(Exception):
        pass

    def stop_halfway(done: int, total: int) -> None:
        if done == 400:
            raise Stop

    async def run(name: str, progress: object = None) -> object:
        return await send_campaign(
            settings, kafka, net.serde, net.mailer_dsn or "", KEY, box="hq", region="north",
            sender="Acme Retail", name=name, template=Template.read(template_file),
            spool=tmp_path / "spool", printer="front-desk", smtp=smtp, rate=2000,
            **({"progress": progress} if progress else {}))  # type: ignore[arg-type]

    template_file = tmp_path / "spring.txt"
    template_file.write_text(TEMPLATE)
    with pytest.raises(Stop):
        await run("spring", stop_halfway)
    result = await run("spring")
    assert result.contacts == CONTACTS  # type: ignore[attr-defined]
    # Suppressed now: the 50 unsubscribed, and those that bounced before it was stopped.
    assert 50 <= result.suppressed < 70 and result.bounced > 0  # type: ignore[attr-defined]
    sent = [r for r in mailbox.received if r.message["Message-ID"].startswith("<spring.")]
    assert len({r.message["Message-ID"] for r in sent}) == 930
    assert len(sent) <= 931  # at most the one in flight when it stopped came twice
    letters = sorted((tmp_path / "spool" / "front-desk").glob("*.pdf"))
    assert len(letters) == 930 and not list((tmp_path / "spool").rglob(".spooling-*"))
    text = PdfReader(letters[0]).pages[0].extract_text()
    assert "Dvořák" in text and "Náměstí" in text
    assert not [r for r in sent if r.rcpt_tos[0].startswith("nobody")]
    again = await run("spring")
    assert again.sent == 0 and again.suppressed == 70  # type: ignore[attr-defined]

    html = sent[0].message.get_body(("html",))
    assert html is not None and "Dear Customer" in str(html.get_content())
    assert "Kind regards,<br>Acme Retail" in str(html.get_content())

    # A bounce that comes later, to the e-mail's own (signed) bounce address: suppressed.
    later = sent[1]
    assert later.mail_from.startswith("bounce+c")
    mailer = net.mailer
    assert mailer is not None and mailer.listen is not None
    await aiosmtplib.send(report(later.rcpt_tos[0], "failed", "5.1.1"), sender="",
                          recipients=[later.mail_from], hostname=mailer.listen.host,
                          port=mailer.listen.port)
    conn = await asyncpg.connect(net.mailer_dsn)
    try:
        async def suppressed_now() -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM mail_suppressed WHERE "
                                            "box = 'hq' AND email = $1", later.rcpt_tos[0]))
        await net.until(suppressed_now, what="the bounced address suppressed")
    finally:
        await conn.close()

    # One click in a mail client: the contact is out of the next campaign.
    chosen = sent[0].message
    assert chosen["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = "".join(str(chosen["List-Unsubscribe"]).split()).strip("<>")
    async with httpx.AsyncClient() as client:
        page = await client.get(url)
        assert page.status_code == 200 and "Unsubscribe" in page.text
        clicked = await client.post(url, content=b"List-Unsubscribe=One-Click",
                                    headers={"Content-Type":
                                             "application/x-www-form-urlencoded"})
        assert clicked.status_code == 200 and "no more mailings" in clicked.text
        forged = await client.post(url.replace("person", "persoN"))
        assert forged.status_code == 400
    summer = await run("summer")
    assert summer.sent == 928  # type: ignore[attr-defined]
    reached = {r.rcpt_tos[0] for r in mailbox.received
               if r.message["Message-ID"].startswith("<summer.")}
    assert len(reached) == 928 and later.rcpt_tos[0] not in reached
    assert chosen["To"].split("<")[-1].strip(">") not in reached


async def test_a_merge_field_a_contact_lacks_fails_the_preview(
        network: tuple[LocalNetwork, Mailbox, Settings], kafka: KafkaAccess) -> None:
    net, _, settings = network
    [first, *_] = await contacts_of(kafka, net.serde, settings.topic_namespace, "hq", "north")
    template = Template("Hello {{ contact.name }}", "Your fax: {{ contact.fax }}")
    with pytest.raises(ConfigError, match="fax") as refused:
        render(template, first, "Acme", "spring", "https://x.example/u")
    assert refused.value.hint and "contact.email" in refused.value.hint
    merged = render(Template("Hi {{ contact.name }}", "{{ contact.company }}!"), first,
                    "Acme", "spring", "https://x.example/u")
    assert merged.subject == f"Hi {first.name}"
