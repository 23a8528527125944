"""A partner without a box gets orders by e-mail, onboards with the invitation token from one
of them, and its new box holds everything mailed to it (once, in order) and what follows
(by the bus, no longer by e-mail); the topology file cannot silently turn it back."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage

import aiosmtplib
import asyncpg
import pytest

from bus import Settings, naming
from bus.catalog import SchemaCatalog
from bus.devstack import StackInfo, procs
from bus.errors import BoxbusError
from bus.kafka import KafkaAccess
from bus.registry import SchemaRegistry
from bus.serde import EventSerde
from bus.topics import read_topic
from bus.topology import make_plan, parse_topology
from connectors.mail.onboarding import MAILED, onboard, replay
from connectors.mail.service import Endpoint
from connectors.refbox.network import LocalNetwork
from tests.mail.mailbox import Mailbox
from tests.mail.test_mailer import LINES

pytestmark = pytest.mark.stack

NETWORK = """\
regions:
  north: {partitions: 3}
  south: {partitions: 3}
boxes:
  - {id: shop, region: north, company: Corner Shop}
  - {id: farm, region: south, company: Farma Říčany, kind: partner,
     email: orders@farm.example, language: cs}
relationships:
  - {kind: trade, buyer: shop, supplier: farm}
"""
KEY = b"onboarding test key"


@pytest.fixture
async def network(settings: Settings, stack: StackInfo, kafka: KafkaAccess
                  ) -> AsyncIterator[tuple[LocalNetwork, Mailbox]]:
    assert stack.database_url and stack.schema_registry_url
    ns_settings = Settings(run_dir=settings.run_dir, topic_namespace=f"ob{uuid.uuid4().hex[:8]}")
    serde = EventSerde(SchemaRegistry(stack.schema_registry_url), SchemaCatalog.load())
    mailbox = await Mailbox().start()
    async with LocalNetwork(ns_settings, kafka, stack.database_url, serde,
                            parse_topology(NETWORK)) as running:
        await running.add_mailer(key=KEY, smtp_host=mailbox.host, smtp_port=mailbox.port,
                                 replies=Endpoint("127.0.0.1", procs.free_ports(1)[0]))
        yield running, mailbox
        assert running.failed() == []
    await mailbox.stop()


async def test_onboarding_brings_the_backlog_once_in_order_then_the_bus_takes_over(
        network: tuple[LocalNetwork, Mailbox], kafka: KafkaAccess) -> None:
    net, mailbox = network
    shop = net.boxes["shop"]
    orders = [await shop.place_order("farm", LINES) for _ in range(3)]

    async def mailed() -> bool:
        return len(mailbox.to("orders@farm.example")) >= 3
    await net.until(mailed, what="the three orders' e-mails")
    # Its mailbox is away for the next two: they are still queued when it onboards.
    mailbox.down.add("orders@farm.example")
    await shop.comment(orders[0], "Pátek?", author="Jana")
    await shop.amend_order(orders[1], LINES[:1])
    assert net.mailer_dsn
    conn = await asyncpg.connect(net.mailer_dsn)
    try:
        async def queued() -> bool:
            waiting = await conn.fetchval("SELECT count(*) FROM mail_outgoing WHERE "
                                          "partner = 'farm' AND status = 'queued'")
            return bool(waiting == 2)
        await net.until(queued, what="two e-mails waiting for the partner's mailbox")
    finally:
        await conn.close()
    text = mailbox.to("orders@farm.example")[-1].message.get_body(("plain",))
    assert text is not None
    found = re.search(r"/invite/([A-Za-z0-9_.\-]+)", str(text.get_content()))
    assert found
    token = found.group(1)

    # A token for another partner, or altered, changes nothing.
    with pytest.raises(BoxbusError, match="altered"):
        await onboard(net.settings, kafka, net.mailer_dsn, KEY, "farm", token[:-3] + "xyz",
                      "south")
    done = await onboard(net.settings, kafka, net.mailer_dsn, KEY, "farm", token, "south",
                         settle=15)
    assert done.replayed + done.stragglers == 5
    assert any(change.startswith("create-principal") for change in done.applied)
    with pytest.raises(BoxbusError, match=r"box already|used already"):
        await onboard(net.settings, kafka, net.mailer_dsn, KEY, "farm", token, "south")

    await net.add_box("farm", "south")

    async def arrived() -> bool:
        view = await net.view("farm")
        return (len([o for o in view["orders"] if o["order_id"] in orders]) == 3
                and any(c["order_id"] == orders[0] for c in view["comments"]))
    await net.until(arrived, timeout=60, what="the backlog in the new box")
    view = await net.view("farm")
    mine = [o for o in view["orders"] if o["order_id"] in orders]
    # Each order's events in their order (an order's events share a partition, as the
    # router keeps them): the amendment came after its order, the comment after its order.
    assert sorted(o["order_id"] for o in mine) == sorted(orders)
    assert {o["role"] for o in mine} == {"sales"}
    assert next(o for o in mine if o["order_id"] == orders[1])["lines"] == 1  # amended
    assert len([c for c in view["comments"] if c["order_id"] == orders[0]]) == 1

    inbox = await read_topic(kafka, naming.inbox_topic(net.settings.topic_namespace, "farm"))
    replayed = [r for r in inbox if MAILED in dict(r.headers)]
    # Each says when its e-mail went; the two never sent say nothing.
    assert len(replayed) == 5 and sum(1 for r in replayed if dict(r.headers)[MAILED]) == 3

    # From now on the bus, not the mail: a new order reaches the box, and no e-mail goes.
    before = len(mailbox.to("orders@farm.example"))
    later = await shop.place_order("farm", LINES[:1])

    async def by_bus() -> bool:
        return any(o["order_id"] == later for o in (await net.view("farm"))["orders"])
    await net.until(by_bus, what="the new order in the box")
    await asyncio.sleep(1)
    assert len(mailbox.to("orders@farm.example")) == before
    # An answer to an e-mail from before is refused now: the partner answers in its box.
    sent = mailbox.to("orders@farm.example")[0].message
    answer = EmailMessage()
    answer["From"], answer["Subject"] = "orders@farm.example", "Re: order"
    answer["To"] = sent["Reply-To"]
    answer.set_content("Late answer by e-mail.")
    endpoint = net.mailer.listen if net.mailer else None
    assert endpoint is not None
    with pytest.raises(aiosmtplib.SMTPDataError, match="box of its own"):
        await aiosmtplib.send(answer, hostname=endpoint.host, port=endpoint.port)

    # Replaying again writes nothing twice.
    conn = await asyncpg.connect(net.mailer_dsn)
    try:
        assert await replay(net.settings, kafka, conn, "farm") == 0
    finally:
        await conn.close()

    # The topology file still calls it a partner: planned, that is a problem with the line to
    # write, and nothing of the box is undone.
    planned = await make_plan(net.settings, kafka, parse_topology(NETWORK))
    [problem] = planned.problems
    assert "'farm' is a partner without a box in the file, but it became a box" in problem
    assert "- {id: farm, region: south, company: Farma Říčany, onboarded: '" in problem
    assert not [c for c in planned.changes if "farm" in c.target]
