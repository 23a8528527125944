"""The mailer on the real path: reference boxes order from partners without a box; the router
puts the events on the mail topic; the mailer (its own Kafka user, its own PostgreSQL) sends
them to a real SMTP server; replies and bounces come back through its own SMTP endpoint."""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
import asyncpg
import pytest
from pypdf import PdfReader

from bus import Settings, naming
from bus.catalog import SchemaCatalog
from bus.deadletter import DeadLetter
from bus.devstack import StackInfo, procs
from bus.errors import RegistryUnavailable
from bus.events import EventBase
from bus.events.models import EventMeta, Line, Money, OrderKind, OrderPlaced
from bus.kafka import KafkaAccess
from bus.registry import SchemaRegistry
from bus.serde import EventSerde
from bus.topics import read_topic
from bus.topology import parse_topology
from connectors.mail import courier as courier_module
from connectors.mail.service import Endpoint, Mailer
from connectors.mail.ubl import CBC
from connectors.refbox import LineSpec
from connectors.refbox.network import LocalNetwork
from tests.mail.mailbox import Mailbox, Received

pytestmark = pytest.mark.stack

NETWORK = """\
regions:
  north: {partitions: 3}
  south: {partitions: 3}
boxes:
  - {id: shop, region: north, company: Corner Shop}
  - {id: deli, region: north, company: Deli Market}
  - {id: farm, region: south, company: Farma Říčany, kind: partner,
     email: orders@farm.example, language: cs}
  - {id: mill, region: south, company: Млин Полтава, kind: partner,
     email: orders@mill.example, language: uk}
  - {id: gone, region: north, company: Gone Ltd, kind: partner, email: nobody@gone.example}
  - {id: slow, region: north, company: Slow Ltd, kind: partner, email: orders@slow.example}
relationships:
  - {kind: trade, buyer: shop, supplier: farm}
  - {kind: trade, buyer: deli, supplier: farm}
  - {kind: trade, buyer: shop, supplier: mill}
  - {kind: trade, buyer: shop, supplier: gone}
  - {kind: trade, buyer: shop, supplier: slow}
"""
LINES = [LineSpec("carp-kg", Decimal("12.5"), 289, "Kapr živý / Короп", "kg"),
         LineSpec("pike", Decimal(3), 1450, "Štika obecná")]


@pytest.fixture(scope="module")
async def mailbox() -> AsyncIterator[Mailbox]:
    box = await Mailbox().start()
    yield box
    await box.stop()


@pytest.fixture(scope="module")
async def network(settings: Settings, stack: StackInfo, kafka: KafkaAccess, mailbox: Mailbox,
                  ) -> AsyncIterator[LocalNetwork]:
    assert stack.database_url and stack.schema_registry_url
    ns_settings = Settings(run_dir=settings.run_dir, topic_namespace=f"ml{uuid.uuid4().hex[:8]}",
                           mail_domain="bus.test")
    serde = EventSerde(SchemaRegistry(stack.schema_registry_url), SchemaCatalog.load())
    async with LocalNetwork(ns_settings, kafka, stack.database_url, serde,
                            parse_topology(NETWORK)) as running:
        await running.add_mailer(key=b"test key", smtp_host=mailbox.host,
                                 smtp_port=mailbox.port,
                                 replies=Endpoint("127.0.0.1", procs.free_ports(1)[0]))
        yield running
        assert running.failed() == []


def mailer_of(network: LocalNetwork) -> Mailer:
    assert network.mailer is not None
    return network.mailer


def about(mailbox: Mailbox, orders: set[str]) -> list[Received]:
    return [r for r in mailbox.received if r.message["X-Boxbus-Order"] in orders]


def attachment(message: EmailMessage, suffix: str) -> bytes:
    for part in message.iter_attachments():
        if (part.get_filename() or "").endswith(suffix):
            return bytes(part.get_content())
    raise AssertionError(f"no {suffix} attached to {message['Subject']}")


