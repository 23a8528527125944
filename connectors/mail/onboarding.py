"""A partner without a box becomes a box (``boxbus partner onboard``), and what was mailed to
it follows into its new inbox (``boxbus partner replay``).

Onboarding, step by step (each step can be run again; a failure leaves nothing half done that
the next run does not finish):

1. **Check**: the partner is a partner of the network (the control topic says so; or a box
   whose onboarding stopped before step 3, which this run finishes), the region exists, and
   the invitation token holds (signed by this network's mailer, not expired, not used, for
   this partner). Nothing has changed yet.
2. **The box**: the network as the control topics hold it, with the partner turned into a box
   in the region given (and marked ``onboarded``), is planned like a topology and only the
   changes of this box are applied: its Kafka user and password (kept where boxbus keeps
   them), signing key, inbox and dead-letter topics, ACLs (its ingress topic becomes its own;
   the mailer's right to write it goes), its control record. From the router's next round on,
   its events go to its inbox instead of the mail topic.
3. **The token is used**, and the partner is marked handed over in the mailer's database, in
   one transaction, under the lock the courier holds while it writes to the partner (an
   e-mail on its way finishes first): the courier sends it nothing more.
4. **The backlog**: every event the mailer took for the partner and sent (or had not sent
   yet), in the order the mailer took them, is written into the new inbox, each with the
   header ``boxbus_mailed`` (when its e-mail went, empty if it never went), to the partition
   the router would choose (crc32 of the key), acknowledged by the brokers before it is marked
   replayed. The box's inbox drops any event it already has (by id), so a replay run twice
   applies nothing twice. E-mails given up (refused for good) are not replayed: their sender
   was told they failed.
5. **Stragglers**: events the router put on the mail topic before it took up the change are
   queued by the mailer as usual (it never sends them: the partner is handed over); the
   onboarding waits until the mailer has read the mail topic to its end, then replays them
   too. ``boxbus partner replay`` does the same at any later time.

Known limit: an event of the same order that the router sends straight to the inbox *while*
a straggler of that order is still on its way through the mailer (the second or so between
the router taking up the change and the mailer reading its last records) lands before it.
Closing that needs the router to hold the new box's events until the mailer is through.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bus import naming
from bus.errors import ConfigError
from bus.kafka import KafkaAccess, start_or_close
from bus.settings import Settings
from bus.topics import list_topics, topic_ends
from bus.topology import apply_plan, control, make_plan
from bus.topology.model import Box, BoxKind, Region, Topology
from bus.topology.plan import Change, Plan
from connectors.box.outbox import headers_from_json
from connectors.mail.courier import lock_key
from connectors.mail.invitations import Invitations

MAILED = "boxbus_mailed"  # on a replayed record: when its e-mail went (empty: it never went)


@dataclass
class Onboarded:
    partner: str
    region: str
    principal: str
    inbox: str
    applied: list[str] = field(default_factory=list)
    replayed: int = 0
    stragglers: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"partner": self.partner, "region": self.region, "principal": self.principal,
                "inbox": self.inbox, "applied": self.applied, "replayed": self.replayed,
                "stragglers": self.stragglers}


def _network(records: dict[str, dict[str, bytes]]) -> tuple[dict[str, Box], Any, tuple[str, ...]]:
    """The boxes by id, the typed network, and the signed types, as the control topics say."""
    network = control.network_of(records)
    signing = records.get("signing", {}).get(control.SIGNED_TYPES)
    signed = tuple(control.decode(signing)["types"]) if signing else ()
    return {b.id: b for b in network.boxes}, network, signed


def _mine(change: Change, namespace: str, box: str) -> bool:
    """Whether a planned change is the new box's own (the rest of the network stays as the
    operators' file made it, whatever the control topics lack of the file)."""
    prefix, user = naming.box_prefix(namespace, box), naming.box_principal(namespace, box)
    if change.action in ("create-topic", "add-partitions", "alter-config"):
        return change.target.startswith(prefix)
    if change.action in ("create-principal", "set-quota"):
        return change.target == user
    if change.action in ("add-acl", "remove-acl"):
        grant = change.data["grant"]
        return bool(grant.user == user or grant.name.startswith(prefix))
    if change.action == "create-signing-key":
        return bool(change.data.get("box") == box)
    if change.action == "write-control":
        return change.target in (f"boxes/{box}",) or change.target.startswith(
            f"signing/{control.KEYS}{box}/")
    return False


