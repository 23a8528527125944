"""``boxbus bench mail``: how many e-mails a second one mailer process renders and hands to the
local SMTP server, with an order's PDF and UBL attached (``mails_per_s``) and without
attachments (``plain_mails_per_s``, comments).

Each round has a network of its own (a buyer and ``partners`` partners in the three
languages), fills the mail topic with ``mails`` records as the router writes them, then starts
a mailer on a fresh database and times it from its start until its database says every e-mail
was accepted by the SMTP server. The rate limit is lifted for the measurement; the process's
CPU time beside the wall time says how much of one core it took.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from bus import naming
from bus.catalog import SchemaCatalog
from bus.credentials import CredentialStore
from bus.db import create_database
from bus.envelope import RECIPIENT
from bus.events import EventBase
from bus.events.models import CommentAdded, EventMeta, Line, Money, OrderKind, OrderPlaced
from bus.kafka import KafkaAccess, start_or_close
from bus.registry import SchemaRegistry
from bus.serde import EventSerde
from bus.settings import Settings
from bus.topology import apply_plan, make_plan, parse_topology
from connectors.box.outbox import Outbox
from connectors.mail.service import Mailer

LANGUAGES = ("en", "uk", "cs")


def _topology(partners: int) -> str:
    rows = "\n".join(
        f"  - {{id: p{n:03d}, region: north, company: Partner {n}, kind: partner, "
        f"email: orders@p{n:03d}.example, language: {LANGUAGES[n % 3]}}}"
        for n in range(partners))
    trades = "\n".join(f"  - {{kind: trade, buyer: shop, supplier: p{n:03d}}}"
                       for n in range(partners))
    return (f"regions:\n  north: {{partitions: 3}}\nboxes:\n"
            f"  - {{id: shop, region: north, company: Corner Shop}}\n{rows}\n"
            f"relationships:\n{trades}\n")


def _event(n: int, partner: str, attachments: bool) -> EventBase:
    order = f"PO-{n:06d}"
    meta = EventMeta(event_id=str(uuid.uuid4()), source_box="shop", region="north",
                     aggregate_key=order, occurred_at=datetime.now(UTC), target_box=partner,
                     correlation_id=order)
    if not attachments:
        return CommentAdded(meta=meta, subject_id=order, comment_id=f"c{n}", author="Olena",
                            text="Can you deliver on Friday morning? Дякую / Děkuji.")
    lines = tuple(Line(line_no=i, sku=f"SKU-{i:04d}", description=f"Článek {i} / Товар {i}",
                       quantity=Decimal(i + 1), unit="pcs",
                       unit_price=Money(amount_minor=150 * i, currency="EUR"),
                       tax_rate_bp=2100) for i in range(1, 6))
    net = sum(line.quantity * line.unit_price.amount_minor for line in lines)
    return OrderPlaced(meta=meta, order_id=order, kind=OrderKind.PURCHASE_ORDER,
                       buyer_box="shop", supplier_email=f"orders@{partner}.example",
                       lines=lines, total=Money(amount_minor=int(net * Decimal("1.21")),
                                                currency="EUR"),
                       delivery_address="Přístavní 12, Děčín")


async def _round(settings: Settings, operator: KafkaAccess, serde: EventSerde,
                 database_server: str, smtp: tuple[str, int], *, mails: int, partners: int,
                 attachments: bool, say: Callable[[str], None]) -> dict[str, Any]:
    ns = f"{settings.topic_namespace}{'a' if attachments else 'p'}"
    run = settings.model_copy(update={"topic_namespace": ns, "mail_rate": 1_000_000.0})
    topology = parse_topology(_topology(partners))
    await apply_plan(operator, await make_plan(run, operator, topology))
    topic = naming.mail_topic(ns)
    # The shop signs what the network marks as signed (orders), as the router passes it on.
    outbox = Outbox(run, serde, signed_types=topology.signed_types,
                    signer=CredentialStore.of(run).signer(naming.box_principal(ns, "shop")))
    producer = operator.producer(acks="all", linger_ms=5)
    await start_or_close(producer, operator)
    try:
        pending = []
        for n in range(mails):
            partner = f"p{n % partners:03d}"
            [encoded] = await outbox.encode([_event(n, partner, attachments)], topic)
            pending.append(await producer.send(
                topic, encoded.value, key=encoded.key,
                headers=[*encoded.headers, (RECIPIENT, partner.encode())]))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    say(f"{mails} {'orders' if attachments else 'comments'} for {partners} partners on "
        f"{topic}")
    dsn = await create_database(database_server, naming.box_database(ns, "mailer"))
    access = CredentialStore.of(run).access(naming.service_principal(ns, "mailer"), operator)
    mailer = Mailer(run, dsn, access or operator, serde, key=b"bench", smtp_host=smtp[0],
                    smtp_port=smtp[1], listen=None)
    stop = asyncio.Event()
    cpu0, started = time.process_time(), time.perf_counter()
    task = asyncio.create_task(mailer.run(stop))
    conn: asyncpg.Connection | None = None
    sent = 0
    try:
        while sent < mails:
            await asyncio.sleep(0.2)
            if task.done():
                task.result()
                raise RuntimeError("the mailer stopped before it sent everything")
            if mailer.intake is not None and mailer.intake.dead_lettered:
                raise RuntimeError(f"the mailer dead-lettered {mailer.intake.dead_lettered} "
                                   f"of the benchmark's records (see {topic}.dlq)")
            if conn is None:
                try:
                    conn = await asyncpg.connect(dsn)
                except (OSError, asyncpg.PostgresError):
                    continue
            if await conn.fetchval("SELECT to_regclass('mail_outgoing')") is None:
                continue
            sent = await conn.fetchval("SELECT count(*) FROM mail_outgoing "
                                       "WHERE status = 'sent'")
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        size = await conn.fetchval(  # type: ignore[union-attr]
            "SELECT avg(length(record_value)) FROM mail_outgoing")
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        if conn is not None:
            await conn.close()
    rate = mails / seconds
    say(f"{mails} e-mails in {seconds:.1f} s: {rate:.0f}/s, {cpu / seconds:.2f} of a core")
    return {"mails_per_s": round(rate, 1), "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu, 2), "cores": round(cpu / seconds, 2),
            "event_bytes": int(size or 0)}


async def bench_mail(settings: Settings, operator: KafkaAccess, *, registry_url: str,
                     database_server: str, smtp: tuple[str, int], mails: int = 1000,
                     partners: int = 20, say: Callable[[str], None] = lambda _: None,
                     ) -> dict[str, Any]:
    serde = EventSerde(SchemaRegistry(registry_url), SchemaCatalog.load(settings.schemas_dir))
    with_files = await _round(settings, operator, serde, database_server, smtp, mails=mails,
                              partners=partners, attachments=True, say=say)
    plain = await _round(settings, operator, serde, database_server, smtp, mails=mails,
                         partners=partners, attachments=False, say=say)
    return {"mails": mails, "partners": partners,
            "mails_per_s": with_files["mails_per_s"],
            "plain_mails_per_s": plain["mails_per_s"],
            "with_attachments": with_files, "plain": plain,
            "smtp_server": f"{smtp[0]}:{smtp[1]}", "workers": 4}