async def test_events_for_partners_arrive_as_threaded_e_mails(network: LocalNetwork,
                                                              mailbox: Mailbox) -> None:
    shop = network.boxes["shop"]
    farm = [await shop.place_order("farm", LINES) for _ in range(3)]
    mill = [await shop.place_order("mill", LINES[:1]) for _ in range(2)]
    await shop.comment(farm[0], "Můžete dodat v pátek? <b>díky</b>", author="Jana")
    await shop.amend_order(farm[1], LINES[:1])
    await shop.cancel_order(mill[1], "store closed")
    expected = 3 + 2 + 3  # the orders, a comment, an amendment, a cancellation

    async def all_there() -> bool:
        return len(about(mailbox, {*farm, *mill})) >= expected
    await network.until(all_there, what="the partners' e-mails")
    got = about(mailbox, {*farm, *mill})
    assert len(got) == expected
    assert len({r.message["Message-ID"] for r in got}) == expected
    assert {r.rcpt_tos[0] for r in got if r.message["X-Boxbus-Order"] in farm} == \
        {"orders@farm.example"}

    # One thread per order: later e-mails refer to the order's first one.
    first = {r.message["X-Boxbus-Order"]: r.message for r in got
             if r.message["X-Boxbus-Event-Type"] == "boxbus.orders.OrderPlaced"}
    for r in got:
        if r.message["X-Boxbus-Event-Type"] != "boxbus.orders.OrderPlaced":
            root = first[r.message["X-Boxbus-Order"]]["Message-ID"]
            assert r.message["In-Reply-To"] == root and r.message["References"] == root

    # In each partner's language, with the order's PDF and UBL.
    placed = first[farm[2]]
    assert placed["Subject"].startswith("Objednávka") and placed["Content-Language"] == "cs"
    pdf = " ".join(p.extract_text() for p in
                   PdfReader(io.BytesIO(attachment(placed, ".pdf"))).pages)
    for text in (farm[2], "Kapr živý / Короп", "Štika obecná", "Celkem", "79.63 EUR",
                 "Farma Říčany"):
        assert text in pdf, (text, pdf)
    ubl = ET.fromstring(attachment(placed, ".ubl.xml"))
    assert ubl.findtext(f"{{{CBC}}}ID") == farm[2]
    assert first[mill[0]]["Subject"].startswith("Замовлення")
    comment = next(r.message for r in got
                   if r.message["X-Boxbus-Event-Type"] == "boxbus.collaboration.CommentAdded")
    html = comment.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "&lt;b&gt;díky&lt;/b&gt;" in html and "<b>díky" not in html
    # Every e-mail invites the partner to a box of its own, and is answered to its order.
    text = placed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "/invite/" in text
    assert placed["Reply-To"].addresses[0].addr_spec.startswith("reply+")


async def test_a_reply_becomes_one_comment_in_the_buyer_box(network: LocalNetwork,
                                                            mailbox: Mailbox) -> None:
    shop = network.boxes["shop"]
    order = await shop.place_order("farm", LINES[:1])

    async def mailed() -> bool:
        return bool(about(mailbox, {order}))
    await network.until(mailed, what="the order's e-mail")
    sent = about(mailbox, {order})[0].message
    reply_to = sent["Reply-To"].addresses[0].addr_spec
    reply = EmailMessage()
    reply["From"] = "Petr Novák <petr@farm.example>"
    reply["To"] = reply_to
    reply["Subject"] = f"Re: {sent['Subject']}"
    reply["Message-ID"] = make_msgid(domain="farm.example")
    reply["In-Reply-To"] = sent["Message-ID"]
    reply.set_content("Dodáme ve čtvrtek ráno.\n\nPetr\n\n"
                      f"Dne 30. 11. 2026 v 9:30 Corner Shop <{reply_to}> napsal(a):\n"
                      "> Corner Shop u vás objednává následující.\n")
    endpoint = mailer_of(network).listen
    assert endpoint is not None
    for _ in range(2):  # a server that delivers it twice: still one comment
        await aiosmtplib.send(reply, hostname=endpoint.host, port=endpoint.port)

    async def commented() -> bool:
        view = await network.view("shop")
        return any(c["order_id"] == order for c in view["comments"])
    await network.until(commented, what="the reply as a comment in the shop's box")
    await network.until(lambda: _relayed(network), what="the mailer's outbox to drain")
    comments = [c for c in (await network.view("shop"))["comments"] if c["order_id"] == order]
    assert len(comments) == 1
    assert comments[0]["origin_box"] == "farm" and comments[0]["author"] == "Petr Novák"
    assert comments[0]["text"] == "Dodáme ve čtvrtek ráno.\n\nPetr"

    # An address the mailer did not make is refused, before any data.
    forged = reply_to.replace("reply+", "reply+x")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await aiosmtplib.send(reply, hostname=endpoint.host, port=endpoint.port,
                              recipients=[forged])
    # The reply address is in every e-mail of the order, so it is no secret: an answer from
    # outside the partner's domain, or one without a word of its own, is refused.
    del reply["From"], reply["Message-ID"]
    reply["From"], reply["Message-ID"] = "someone@elsewhere.example", make_msgid()
    with pytest.raises(aiosmtplib.SMTPDataError, match=r"farm\.example"):
        await aiosmtplib.send(reply, hostname=endpoint.host, port=endpoint.port)
    quoted = EmailMessage()
    quoted["From"], quoted["To"], quoted["Subject"] = "petr@farm.example", reply_to, "Re"
    quoted.set_content("> Corner Shop u vás objednává následující.\n")
    with pytest.raises(aiosmtplib.SMTPDataError, match="no text of its own"):
        await aiosmtplib.send(quoted, hostname=endpoint.host, port=endpoint.port)
    assert len([c for c in (await network.view("shop"))["comments"]
                if c["order_id"] == order]) == 1