async def _check(settings: Settings, operator: KafkaAccess, invitations: Invitations,
                 conn: asyncpg.Connection, partner: str, token: str, region: str
                 ) -> tuple[dict[str, Box], Any, tuple[str, ...], bool]:
    """The network, and whether this run finishes an onboarding stopped halfway; refused
    (nothing changed) when the partner, region or token does not allow it."""
    ns = settings.topic_namespace
    boxes, network, signed = _network(await control.read_control(operator, ns))
    found = boxes.get(partner)
    if found is None:
        raise ConfigError(f"{partner!r} is not in network {ns!r}",
                          hint="check the partner's id (`boxbus mailer status` lists them)")
    resume = False
    if found.kind is not BoxKind.PARTNER:
        handed = await conn.fetchval("SELECT handed_over_at FROM mail_partners WHERE "
                                     "partner = $1", partner)
        if not found.onboarded or handed is not None:
            since = found.onboarded or "by the topology"
            raise ConfigError(f"{partner!r} is a box already (onboarded {since})",
                              hint="`boxbus partner replay` writes what the mailer still "
                              "holds for it into its inbox")
        # Onboarded in the network, not yet in the mailer's database (an onboarding stopped
        # halfway): this run finishes it, in the region it was given then, with the token
        # it began with, even if that has expired since.
        if found.region != region:
            raise ConfigError(f"{partner!r} was onboarded into region {found.region!r}, not "
                              f"{region!r}", hint=f"run it again with --region {found.region}")
        resume = True
    await invitations.check(conn, token, partner, expired_ok=resume)
    if naming.region_topic(ns, naming.check_region(region)) not in await list_topics(operator):
        raise ConfigError(f"region {region!r} has no topic in network {ns!r}",
                          hint="choose a region of the network, or add it to the topology "
                          "and apply it first")
    return boxes, network, signed, resume


async def onboard(settings: Settings, operator: KafkaAccess, mailer_dsn: str, key: bytes,
                  partner: str, token: str, region: str, *,
                  say: Callable[[str], None] = lambda _: None,
                  settle: float = 30.0) -> Onboarded:
    ns = settings.topic_namespace
    invitations = Invitations(key, settings.mail_public_url)
    conn = await asyncpg.connect(mailer_dsn)
    try:
        boxes, network, signed, resume = await _check(settings, operator, invitations, conn,
                                                      partner, token, region)
        was = boxes[partner]
        now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        boxes[partner] = Box(id=partner, region=region, company=was.company, email=was.email,
                             language=was.language, onboarded=was.onboarded or now)
        regions = {b.region for b in boxes.values()}
        topology = Topology(namespace=ns, regions={r: Region() for r in sorted(regions)},
                            boxes=tuple(boxes.values()),
                            relationships=tuple(network.relationships),
                            subscriptions=tuple(network.subscriptions),
                            signed=signed or None)
        planned = await make_plan(settings, operator, topology)
        mine = Plan(planned.namespace, planned.store,
                    [c for c in planned.changes if _mine(c, ns, partner)])
        await apply_plan(operator, mine)
        result = Onboarded(partner, region, naming.box_principal(ns, partner),
                           naming.inbox_topic(ns, partner),
                           [f"{c.action} {c.target}" for c in mine.changes])
        say(f"{partner} is a box in region {region}: {len(mine.changes)} change(s) applied")
        # The courier holds this lock while it writes to the partner: waiting for it means
        # no e-mail of its is on its way when the handover commits.
        await conn.execute("SELECT pg_advisory_lock($1)", lock_key(partner))
        try:
            async with conn.transaction():
                await invitations.use(conn, token, partner, f"onboarding of {partner} into "
                                      f"region {region}", expired_ok=resume)
                await conn.execute(
                    "INSERT INTO mail_partners (partner, handed_over_at) VALUES ($1, "
                    "clock_timestamp()) ON CONFLICT (partner) DO UPDATE SET handed_over_at "
                    "= coalesce(mail_partners.handed_over_at, clock_timestamp())", partner)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock_key(partner))
        result.replayed = await replay(settings, operator, conn, partner)
        say(f"{result.replayed} event(s) mailed to {partner} written into its inbox")
        if not await _mailer_caught_up(operator, conn, ns, settle):
            say(f"the mailer has not read the mail topic to its end within {settle:g} s: "
                f"events still on their way follow with `boxbus partner replay {partner}`")
        result.stragglers = await replay(settings, operator, conn, partner)
        if result.stragglers:
            say(f"{result.stragglers} event(s) still on their way by mail followed them")
        return result
    finally:
        await conn.close()


