"""Plan and apply a topology on a cluster, like a schema migration for topics.

``plan`` reads the cluster (topics, partitions, replicas, the configs boxbus manages, the
control topics' records, the network's Kafka users and their ACLs) and lists what would change,
touching nothing. Every box and service gets a SCRAM user of its own and exactly the ACLs
:mod:`bus.topology.principals` derives from the topology; the passwords boxbus makes are kept
in the credential store (:mod:`bus.credentials`), Kafka keeping only their hashes.

``apply`` carries out a plan; applied twice, the second finds nothing to do. Destructive changes
(deleting a topic of a removed box or region, shrinking a retention) are planned but only
carried out with ``allow_destructive`` (so is deleting the user of a removed box; its ACLs go at
once, which ends its access, since Kafka authorizes every request). What Kafka cannot do (fewer
partitions, another replication factor in place) is reported as a problem, not attempted.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pydantic import ValidationError

from bus import naming, quotas
from bus.credentials import CredentialStore, new_password
from bus.deadletter import DLQ_MAX_BYTES
from bus.kafka import KafkaAccess, start_or_close
from bus.security import ClusterSecurity, SecurityDisabled
from bus.settings import Settings
from bus.signing import Signer
from bus.topics import create_topics
from bus.topology import principals
from bus.topology.control import KEYS, decode, desired_records, encode, read_control
from bus.topology.model import Box, BoxKind, Topology


@dataclass(frozen=True)
class WantedTopic:
    name: str
    partitions: int
    replication: int | None
    configs: dict[str, str]
    role: str  # region, dead-letter, quarantine, inbox, ingress, mail, control


@dataclass(frozen=True)
class Change:
    action: str  # create-topic, add-partitions, alter-config, write-control, delete-control,
    #              delete-topic
    target: str
    detail: str
    destructive: bool = False
    data: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class Plan:
    namespace: str
    store: CredentialStore | None = None  # where apply keeps the passwords it makes
    changes: list[Change] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what apply cannot do
    notes: list[str] = field(default_factory=list)  # worth knowing, changes nothing

    @property
    def empty(self) -> bool:
        return not self.changes

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "changes": [
            {k: v for k, v in asdict(c).items() if k != "data"} for c in self.changes],
            "problems": self.problems, "notes": self.notes}


def wanted_topics(topology: Topology, namespace: str) -> list[WantedTopic]:
    """Every topic the topology needs, with the configs boxbus manages on it."""
    defaults = topology.defaults
    wanted = []
    for region, spec in topology.regions.items():
        topic = naming.region_topic(namespace, region)
        retention = {"retention.ms": str(spec.retention)}
        replication = spec.replication or defaults.replication
        wanted += [
            WantedTopic(topic, spec.partitions, replication, retention, "region"),
            WantedTopic(naming.dlq_topic(topic), spec.partitions, replication,
                        {"max.message.bytes": str(DLQ_MAX_BYTES)}, "dead-letter"),
        ]
    letters = {"max.message.bytes": str(DLQ_MAX_BYTES)}
    ingress_retention = {"retention.ms": str(defaults.ingress_retention)}
    partitions = defaults.ingress_partitions
    for box in topology.boxes:
        # Every box writes its ingress topic; for a partner without a box the mailer does.
        ingress = naming.ingress_topic(namespace, box.id)
        wanted += [
            WantedTopic(ingress, partitions, defaults.replication, ingress_retention,
                        "ingress"),
            WantedTopic(naming.dlq_topic(ingress), partitions, defaults.replication,
                        letters, "dead-letter"),
            WantedTopic(naming.quarantine_topic(ingress), partitions, defaults.replication,
                        {**ingress_retention, **letters}, "quarantine"),
        ]
        if box.kind is BoxKind.BOX:
            inbox = naming.inbox_topic(namespace, box.id)
            wanted += [
                WantedTopic(inbox, defaults.inbox_partitions, defaults.replication,
                            {"retention.ms": str(defaults.inbox_retention)}, "inbox"),
                WantedTopic(naming.dlq_topic(inbox), defaults.inbox_partitions,
                            defaults.replication, letters, "dead-letter"),
            ]
        if box.kind is BoxKind.BOX and box.rpc:
            requests = naming.requests_topic(namespace, box.id)
            short = {"retention.ms": str(3_600_000)}  # a question is stale within minutes
            wanted += [
                WantedTopic(requests, defaults.request_partitions, defaults.replication,
                            short, "requests"),
                WantedTopic(naming.dlq_topic(requests), defaults.request_partitions,
                            defaults.replication, letters, "dead-letter"),
                WantedTopic(naming.replies_topic(namespace, box.id), defaults.reply_partitions,
                            defaults.replication, short, "replies"),
            ]
        if box.kind is BoxKind.PARTNER or box.onboarded:
            # What the mailer could not deliver to the partner (kept once it has a box: it
            # is under the box's prefix, its own to read).
            wanted.append(WantedTopic(naming.partner_letters_topic(namespace, box.id), 1,
                                      defaults.replication, letters, "dead-letter"))
    mail = naming.mail_topic(namespace)
    wanted += [
        WantedTopic(mail, defaults.mail_partitions, defaults.replication, {}, "mail"),
        WantedTopic(naming.dlq_topic(mail), defaults.mail_partitions, defaults.replication,
                    letters, "dead-letter"),
    ]
    for kind in naming.CONTROL_KINDS:
        wanted.append(WantedTopic(naming.control_topic(namespace, kind), 1,
                                  defaults.replication, {"cleanup.policy": "compact"},
                                  "control"))
    return wanted


def _managed(namespace: str, topic: str) -> bool:
    """Topics a topology owns, and may delete when they leave it: regions and box inboxes
    (with their dead-letter and quarantine topics)."""
    return topic.startswith((f"{namespace}.region.", f"{namespace}.box."))


async def make_plan(settings: Settings, kafka: KafkaAccess, topology: Topology) -> Plan:
    namespace = topology.namespace or settings.topic_namespace
    plan = Plan(namespace, CredentialStore.of(settings))
    current_records = await read_control(kafka, namespace)
    topology = _keep_onboarded(plan, topology, current_records.get("boxes", {}))
    admin = kafka.admin()
    await start_or_close(admin, kafka)
    try:
        existing = set(await admin.list_topics())
        brokers = len((await admin.describe_cluster())["brokers"])
        wanted = wanted_topics(topology, namespace)
        present = [w for w in wanted if w.name in existing]
        described = {t["topic"]: t for t in await admin.describe_topics(
            [w.name for w in present])} if present else {}
        configs = await _configs(admin, [w.name for w in present])
    finally:
        await admin.close()

    for want in wanted:
        replication = want.replication or min(3, brokers)
        full = _with_isr(want.configs, replication)
        if want.name not in existing:
            plan.changes.append(Change(
                "create-topic", want.name,
                f"{want.role}: {want.partitions} partition(s), replication {replication}"
                + "".join(f", {k}={v}" for k, v in sorted(full.items())),
                data={"partitions": want.partitions, "replication": replication,
                      "configs": full}))
            continue
        partitions = described[want.name]["partitions"]
        have = len(partitions)
        if want.partitions > have:
            plan.changes.append(Change(
                "add-partitions", want.name, f"{have} -> {want.partitions} partitions "
                "(keys move to other partitions: order holds only for new events)",
                data={"partitions": want.partitions}))
        elif want.partitions < have:
            plan.problems.append(f"{want.name}: has {have} partitions, the topology asks for "
                                 f"{want.partitions}; Kafka cannot remove partitions "
                                 "(recreate the topic, or keep the larger count in the file)")
        replicas = len(partitions[0]["replicas"]) if partitions else replication
        if want.replication is not None and replicas != want.replication:
            plan.problems.append(f"{want.name}: has replication {replicas}, the topology asks "
                                 f"for {want.replication}; reassign partitions with Kafka's "
                                 "kafka-reassign-partitions tool")
        current = configs.get(want.name, {})
        differing = {k: (current.get(k), v) for k, v in full.items() if current.get(k) != v}
        if differing:
            shrink = any(k == "retention.ms" and old is not None and _shorter(v, old)
                         for k, (old, v) in differing.items())
            plan.changes.append(Change(
                "alter-config", want.name, ", ".join(
                    f"{k}: {old} -> {v}" for k, (old, v) in sorted(differing.items()))
                + (" (shrinks retention: older events are deleted)" if shrink else ""),
                destructive=shrink, data={"configs": full}))

    wanted_names = {w.name for w in wanted}
    for topic in sorted(existing - wanted_names):
        if _managed(namespace, topic):
            plan.changes.append(Change("delete-topic", topic, "no longer in the topology: its "
                                       "events are deleted", destructive=True))

    for kind, records in desired_records(topology).items():
        have_records = current_records.get(kind, {})
        for key, value in records.items():
            if have_records.get(key) != value:
                plan.changes.append(Change(
                    "write-control", f"{kind}/{key}",
                    "new" if key not in have_records else "changed",
                    data={"kind": kind, "key": key, "value": value}))
        for key in sorted(set(have_records) - set(records)):
            if kind == "signing" and key.startswith(KEYS):
                continue  # public keys: managed with the users, kept for auditors
            plan.changes.append(Change(
                "delete-control", f"{kind}/{key}", "no longer in the topology (tombstone)",
                data={"kind": kind, "key": key}))
    await _plan_access(plan, kafka, topology, current_records.get("signing", {}))
    return plan


def _keep_onboarded(plan: Plan, topology: Topology, boxes: dict[str, bytes]) -> Topology:
    """Partners that became boxes (``boxbus partner onboard``) stay boxes: a file that still
    declares one a partner is a problem, with the entry to write instead, and nothing of that
    box changes; a file that declares it a box keeps the record of its onboarding."""
    onboarded = {}
    for key, value in boxes.items():
        with contextlib.suppress(ValueError, ValidationError):
            entry = {k: v for k, v in decode(value).items() if k != "format"}
            box = Box.model_validate(entry)
            if box.onboarded and box.kind is BoxKind.BOX:
                onboarded[key] = box
    if not onboarded:
        return topology
    kept = []
    for box in topology.boxes:
        was = onboarded.get(box.id)
        if was is None or box.onboarded:
            kept.append(box)
        elif box.kind is BoxKind.PARTNER:
            plan.problems.append(
                f"box {box.id!r} is a partner without a box in the file, but it became a box "
                f"on {was.onboarded} (boxbus partner onboard): nothing of it is changed. Write "
                f"its entry as: - {{id: {was.id}, region: {was.region}, company: "
                f"{was.company}, onboarded: '{was.onboarded}'}}")
            kept.append(was)
        else:
            kept.append(box.model_copy(update={"onboarded": was.onboarded}))
    return topology.model_copy(update={"boxes": tuple(kept)})


async def _plan_access(plan: Plan, kafka: KafkaAccess, topology: Topology,
                       signing: dict[str, bytes]) -> None:
    """The Kafka users and ACLs that differ from what the topology asks for."""
    ns = plan.namespace
    assert plan.store is not None
    # Signing keys first: a network without an authorizer signs and verifies all the same.
    for box in (b.id for b in topology.boxes if b.kind is BoxKind.BOX):
        user = naming.box_principal(ns, box)
        signer = plan.store.signer(user)
        if signer is None:
            plan.changes.append(Change(
                "create-signing-key", box, "an Ed25519 key for the events it signs; the "
                f"public key goes to the signing control topic, the private one to "
                f"{plan.store.signing_path(user)}", data={"box": box, "user": user}))
        elif f"{KEYS}{box}/{signer.key_id}" not in signing:
            plan.changes.append(_key_record(signer))
    security = ClusterSecurity(kafka)
    try:
        have_grants = {g for g in await security.grants() if principals.of_namespace(ns, g.user)}
    except SecurityDisabled:
        plan.notes.append("the cluster has no authorizer: every client may do anything, so "
                          "no users or ACLs are planned (the local stack has one)")
        return
    have_users = {u for u in await security.users() if principals.of_namespace(ns, u)}
    wanted_users = principals.users(topology, ns)
    for user, role in sorted(wanted_users.items()):
        if user not in have_users:
            plan.changes.append(Change(
                "create-principal", user, f"{role}: a SCRAM-SHA-512 user; its password is kept "
                f"in {plan.store.path(user)}", data={"user": user}))
        elif plan.store.password(user) is None:
            plan.notes.append(f"{user} exists on the cluster, but boxbus keeps no password for "
                              f"it: `boxbus box rotate-credentials` gives it a new one")
    for user in sorted(have_users - set(wanted_users)):
        plan.changes.append(Change("delete-principal", user, "no longer in the topology: it "
                                   "cannot log in any more", destructive=True,
                                   data={"user": user}))
    wanted_grants = principals.grants(topology, ns)
    for grant in sorted(wanted_grants - have_grants):
        plan.changes.append(Change("add-acl", grant.describe(), "allow",
                                   data={"grant": grant}))
    for grant in sorted(have_grants - wanted_grants):
        plan.changes.append(Change("remove-acl", grant.describe(), "no longer needed",
                                   data={"grant": grant}))
    wanted_rates = {user: {quotas.PRODUCE: float(q.produce), quotas.FETCH: float(q.fetch)}
                    for user, q in principals.quotas(topology, ns).items()}
    have_rates = {user: rates for user, rates in (await quotas.Quotas(kafka).all()).items()
                  if principals.of_namespace(ns, user)}
    for user, rates in sorted(wanted_rates.items()):
        if have_rates.get(user) != rates:
            plan.changes.append(Change(
                "set-quota", user, f"produce {rates[quotas.PRODUCE]:,.0f} B/s, fetch "
                f"{rates[quotas.FETCH]:,.0f} B/s per broker", data={"rates": rates}))
    for user in sorted(set(have_rates) - set(wanted_rates)):
        # Goes with the user (both destructive): a user left in place never loses its limit.
        plan.changes.append(Change("remove-quota", user, "no longer in the topology",
                                   destructive=True, data={"rates": {}}))


def _with_isr(configs: dict[str, str], replication: int) -> dict[str, str]:
    """Replicated topics refuse writes that fewer than two replicas hold."""
    return {**configs, **({"min.insync.replicas": "2"} if replication >= 3 else {})}


def _shorter(new: str, old: str) -> bool:
    new_ms, old_ms = int(new), int(old)
    return (old_ms == -1 and new_ms != -1) or -1 < new_ms < old_ms


async def _configs(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, dict[str, str]]:
    """The non-default configs of ``topics`` (what an alter would replace)."""
    if not topics:
        return {}
    found: dict[str, dict[str, str]] = {}
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    for response in responses:
        for resource in response.resources:
            name, entries = resource[3], resource[4]
            # (name, value, read_only, is_default / config_source, is_sensitive, ...)
            found[name] = {e[0]: e[1] for e in entries if not _is_default(e)}
    return found


def _is_default(entry: tuple[Any, ...]) -> bool:
    # DescribeConfigs v1+: entry[3] is the config source; 1 = a dynamic topic config.
    return bool(entry[3] != 1)


@dataclass
class Applied:
    done: list[Change] = field(default_factory=list)
    skipped: list[Change] = field(default_factory=list)  # destructive, not allowed


async def apply_plan(kafka: KafkaAccess, plan: Plan, *,
                     allow_destructive: bool = False) -> Applied:
    """Carry out ``plan``: topics first (so control records have somewhere to go), then the
    control records in the topology's order (boxes before relationships before
    subscriptions)."""
    result = Applied()
    todo: list[Change] = []
    for change in plan.changes:
        (todo if allow_destructive or not change.destructive else result.skipped).append(change)
    admin = kafka.admin()
    await start_or_close(admin, kafka)
    try:
        creates = [c for c in todo if c.action == "create-topic"]
        if creates:
            await create_topics(admin, [
                NewTopic(c.target, c.data["partitions"], c.data["replication"],
                         topic_configs=c.data["configs"]) for c in creates])
        grow = [c for c in todo if c.action == "add-partitions"]
        if grow:
            await admin.create_partitions(
                {c.target: NewPartitions(c.data["partitions"]) for c in grow})
        alters = [c for c in todo if c.action == "alter-config"]
        if alters:
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, c.target,
                                                      configs=c.data["configs"])
                                       for c in alters])
        deletes = [c for c in todo if c.action == "delete-topic"]
        if deletes:
            await admin.delete_topics([c.target for c in deletes])
    finally:
        await admin.close()
    result.done += [c for c in todo if c.action.endswith("-topic") or c.action in (
        "add-partitions", "alter-config")]
    result.done += await _apply_access(kafka, plan, todo)

    records = [c for c in todo if c.action in ("write-control", "delete-control")]
    if records:
        producer = kafka.producer(acks="all", enable_idempotence=True)
        await start_or_close(producer, kafka)
        quiet = _FreshLeaderRetries({c.target for c in todo if c.action == "create-topic"})
        logging.getLogger("aiokafka.producer.sender").addFilter(quiet)
        try:
            futures = [await producer.send(
                naming.control_topic(plan.namespace, c.data["kind"]),
                c.data.get("value"), key=c.data["key"].encode()) for c in records]
            for future in futures:
                await future
        finally:
            await producer.stop()
            logging.getLogger("aiokafka.producer.sender").removeFilter(quiet)
        result.done += records
    return result


async def _apply_access(kafka: KafkaAccess, plan: Plan, todo: list[Change]) -> list[Change]:
    """Users first (a password made here is kept before Kafka learns it, so it is never lost),
    then ACLs, waiting until the brokers report them."""
    creates = [c for c in todo if c.action == "create-principal"]
    deletes = [c for c in todo if c.action == "delete-principal"]
    adds = [c for c in todo if c.action == "add-acl"]
    removes = [c for c in todo if c.action == "remove-acl"]
    rates = [c for c in todo if c.action in ("set-quota", "remove-quota")]
    keys = [c for c in todo if c.action == "create-signing-key"]
    if not (creates or deletes or adds or removes or rates or keys):
        return []
    security = ClusterSecurity(kafka)
    store = plan.store
    assert store is not None
    passwords = {}
    for change in creates:
        user = change.data["user"]
        passwords[user] = store.password(user) or new_password()
        store.save(user, passwords[user], kafka)
    await security.set_passwords(passwords)
    await security.delete_users(c.data["user"] for c in deletes)
    for change in deletes:
        store.forget(change.data["user"])
    added = {c.data["grant"] for c in adds}
    removed = {c.data["grant"] for c in removes}
    await security.add(added)
    await security.remove(removed)
    if added or removed:
        await security.wait_until(added, removed)
    await quotas.Quotas(kafka).set({c.target: c.data["rates"] for c in rates})
    for change in keys:
        signer = Signer.new(change.data["box"])
        store.save_signer(change.data["user"], signer)
        # Published with the control records that follow.
        todo.append(_key_record(signer))
    return [*creates, *deletes, *adds, *removes, *rates, *keys]


def _key_record(signer: Signer) -> Change:
    """The control record that publishes a box's public key, valid from now on."""
    key = f"{KEYS}{signer.box}/{signer.key_id}"
    return Change("write-control", f"signing/{key}", "the box's public signing key",
                  data={"kind": "signing", "key": key,
                        "value": encode(signer.public_key(datetime.now(UTC)).to_record())})


class _FreshLeaderRetries(logging.Filter):
    """Hides the producer's retry warning for a topic created a moment ago: its leader is
    elected (apply waited for it) but the broker may answer NotLeaderForPartition once until its
    own metadata catches up; the producer retries and the record is written."""

    def __init__(self, topics: set[str]) -> None:
        super().__init__()
        self.topics = topics

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("NotLeaderForPartition" in message
                    and any(f"topic='{t}'" in message for t in self.topics))
