"""The topology file: who exists in the network, in which region, who trades with whom and
who subscribes to what. One YAML file, validated with pydantic; an error names the line and
the field.

    namespace: boxbus                 # optional: BOXBUS_TOPIC_NAMESPACE otherwise
    defaults: {inbox_partitions: 3, inbox_retention: 14d}
    regions:
      north: {partitions: 6, retention: 7d}
    boxes:
      - {id: north-branch, region: north, company: acme}
      - {id: fresh-farm, region: north, company: fresh-farm, kind: partner,
         email: orders@fresh-farm.example}
    relationships:
      - {kind: trade, buyer: north-branch, supplier: fresh-farm}
      - {kind: branch, head_office: hq, branch: north-branch}
      - {kind: internal, systems: [hq-sales, hq-billing]}
    subscriptions:
      - box: north-branch
        types: [PriceListSent]           # short or full names
        scope: related                    # or network: from any box
        where: {source: [hq]}             # envelope attributes, each one of the listed values
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from bus import naming
from bus.errors import ConfigError
from bus.events import EVENT_TYPES
from bus.yamlfile import At, parse, render

_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_DURATION = re.compile(r"^(\d+)\s*(ms|s|m|h|d|w)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
            "w": 604_800_000}
FILTER_ATTRIBUTES = ("source", "region", "type", "subject", "targetbox", "correlationid")


def duration_ms(value: Any) -> int:
    """``7d``, ``36h``, ``90m``, ``500ms`` or a number of milliseconds; -1 is forever."""
    if isinstance(value, bool):
        raise ValueError("a duration like 7d, 36h, 90m")
    if isinstance(value, int):
        if value < -1:
            raise ValueError("a duration is positive (or -1 for forever)")
        return value
    if isinstance(value, str):
        if value.strip() in ("forever", "-1"):
            return -1
        match = _DURATION.match(value.strip())
        if match:
            return int(match.group(1)) * _UNIT_MS[match.group(2)]
    raise ValueError(f"{value!r} is not a duration: write 7d, 36h, 90m, 30s or 500ms")


Duration = Annotated[int, BeforeValidator(duration_ms)]
Name = Annotated[str, Field(pattern=_NAME)]


def event_type(name: str) -> str:
    """The full name of an event type given by its full or short name."""
    if name in EVENT_TYPES:
        return name
    found = [full for full in EVENT_TYPES if full.rsplit(".", 1)[1] == name]
    if len(found) == 1:
        return found[0]
    known = ", ".join(sorted(full.rsplit(".", 1)[1] for full in EVENT_TYPES))
    raise ValueError(f"{name!r} is not an event type; known: {known}")


EventType = Annotated[str, BeforeValidator(lambda v: event_type(v) if isinstance(v, str) else v)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Region(_Strict):
    partitions: int = Field(6, ge=1, le=10_000)
    retention: Duration = Field(7 * 86_400_000, description="how long events stay")
    # None: as many replicas as brokers, up to three.
    replication: int | None = Field(None, ge=1, le=7)


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB)?$")
_SIZE_UNIT = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000,
              "MB": 1000**2, "GB": 1000**3}


def byte_rate(value: Any) -> int:
    """``1MiB``, ``512KiB``, ``2.5MB`` or a number of bytes (a second, per broker)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        match = _SIZE.match(value.strip())
        if match:
            rate = int(float(match.group(1)) * _SIZE_UNIT[match.group(2)])
            if rate > 0:
                return rate
    raise ValueError(f"{value!r} is not a byte rate: write 1MiB, 512KiB or a number of bytes")


ByteRate = Annotated[int, BeforeValidator(byte_rate)]


class Quota(_Strict):
    """Bytes a second a Kafka user may produce and fetch, on each broker; beyond them the
    brokers slow it down (they never refuse it)."""

    produce: ByteRate
    fetch: ByteRate