async def _relayed(network: LocalNetwork) -> bool:
    conn = await asyncpg.connect(network.mailer_dsn)
    try:
        return not await conn.fetchval("SELECT count(*) FROM boxbus_outbox")
    finally:
        await conn.close()


async def receipts(network: LocalNetwork, partner: str) -> list[dict[str, object]]:
    return [r for r in (await network.view("shop"))["receipts"] if r["from_box"] == partner]


async def test_a_refused_mailbox_is_dead_lettered_and_its_sender_told(
        network: LocalNetwork, mailbox: Mailbox, kafka: KafkaAccess) -> None:
    shop = network.boxes["shop"]
    lost = await shop.place_order("gone", LINES[:1])
    fine = await shop.place_order("farm", LINES[:1])

    async def told() -> bool:
        return bool(await receipts(network, "gone"))
    await network.until(told, what="the sender's receipt of the undeliverable order")
    receipt = (await receipts(network, "gone"))[0]
    assert receipt["status"] == "REJECTED" and "550" in str(receipt["reason"])
    assert receipt["event_type"] == "boxbus.orders.OrderPlaced"
    letters = await read_topic(kafka, naming.partner_letters_topic(
        network.settings.topic_namespace, "gone"))
    [letter] = [DeadLetter.from_record(r) for r in letters if r.key == lost.encode()]
    assert letter.code == "undeliverable-mail" and "no such mailbox" in letter.reason
    assert not about(mailbox, {lost})

    async def others_get_theirs() -> bool:
        return bool(about(mailbox, {fine}))
    await network.until(others_get_theirs, what="the other partner's e-mail")


async def test_an_unreachable_mailbox_waits_alone_then_is_given_up(
        network: LocalNetwork, mailbox: Mailbox) -> None:
    shop = network.boxes["shop"]
    mailbox.down.add("orders@slow.example")
    first = await shop.place_order("slow", LINES[:1])
    second = await shop.place_order("slow", LINES[:1])
    other = await shop.place_order("mill", LINES[:1])

    async def others_get_theirs() -> bool:
        return bool(about(mailbox, {other}))
    await network.until(others_get_theirs, what="the other partner's e-mail")
    conn = await asyncpg.connect(network.mailer_dsn)
    try:
        async def waiting() -> bool:
            row = await conn.fetchrow("SELECT failures, next_attempt_at > clock_timestamp() "
                                      "AS later FROM mail_partners WHERE partner = 'slow'")
            return row is not None and row["failures"] >= 1 and row["later"]
        await network.until(waiting, what="the slow partner to wait")
        queued = await conn.fetchval("SELECT count(*) FROM mail_outgoing WHERE partner = "
                                     "'slow' AND status = 'queued'")
        assert queued == 2  # the second waits behind the first: their order holds
        # Failing for a day, but its e-mails were queued just now: each has its own day.
        tries = await conn.fetchval("SELECT failures FROM mail_partners WHERE partner = "
                                    "'slow'")
        await conn.execute("UPDATE mail_partners SET failing_since = clock_timestamp() - "
                           "interval '25 hours', next_attempt_at = '-infinity' "
                           "WHERE partner = 'slow'")
        mailer_of(network).courier.wake.set()  # type: ignore[union-attr]

        async def tried_again() -> bool:
            return bool(await conn.fetchval("SELECT failures FROM mail_partners WHERE "
                                            "partner = 'slow'") > tries)
        await network.until(tried_again, what="another try of the slow partner")
        assert await conn.fetchval("SELECT count(*) FROM mail_outgoing WHERE partner = "
                                   "'slow' AND status = 'queued'") == 2
        # Its head e-mail was queued a day ago too: given up; the next one still has its day.
        await conn.execute("UPDATE mail_partners SET next_attempt_at = '-infinity' "
                           "WHERE partner = 'slow'")
        await conn.execute("UPDATE mail_outgoing SET queued_at = queued_at - interval "
                           "'25 hours' WHERE id = (SELECT min(id) FROM mail_outgoing WHERE "
                           "partner = 'slow')")
        mailer_of(network).courier.wake.set()  # type: ignore[union-attr]

        async def given_up() -> bool:
            status = await conn.fetchval("SELECT status FROM mail_outgoing WHERE partner = "
                                         "'slow' ORDER BY id LIMIT 1")
            return bool(status == "dead")
        await network.until(given_up, what="the first e-mail to be given up")
    finally:
        await conn.close()

    async def told() -> bool:
        return bool(await receipts(network, "slow"))
    await network.until(told, what="the sender's receipt")
    reason = str((await receipts(network, "slow"))[0]["reason"])
    assert "could not be reached for 24 h" in reason and "451" in reason
    mailbox.down.discard("orders@slow.example")
    conn = await asyncpg.connect(network.mailer_dsn)
    try:
        await conn.execute("UPDATE mail_partners SET next_attempt_at = '-infinity' "
                           "WHERE partner = 'slow'")
    finally:
        await conn.close()
    mailer_of(network).courier.wake.set()  # type: ignore[union-attr]

    async def second_sent() -> bool:
        return bool(about(mailbox, {second}))
    await network.until(second_sent, what="the second e-mail once the mailbox is back")
    assert not about(mailbox, {first})


