"""Topic, subject and database names. Everything boxbus names starts with the topic namespace."""

from __future__ import annotations

import hashlib
import re

from bus.errors import ConfigError

# Region names and box ids become parts of topic names.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_NAME_RULE = "use lower-case letters, digits, '-' and '_'"
DLQ_SUFFIX = ".dlq"
QUARANTINE_SUFFIX = ".quarantine"
CONTROL_KINDS = ("boxes", "relationships", "subscriptions", "signing")


def _check_name(value: str, what: str, example: str) -> str:
    if not _NAME.match(value):
        raise ConfigError(f"{value!r} is not a {what}", hint=f"{_NAME_RULE} ({example})")
    return value


def check_region(region: str) -> str:
    return _check_name(region, "region name", "north, south-east, centre")


def region_topic(namespace: str, region: str) -> str:
    """The topic of one region's events: ``<namespace>.region.<region>``."""
    return f"{namespace}.region.{check_region(region)}"


def check_box(box_id: str) -> str:
    return _check_name(box_id, "box id", "it names the box's topics")


# The source_box of what the router itself writes (its reports, its refusals of questions):
# the router speaks for no box, and no box may take this id.
ROUTER_SOURCE = "router"


def box_prefix(namespace: str, box_id: str) -> str:
    """What every topic and consumer group of one box starts with, ending in the separator
    (an ACL on the prefix ``ns.box.a`` would cover box ``ab`` too; ``ns.box.a.`` does not)."""
    return f"{namespace}.box.{check_box(box_id)}."


def inbox_topic(namespace: str, box_id: str) -> str:
    """The topic only ``box_id`` reads: ``<namespace>.box.<box>.inbox``."""
    return box_prefix(namespace, box_id) + "inbox"


def requests_topic(namespace: str, box_id: str) -> str:
    """The questions other boxes ask ``box_id`` (request/reply), written by the router only:
    ``<namespace>.box.<box>.requests``."""
    return box_prefix(namespace, box_id) + "requests"


def replies_topic(namespace: str, box_id: str) -> str:
    """The answers to the questions ``box_id`` asked, one partition per asking instance,
    written by the router only: ``<namespace>.box.<box>.replies``."""
    return box_prefix(namespace, box_id) + "replies"


def ingress_topic(namespace: str, box_id: str) -> str:
    """The topic only ``box_id`` writes (its relay), read by the router alone:
    ``<namespace>.box.<box>.outbox``. Its owner is the proven source of what it holds."""
    return box_prefix(namespace, box_id) + "outbox"


def owner_of_ingress(namespace: str, topic: str) -> str | None:
    """The box whose ingress topic ``topic`` is; None for any other topic."""
    prefix, suffix = f"{namespace}.box.", ".outbox"
    if topic.startswith(prefix) and topic.endswith(suffix):
        box = topic[len(prefix):-len(suffix)]
        return box if _NAME.match(box) else None
    return None


def box_principal(namespace: str, box_id: str) -> str:
    """The Kafka user a box connects as (one cluster may hold several networks)."""
    return f"{namespace}.box.{check_box(box_id)}"


def service_principal(namespace: str, service: str) -> str:
    """The Kafka user of a network's service: ``<namespace>.router``, ``.mailer``..."""
    return f"{namespace}.{service}"


def mail_topic(namespace: str) -> str:
    """Events for partners without a box, taken by the mail connector."""
    return f"{namespace}.mail"


def partner_letters_topic(namespace: str, partner: str) -> str:
    """What the mailer could not deliver to one partner (a refused address, a mailbox that
    stayed unreachable), with the reason: ``<namespace>.box.<partner>.mail.dlq``. Under the
    partner's prefix, so it is the partner's own once it has a box."""
    return box_prefix(namespace, partner) + "mail" + DLQ_SUFFIX


def quarantine_topic(topic: str) -> str:
    """Where the router puts the events of a box's ingress topic it must not deliver (a forged
    or unknown source, a type the source may not publish), with the reason."""
    return topic + QUARANTINE_SUFFIX


def control_topic(namespace: str, kind: str) -> str:
    """A compacted control topic: ``boxes``, ``relationships`` or ``subscriptions``."""
    if kind not in CONTROL_KINDS:
        raise ValueError(f"unknown control topic {kind!r}")
    return f"{namespace}.control.{kind}"


def region_of_topic(namespace: str, topic: str) -> str | None:
    """The region a region topic belongs to; None for any other topic."""
    prefix = f"{namespace}.region."
    if topic.startswith(prefix) and not topic.endswith((DLQ_SUFFIX, QUARANTINE_SUFFIX)):
        return topic[len(prefix):]
    return None


def dlq_topic(topic: str) -> str:
    """Where the bad records of ``topic`` go: one dead-letter topic per topic, so a region's
    bad input stays in that region (retention, access rights)."""
    return topic if topic.endswith(DLQ_SUFFIX) else topic + DLQ_SUFFIX


def letters_topic(topic: str) -> str:
    """Where ``boxbus dlq`` reads the letters of ``topic``: its dead-letter topic, or the
    quarantine topic itself when given one (the router writes both in the same format)."""
    return topic if topic.endswith(QUARANTINE_SUFFIX) else dlq_topic(topic)


def replays_topic(letters: str) -> str:
    """Where ``boxbus dlq replay`` records the letters of ``letters`` it replayed (compacted,
    keyed by letter id)."""
    return letters + ".replayed"


def source_of_dlq(topic: str) -> str:
    return topic[: -len(DLQ_SUFFIX)] if topic.endswith(DLQ_SUFFIX) else topic


def source_of_letters(topic: str) -> str:
    """The topic whose refused records a dead-letter or quarantine topic holds."""
    for suffix in (DLQ_SUFFIX, QUARANTINE_SUFFIX):
        if topic.endswith(suffix):
            return topic[: -len(suffix)]
    return topic


def subject(topic: str, record_fullname: str) -> str:
    """Registry subject by TopicRecordNameStrategy: many event types share a region topic, and
    each type evolves on its own."""
    return f"{topic}-{record_fullname}"


def box_database(namespace: str, box_id: str) -> str:
    """A box's database (and its owner role) on a shared server (the local stack's):
    ``<namespace>_<box>`` with each '_' doubled and '-' written as '_', so that no two boxes
    share one (``a-b`` and ``a_b`` differ); a name over PostgreSQL's 63 characters keeps 54
    and a digest of the whole."""
    def part(text: str) -> str:
        return text.replace("_", "__").replace("-", "_")

    name = f"{part(namespace)}_{part(box_id)}"
    if len(name) <= 63:
        return name
    return f"{name[:54]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"