class Defaults(_Strict):
    inbox_partitions: int = Field(3, ge=1, le=1000)
    inbox_retention: Duration = 14 * 86_400_000
    # A box's ingress topic (what its relay writes, only the router reads).
    ingress_partitions: int = Field(3, ge=1, le=1000)
    ingress_retention: Duration = 7 * 86_400_000
    # Each box's share, and the services' (they carry every box's traffic).
    box_quota: Quota = Quota(produce=1024**2, fetch=4 * 1024**2)
    service_quota: Quota = Quota(produce=64 * 1024**2, fetch=64 * 1024**2)
    mail_partitions: int = Field(3, ge=1, le=1000)
    # Request/reply: a box's questions topic, and its replies topic (one partition per
    # instance of the box that asks at the same time).
    request_partitions: int = Field(3, ge=1, le=1000)
    reply_partitions: int = Field(4, ge=1, le=1000)
    replication: int | None = Field(None, ge=1, le=7)


Language = Literal["en", "uk", "cs"]  # the languages the mailer writes in


class BoxKind(StrEnum):
    BOX = "box"  # a CRM/ERP with the box SDK: events reach its inbox topic
    PARTNER = "partner"  # no box: events reach the mail topic, sent by e-mail


# Names the network's own services speak as (the router's reports carry source_box "router").
RESERVED_BOX_IDS = frozenset({naming.ROUTER_SOURCE})


class Box(_Strict):
    id: Name
    region: Name
    company: str = Field(min_length=1)
    kind: BoxKind = BoxKind.BOX
    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    # The language of the e-mails the mailer writes to it (a partner without a box).
    language: Language = "en"
    # Event types this box may publish; None: any. The router quarantines the others.
    publishes: tuple[EventType, ...] | None = None
    # Its own byte rates instead of defaults.box_quota.
    quota: Quota | None = None
    # It asks or answers questions on the bus (request/reply): it gets a requests topic
    # and a replies topic.
    rpc: bool = False
    # When a partner without a box became this box (`boxbus partner onboard`), UTC ISO time;
    # kept in the control topic so a topology file that still calls it a partner cannot
    # silently turn it back.
    onboarded: str | None = None

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_BOX_IDS:
            raise ValueError(f"{value!r} is reserved: the network's {value} signs its own "
                             "reports with it; choose another box id")
        return value

    @model_validator(mode="after")
    def _partner_has_email(self) -> Box:
        if self.kind is BoxKind.PARTNER and not self.email:
            raise ValueError("a partner without a box needs an email to be reached")
        return self


class Trade(_Strict):
    kind: Literal["trade"]
    buyer: Name
    supplier: Name

    def members(self) -> tuple[str, ...]:
        return (self.buyer, self.supplier)


class Branch(_Strict):
    kind: Literal["branch"]
    head_office: Name
    branch: Name

    def members(self) -> tuple[str, ...]:
        return (self.head_office, self.branch)


class Internal(_Strict):
    """A company's own systems (sales, billing, service delivery) that share data."""

    kind: Literal["internal"]
    systems: tuple[Name, ...] = Field(min_length=2)

    def members(self) -> tuple[str, ...]:
        return self.systems


Relationship = Annotated[Trade | Branch | Internal, Field(discriminator="kind")]


class Scope(StrEnum):
    RELATED = "related"  # only from boxes the subscriber has a relationship with
    NETWORK = "network"  # from any box of the network (central analytics)