def report(recipient: str, action: str, status: str) -> EmailMessage:
    """A delivery status notification (RFC 3464) as a receiving server sends one back."""
    raw = ("From: Mail Delivery System <MAILER-DAEMON@mx.partners.example>\r\n"
           "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
           "--b\r\nContent-Type: text/plain\r\n\r\nThe mailbox is full.\r\n"
           "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
           "Reporting-MTA: dns; mx.partners.example\r\n\r\n"
           f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\n"
           f"Status: {status}\r\nDiagnostic-Code: smtp; 552 mailbox full\r\n\r\n--b--\r\n")
    message = email.message_from_bytes(raw.encode(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_a_bounce_gives_its_e_mail_up_and_nothing_else_does(
        network: LocalNetwork, mailbox: Mailbox) -> None:
    shop = network.boxes["shop"]
    order = await shop.place_order("mill", LINES[:1])

    async def mailed() -> bool:
        return bool(about(mailbox, {order}))
    await network.until(mailed, what="the order's e-mail")
    sent = about(mailbox, {order})[0]
    assert sent.mail_from.startswith("bounce+")
    endpoint = mailer_of(network).listen
    assert endpoint is not None

    async def deliver(message: EmailMessage) -> None:
        await aiosmtplib.send(message, sender="", recipients=[sent.mail_from],
                              hostname=endpoint.host, port=endpoint.port)

    # An out-of-office answer and a "delayed" warning reach the bounce address too: taken,
    # and the order stays delivered.
    away = EmailMessage()
    away["From"], away["Subject"] = "orders@mill.example", "Out of office until Monday"
    away.set_content("I am away.")
    await deliver(away)
    await deliver(report("orders@mill.example", "delayed", "4.2.2"))
    await asyncio.sleep(1)
    assert not [r for r in await receipts(network, "mill") if r["status"] == "REJECTED"]

    await deliver(report("orders@mill.example", "failed", "5.2.2"))

    async def told() -> bool:
        return any(r["status"] == "REJECTED" for r in await receipts(network, "mill"))
    await network.until(told, what="the sender's receipt of the bounce")
    reason = next(str(r["reason"]) for r in await receipts(network, "mill"))
    assert "bounced" in reason and "5.2.2" in reason and "552 mailbox full" in reason


def reply_to(sent: EmailMessage, text: str) -> EmailMessage:
    answer = EmailMessage()
    answer["From"], answer["To"] = "petr@farm.example", sent["Reply-To"]
    answer["Subject"], answer["Message-ID"] = f"Re: {sent['Subject']}", make_msgid()
    answer.set_content(text)
    return answer


async def test_two_boxes_with_the_same_order_id_keep_their_conversations_apart(
        network: LocalNetwork, mailbox: Mailbox) -> None:
    same = f"PO-{uuid.uuid4().hex[:6]}"  # both boxes number their orders this way
    for box in ("shop", "deli"):
        buyer = network.boxes[box]
        order = OrderPlaced(
            meta=EventMeta(event_id=str(uuid.uuid4()), source_box=box, region="north",
                           aggregate_key=same, occurred_at=datetime.now(UTC),
                           target_box="farm", correlation_id=same),
            order_id=same, kind=OrderKind.PURCHASE_ORDER, buyer_box=box,
            supplier_email="orders@farm.example",
            lines=(Line(line_no=1, sku="carp", description="Carp", quantity=Decimal(1),
                        unit="kg", unit_price=Money(amount_minor=289, currency="EUR")),),
            total=Money(amount_minor=289, currency="EUR"))
        conn = await asyncpg.connect(network.dsns[box])
        try:
            async with conn.transaction():
                await buyer.outbox.publish(conn, order)
        finally:
            await conn.close()

    async def both() -> bool:
        return len(about(mailbox, {same})) == 2
    await network.until(both, what="both boxes' e-mails")
    mails = {m.message["From"].addresses[0].display_name: m.message
             for m in about(mailbox, {same})}
    assert mails["Corner Shop"]["Reply-To"] != mails["Deli Market"]["Reply-To"]
    endpoint = mailer_of(network).listen
    assert endpoint is not None
    await aiosmtplib.send(reply_to(mails["Deli Market"], "For the deli: tomorrow."),
                          hostname=endpoint.host, port=endpoint.port)

    async def at_deli() -> bool:
        return any(c["order_id"] == same for c in (await network.view("deli"))["comments"])
    await network.until(at_deli, what="the answer in the deli's box")
    await asyncio.sleep(1)
    assert not [c for c in (await network.view("shop"))["comments"] if c["order_id"] == same]


async def test_the_reply_endpoint_asks_to_try_again_when_it_cannot_take_a_reply(
        network: LocalNetwork, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    order = await network.boxes["shop"].place_order("farm", LINES[:1])

    async def mailed() -> bool:
        return bool(about(mailbox, {order}))
    await network.until(mailed, what="the order's e-mail")
    mailer = mailer_of(network)
    assert mailer.listen is not None
    answer = reply_to(about(mailbox, {order})[0].message, "Yes, Friday.")

    async def registry_away(*_: object, **__: object) -> object:
        raise RegistryUnavailable("the schema registry does not answer")
    monkeypatch.setattr(mailer.outbox, "encode", registry_away)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await aiosmtplib.send(answer, hostname=mailer.listen.host, port=mailer.listen.port)
    assert refused.value.code == 451  # the sending server keeps it and tries again
    monkeypatch.undo()
    await aiosmtplib.send(answer, hostname=mailer.listen.host, port=mailer.listen.port)

    async def commented() -> bool:
        return any(c["order_id"] == order for c in (await network.view("shop"))["comments"])
    await network.until(commented, what="the answer, taken the second time")


async def test_an_e_mail_that_cannot_be_made_is_given_up_and_the_rest_go(
        network: LocalNetwork, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    shop = network.boxes["shop"]
    real = courier_module.compose  # type: ignore[attr-defined]

    def compose(event: EventBase, *args: object, **kwargs: object) -> object:
        if getattr(event, "notes", None) == "unmakeable":
            raise RuntimeError("a template cannot lay this out")
        return real(event, *args, **kwargs)  # type: ignore[arg-type]
    # In place before the order exists: the mailer may make its e-mail at once.
    monkeypatch.setattr(courier_module, "compose", compose)
    broken = await shop.place_order("mill", LINES[:1], notes="unmakeable")
    fine = await shop.place_order("mill", LINES[:1])

    async def told() -> bool:
        return any("cannot lay this out" in str(r["reason"])
                   for r in await receipts(network, "mill"))
    try:
        await network.until(told, timeout=60,
                            what="the sender told of the e-mail that could not be made")
    except TimeoutError:
        conn = await asyncpg.connect(network.mailer_dsn)
        try:
            state = [dict(r) for r in await conn.fetch(
                "SELECT * FROM mail_partners WHERE partner = 'mill'")]
            rows = [dict(r) for r in await conn.fetch(
                "SELECT event_id, status, attempts, last_error FROM mail_outgoing WHERE "
                "partner = 'mill' ORDER BY id")]
        finally:
            await conn.close()
        raise AssertionError(f"mill: {state}; its e-mails: {rows}") from None

    async def the_next_went() -> bool:
        return bool(about(mailbox, {fine}))
    await network.until(the_next_went, what="the partner's next e-mail")
    assert not about(mailbox, {broken})