async def replay(settings: Settings, operator: KafkaAccess, conn: asyncpg.Connection,
                 partner: str) -> int:
    """Write what the mailer holds for ``partner`` (sent or never sent, not replayed yet)
    into its inbox, in the order the mailer took it; the number written."""
    ns = settings.topic_namespace
    handed = await conn.fetchval("SELECT handed_over_at FROM mail_partners WHERE partner = $1",
                                 partner)
    if handed is None:
        raise ConfigError(f"{partner!r} has not been onboarded",
                          hint=f"boxbus partner onboard {partner} --token T --region R")
    rows = await conn.fetch(
        "SELECT id, record_key, record_value, headers, sent_at FROM mail_outgoing "
        "WHERE partner = $1 AND replayed_at IS NULL AND status IN ('queued', 'sent') "
        "ORDER BY id", partner)
    if not rows:
        return 0
    inbox = naming.inbox_topic(ns, partner)
    producer = operator.producer(acks="all", enable_idempotence=True,
                                 max_request_size=8 * 1024 * 1024)
    await start_or_close(producer, operator)
    try:
        partitions = await producer.partitions_for(inbox)
        if not partitions:
            raise ConfigError(f"the inbox topic {inbox} does not exist",
                              hint=f"run `boxbus partner onboard {partner}` first")
        count = len(partitions)
        pending = []
        for row in rows:
            mailed = row["sent_at"].isoformat() if row["sent_at"] else ""
            headers = [*headers_from_json(row["headers"]), (MAILED, mailed.encode())]
            key = row["record_key"]
            pending.append(await producer.send(
                inbox, row["record_value"], key=key, headers=headers,
                partition=zlib.crc32(key) % count if key is not None else 0))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    await conn.execute(
        "UPDATE mail_outgoing SET replayed_at = clock_timestamp(), status = CASE WHEN "
        "status = 'queued' THEN 'onboarded' ELSE status END WHERE id = ANY($1::bigint[])",
        [r["id"] for r in rows])
    return len(rows)


async def _mailer_caught_up(operator: KafkaAccess, conn: asyncpg.Connection, namespace: str,
                            patience: float) -> bool:
    """Wait until the mailer has taken everything on the mail topic so far (its positions
    are in its database); whether it did within ``patience`` seconds."""
    topic = naming.mail_topic(namespace)
    ends = await topic_ends(operator, [topic])
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        rows = await conn.fetch("SELECT partition, next_offset FROM boxbus_inbox_offsets "
                                "WHERE consumer = $1 AND topic = $2",
                                f"{namespace}.mailer", topic)
        at = {r["partition"]: r["next_offset"] for r in rows}
        if all(at.get(tp.partition, 0) >= end for tp, end in ends.items() if end):
            return True
        await asyncio.sleep(0.2)
    return False