class Subscription(_Strict):
    box: Name
    types: tuple[EventType, ...] = Field(min_length=1)
    scope: Scope = Scope.RELATED
    where: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    name: Name | None = None  # defaults to a digest of the rest (stable while it is unchanged)

    @field_validator("where", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (v,) if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("where")
    @classmethod
    def _known_attributes(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for attribute in value:
            if attribute not in FILTER_ATTRIBUTES:
                raise ValueError(f"cannot filter on {attribute!r}; use one of "
                                 f"{', '.join(FILTER_ATTRIBUTES)}")
        return value

    @property
    def key(self) -> str:
        """Its identity in the control topic: ``<box>/<name>``."""
        if self.name:
            return f"{self.box}/{self.name}"
        body = self.model_dump(mode="json", exclude={"name"})
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.box}/{digest}"


def relationship_key(relationship: Trade | Branch | Internal) -> str:
    """Its identity in the control topic, e.g. ``trade/north-branch/fresh-farm``."""
    return "/".join((relationship.kind, *relationship.members()))


class Topology(_Strict):
    namespace: str | None = Field(None, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$")
    defaults: Defaults = Defaults()
    regions: dict[Name, Region] = Field(min_length=1)
    boxes: tuple[Box, ...] = ()
    relationships: tuple[Relationship, ...] = ()
    subscriptions: tuple[Subscription, ...] = ()
    # Event types the sending box signs and the recipient verifies (None: orders,
    # confirmations, amendments, cancellations, invoices, payments, documents).
    signed: tuple[EventType, ...] | None = None

    @property
    def signed_types(self) -> tuple[str, ...]:
        from bus.signing import DEFAULT_SIGNED_TYPES

        return self.signed if self.signed is not None else DEFAULT_SIGNED_TYPES

    @model_validator(mode="after")
    def _references(self) -> Topology:
        ids: dict[str, Box] = {}
        for n, box in enumerate(self.boxes):
            if box.id in ids:
                raise At(("boxes", n, "id"), f"box {box.id!r} is declared twice")
            if box.region not in self.regions:
                raise At(("boxes", n, "region"), f"region {box.region!r} is not declared "
                          f"under regions ({', '.join(self.regions)})")
            ids[box.id] = box
        seen: set[str] = set()
        for n, relationship in enumerate(self.relationships):
            for field_name, member in _member_fields(relationship):
                if member not in ids:
                    raise At(("relationships", n, *field_name),
                              f"box {member!r} is not declared under boxes")
            if len(set(relationship.members())) < len(relationship.members()):
                raise At(("relationships", n), "a box cannot be related to itself")
            if isinstance(relationship, Internal):
                companies = {ids[m].company for m in relationship.members()}
                if len(companies) > 1:
                    raise At(("relationships", n, "systems"), "internal systems belong to one "
                              f"company, not {', '.join(sorted(companies))}")
            key = relationship_key(relationship)
            if key in seen:
                raise At(("relationships", n), f"relationship {key} is declared twice")
            seen.add(key)
        keys: set[str] = set()
        for n, subscription in enumerate(self.subscriptions):
            if subscription.box not in ids:
                raise At(("subscriptions", n, "box"),
                          f"box {subscription.box!r} is not declared under boxes")
            for value in subscription.where.get("source", ()):
                if value not in ids:
                    raise At(("subscriptions", n, "where", "source"),
                              f"box {value!r} is not declared under boxes")
            for value in subscription.where.get("region", ()):
                if value not in self.regions:
                    raise At(("subscriptions", n, "where", "region"),
                              f"region {value!r} is not declared under regions")
            if subscription.key in keys:
                raise At(("subscriptions", n), f"subscription {subscription.key} is declared "
                          "twice (give each a different name)")
            keys.add(subscription.key)
        return self

    def box(self, box_id: str) -> Box | None:
        return next((b for b in self.boxes if b.id == box_id), None)


def _member_fields(relationship: Trade | Branch | Internal) -> list[tuple[tuple[Any, ...], str]]:
    if isinstance(relationship, Trade):
        return [(("buyer",), relationship.buyer), (("supplier",), relationship.supplier)]
    if isinstance(relationship, Branch):
        return [(("head_office",), relationship.head_office),
                (("branch",), relationship.branch)]
    return [(("systems", i), m) for i, m in enumerate(relationship.systems)]


class TopologyError(ConfigError):
    """The topology file is not valid; ``problems`` lists (line, field, message)."""

    def __init__(self, path: Path | str, problems: list[tuple[int | None, str, str]]) -> None:
        lines = render(path, problems)
        super().__init__(f"the topology file {path} is not valid:\n  " + "\n  ".join(lines),
                         hint="fix the fields named above (see `boxbus topology --help` and "
                         "the example in deploy/topology/)")
        self.problems = problems


def load_topology(path: Path) -> Topology:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the topology file {path}: {exc.strerror}",
                          hint="give the path of a YAML topology file") from exc
    return parse_topology(text, path)


def parse_topology(text: str, path: Path | str = "<topology>") -> Topology:
    # A discriminated union adds the member's tag to the location: not a field.
    topology, _ = parse(text, path, Topology, TopologyError,
                        holds="regions, boxes, relationships and subscriptions",
                        tags=("trade", "branch", "internal"))
    return topology
