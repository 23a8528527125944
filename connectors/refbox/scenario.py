"""The demo's story, played on a running :class:`LocalNetwork` of ``deploy/topology/demo.yaml``:
each step acts in one box and waits until the others show its effect, and records how long
that took. Bad input is part of the story: a forged event and a record without an envelope.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from bus import naming
from bus.envelope import Envelope
from bus.topics import read_topic
from connectors.company.story import play_company
from connectors.refbox.actions import LineSpec
from connectors.refbox.chain_story import play_chain
from connectors.refbox.mail_story import MailSetup, play_mail
from connectors.refbox.network import LocalNetwork

BUYER, SUPPLIER, PARTNER, HEAD_OFFICE = "north-branch", "fresh-farm", "river-fish", "hq"
BRANCHES = ("north-branch", "south-branch", "east-branch")
CHAIN_BUYER = "south-branch"


@dataclass
class Step:
    title: str
    ok: bool = False
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Story:
    steps: list[Step] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)


async def play(network: LocalNetwork, say: Callable[[str], None] = lambda _: None,
               timeout: float = 60, mail: MailSetup | None = None,
               out: Path | None = None) -> Story:
    """The story; with ``mail`` (a mailer runs on the network), the partner without a box
    gets its order by e-mail, answers, onboards, and a campaign goes out, instead of the
    order only reaching the mail topic."""
    story = Story()

    async def step(title: str, act: Callable[[], Awaitable[str]],
                   check: Callable[[], Awaitable[bool]],
                   seen: Callable[[], Awaitable[str]] | None = None) -> bool:
        title = f"{len(story.steps) + 1}. {title}"  # numbered as they are played
        say(title)
        record = Step(title)
        story.steps.append(record)
        started = time.monotonic()
        try:
            record.detail = await act()
            await network.until(check, timeout, title)
            record.ok = True
            if seen is not None:  # what the other side shows at that moment
                record.detail += f"; {await seen()}"
        except Exception as exc:  # the story goes on; the step says what failed
            record.detail = f"{record.detail} FAILED: {exc}".strip()
        record.seconds = round(time.monotonic() - started, 3)
        return record.ok

    async def view(box: str) -> dict[str, Any]:
        return await network.view(box)

    async def status(box: str, order_id: str) -> str | None:
        return next((o["status"] for o in (await view(box))["orders"]
                     if o["order_id"] == order_id), None)

    buyer, supplier = network.boxes[BUYER], network.boxes[SUPPLIER]
    lines = [LineSpec("apples-kg", Decimal(120), 180, "Apples", "kg"),
             LineSpec("pears-kg", Decimal("45.5"), 240, "Pears", "kg"),
             LineSpec("plums-box", Decimal(12), 1450, "Plums, box of 5 kg", "box")]
    for spec in lines:
        await supplier.stock_in(spec.sku, spec.quantity * 3)
    order: dict[str, str] = {}

    async def place() -> str:
        order["id"] = await buyer.place_order(SUPPLIER, lines, notes="weekly fruit")
        story.facts["order_id"] = order["id"]
        return f"{BUYER} placed purchase order {order['id']} with {len(lines)} lines"

    async def arrived() -> bool:
        return await status(SUPPLIER, order["id"]) == "placed"

    async def sales_order() -> str:
        order_row = next(o for o in (await view(SUPPLIER))["orders"]
                         if o["order_id"] == order["id"])
        return (f"{SUPPLIER} shows {order_row['role']} order {order_row['order_id']}: "
                f"{order_row['lines']} lines, {order_row['total_minor'] / 100:.2f} "
                f"{order_row['currency']}, {order_row['status']}")

    await step(f"{BUYER} orders fruit from {SUPPLIER}", place, arrived, sales_order)

    async def talk() -> str:
        await buyer.comment(order["id"], "Can you deliver before 8:00 on Monday?")
        await supplier.comment(order["id"], "Yes, the truck leaves at 5:30.")
        return "one comment each way"

    async def talked() -> bool:
        views = [await view(b) for b in (BUYER, SUPPLIER)]
        return all(len(v["comments"]) == 2 for v in views)

    async def comments() -> str:
        return f"{BUYER} shows: " + " / ".join(
            f"{c['origin_box']}: {c['text']}" for c in (await view(BUYER))["comments"])

    await step("comments go both ways", talk, talked, comments)

    async def dispatch() -> str:
        await supplier.confirm_order(order["id"])
        order["shipment"] = await supplier.dispatch(order["id"], carrier="FreshTruck")
        return f"{SUPPLIER} confirmed and dispatched shipment {order['shipment']}"

    async def in_transit() -> bool:
        return bool((await view(BUYER))["goods_in_transit"])

    async def transit() -> str:
        goods = (await view(BUYER))["goods_in_transit"]
        stock = {s["sku"]: s["quantity"] for s in (await view(SUPPLIER))["stock"]}
        return (f"{BUYER} shows in transit: "
                + ", ".join(f"{g['sku']} {g['quantity']} {g['unit']}" for g in goods)
                + f"; {SUPPLIER}'s stock left: "
                + ", ".join(f"{sku} {qty}" for sku, qty in sorted(stock.items())))

    await step(f"{SUPPLIER} dispatches: stock written off, goods in transit at {BUYER}",
               dispatch, in_transit, transit)

    async def receive() -> str:
        await buyer.receive(order["shipment"])
        return f"{BUYER} received shipment {order['shipment']}"

    async def closed() -> bool:
        return await status(SUPPLIER, order["id"]) == "received"

    await step("goods received closes the order on both sides", receive, closed)

    # The whole chain between a branch in the south and its supplier in the north.
    await play_chain(network, step, story.facts, buyer=CHAIN_BUYER, supplier=SUPPLIER,
                     out=out or Path(tempfile.mkdtemp(prefix="boxbus-demo-")))

    # Inside the head office: sales, delivery and billing joined, data entered once.
    if network.systems:
        await play_company(network, step, story.facts, sales_box="hq-sales",
                           delivery_box="hq-delivery", billing_box="hq-billing",
                           client_box="sun-dairy")

    if mail is not None:
        await play_mail(network, step, story.facts, mail, buyer=BUYER, partner=PARTNER,
                        head_office=HEAD_OFFICE, region="north")
    else:
        topic = naming.mail_topic(network.settings.topic_namespace)

        async def to_partner() -> str:
            order["fish"] = await buyer.place_order(PARTNER, [
                LineSpec("trout-kg", Decimal(8), 1290, "Trout", "kg")])
            return f"{BUYER} ordered from {PARTNER}, a partner without a box"

        async def mailed() -> bool:
            records = await read_topic(network.kafka, topic)
            return any(r.key == order["fish"].encode() for r in records)

        await step(f"an order for {PARTNER} goes to the mail topic", to_partner, mailed)

    async def prices() -> str:
        await network.boxes[HEAD_OFFICE].send_price_list(
            [(f"sku-{n:04d}", 99 + n) for n in range(250)])
        return f"{HEAD_OFFICE} sent a price list of 250 entries"

    async def priced() -> bool:
        views = [await view(b) for b in BRANCHES]
        return all(v["price_lists"] for v in views)

    await step("the head office's price list reaches every branch", prices, priced)

    async def report() -> str:
        taken = []
        for n, branch in enumerate(BRANCHES):
            box = network.boxes[branch]
            region = branch.removesuffix("-branch")
            # Each store of the branch orders a few of the head office's priced articles.
            for store in range(1, 3 + n):
                await box.take_store_order(
                    f"store-{region}-{store:02d}",
                    [LineSpec(f"sku-{store * 7 + k:04d}", Decimal(k + store), 99 + store * 7 + k)
                     for k in range(1, 4)])
            await box.send_daily_report()
            taken.append(f"{branch} {2 + n}")
        return ("the stores' orders came in (" + ", ".join(taken)
                + "), then each branch sent the day's report")

    async def reported() -> bool:
        return len((await view(HEAD_OFFICE))["branch_reports"]) == len(BRANCHES)

    async def reports() -> str:
        return f"{HEAD_OFFICE} shows: " + "; ".join(
            f"{r['branch_box']} {r['orders_count']} orders, "
            f"{r['revenue_minor'] / 100:.2f} {r['currency']}"
            for r in (await view(HEAD_OFFICE))["branch_reports"])

    await step("the branches take their stores' orders and report the day to the head "
               "office", report, reported, reports)

    ingress = naming.ingress_topic(network.settings.topic_namespace, BUYER)

    async def forge() -> str:
        # Written the way the buyer's own relay writes: into its ingress topic.
        producer = network.kafka.producer()
        await producer.start()
        try:
            forged = Envelope(id=str(uuid.uuid4()), source_box=SUPPLIER,
                              type="boxbus.orders.OrderConfirmed", time=datetime.now(UTC),
                              region="north", partition_key="po-forged",
                              target_box=BUYER).to_headers()
            await producer.send_and_wait(ingress, b"\x00forged", key=b"po-forged",
                                         headers=forged)
            await producer.send_and_wait(ingress, b"not an event", key=b"po-junk")
        finally:
            await producer.stop()
        return (f"a confirmation claiming to come from {SUPPLIER}, and a record without "
                f"headers, in {BUYER}'s ingress topic")

    async def contained() -> bool:
        quarantined = await read_topic(network.kafka, naming.quarantine_topic(ingress))
        dead = await read_topic(network.kafka, naming.dlq_topic(ingress))
        reasons = [dict(r.headers).get("dlq_reason", b"").decode()
                   for r in quarantined + dead if r.key in (b"po-forged", b"po-junk")]
        story.facts["bad_input"] = reasons
        return len(reasons) >= 2

    await step("bad input is quarantined or dead-lettered with its reason", forge, contained)
    story.facts["router"] = [r.stats.as_dict() for r in network.routers]
    return story
