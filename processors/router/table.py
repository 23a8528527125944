"""The routing table: who gets an event, decided from its envelope headers alone.

Built from the control topics (boxes, relationships, subscriptions), rebuilt whole when one of
them changes. For one record of a box's ingress topic (which only that box, its *owner*, may
write) it gives a :class:`Decision`:

- **quarantine** (with a reason) when the event must not be delivered: the owner is not a
  registered box (``unknown-source``), the event claims another source than the owner or
  another region than the owner's (``forged-source``), the source may not publish its type, or
  it names a target box the source has no relationship with (or that does not exist);
- otherwise the owner's **region topic**, which thus holds only events of a proven source (the
  aggregator and any archive read it), and the **recipients**: the target box
  (``ce_targetbox``), when it is related to the
  source, plus every box with a subscription that matches the type, the ``where`` filters and
  the scope (``related``: the subscriber has a relationship with the source; ``network``: any
  source). A box is reached through its inbox topic; a partner without a box through the mail
  topic;
- **echoes**, recipients left out by the loop guard: the source itself, the event's origin
  (``ce_originbox``: the box where a mirrored fact was first recorded) and the box whose event
  of the same type caused this one (``ce_causationid``, as far as this router remembers it).

Most records differ only in attributes no rule looks at, so decisions are cached by the
attributes the rules read (source, type, region, target, origin, and subject/correlation id
only when a subscription filters on them).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bus import naming
from bus.envelope import (
    CAUSATION_ID,
    CORRELATION_ID,
    ID,
    PARTITION_KEY,
    REGION,
    SOURCE,
    SOURCE_PREFIX,
    TARGET_BOX,
    TYPE,
)
from bus.events import EVENT_TYPES
from bus.topology import control
from bus.topology.model import BoxKind, Scope

# What the mailer writes for a partner without a box (its e-mail replies, the receipts of
# mail that could not be delivered): all a partner may publish unless the topology says more.
PARTNER_PUBLISHES = frozenset({"boxbus.collaboration.CommentAdded",
                               "boxbus.network.DeliveryReceipt"})
ORIGIN_BOX = "ce_originbox"  # extension: the box a mirrored fact comes from (loop guard)
# Events only the router writes (its reports of where a box's events went): a box that
# publishes one would forge its own or another box's business receipts.
ROUTER_ONLY = frozenset({"boxbus.network.EventsRouted"})
# Request/reply: questions and their answers (the contract's boxbus.rpc types).
QUESTIONS = frozenset(t for t in EVENT_TYPES if t.startswith("boxbus.rpc.")
                      and t.endswith("Requested"))
ANSWERS = frozenset(t for t in EVENT_TYPES if t.startswith("boxbus.rpc.")
                    and t.endswith("Answered"))

_READ = {SOURCE: "source", TYPE: "type", REGION: "region", TARGET_BOX: "targetbox",
         ORIGIN_BOX: "origin", ID: "id", CAUSATION_ID: "causation",
         CORRELATION_ID: "correlationid", PARTITION_KEY: "subject"}


@dataclass(frozen=True, slots=True)
class Recipient:
    box: str
    topic: str
    partner: bool = False
    reply: bool = False  # an answer: to the partition the asking instance named

    @property
    def source(self) -> bytes:
        """The ``ce_source`` header this box's own events carry."""
        return (SOURCE_PREFIX + self.box).encode()


@dataclass(frozen=True, slots=True)
class Decision:
    recipients: tuple[Recipient, ...] = ()
    quarantine: str | None = None  # code, e.g. "forged-source"
    reason: str | None = None
    echoes: tuple[str, ...] = ()
    invalid: bool = False  # no readable envelope: a dead letter, not a quarantine
    region_topic: str | None = None  # where the accepted event is kept, its source proven


_INVALID = Decision(invalid=True, reason="required header(s) ce_source, ce_type, ce_id or "
                    "ce_region missing or empty: the router cannot tell where the event goes")
_SOURCE_PREFIX = SOURCE_PREFIX.encode()


@dataclass(frozen=True)
class _Box:
    id: str
    region: str
    partner: bool
    publishes: frozenset[str] | None
    rpc: bool = False


@dataclass(frozen=True)
class _Subscription:
    key: str
    box: str
    types: frozenset[str]
    network: bool
    where: Mapping[str, frozenset[str]]


def attributes(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    """The envelope attributes the router reads, as text (absent ones left out)."""
    found: dict[str, str] = {}
    for name, raw in headers or ():
        attribute = _READ.get(name)
        if attribute is not None and raw:
            found[attribute] = raw.decode("utf-8", "replace")
    source = found.get("source", "")
    found["source"] = source[len(SOURCE_PREFIX):] if source.startswith(SOURCE_PREFIX) else ""
    return found


@dataclass
class RoutingTable:
    namespace: str
    boxes: dict[str, _Box] = field(default_factory=dict)
    related: dict[str, frozenset[str]] = field(default_factory=dict)
    subscriptions: tuple[_Subscription, ...] = ()
    cache_size: int = 50_000
    memory_size: int = 200_000

    def __post_init__(self) -> None:
        self._cache: dict[tuple[Any, ...], Decision] = {}
        # event id -> (source box, type) of recently delivered events, oldest first, for the
        # causation guard
        self._recent: dict[bytes, tuple[bytes, bytes]] = {}
        filtered = {a for s in self.subscriptions for a in s.where}
        self._fine = bool(filtered & {"subject", "correlationid"})

    @classmethod
    def from_control(cls, namespace: str, records: Mapping[str, Mapping[str, bytes]],
                     **options: Any) -> RoutingTable:
        """The table of the control topics' current records (by kind, then key)."""
        return cls.of_network(namespace, control.network_of(records), **options)

    @classmethod
    def of_network(cls, namespace: str, network: control.Network,
                   **options: Any) -> RoutingTable:
        """The table of a typed network: its hot-path form (sets and tuples by box id)."""
        boxes = {box.id: _Box(box.id, box.region, box.kind is BoxKind.PARTNER,
                              frozenset(box.publishes) if box.publishes is not None
                              else PARTNER_PUBLISHES if box.kind is BoxKind.PARTNER else None,
                              box.rpc and box.kind is BoxKind.BOX)
                 for box in network.boxes}
        related: dict[str, set[str]] = {}
        for relationship in network.relationships:
            members = relationship.members()
            for member in members:
                related.setdefault(member, set()).update(m for m in members if m != member)
        subscriptions = tuple(
            _Subscription(s.key, s.box, frozenset(s.types), s.scope is Scope.NETWORK,
                          {a: frozenset(v) for a, v in s.where.items()})
            for s in sorted(network.subscriptions, key=lambda s: s.key))
        return cls(namespace, boxes, {k: frozenset(v) for k, v in related.items()},
                   subscriptions, **options)

    def keep_memory_of(self, previous: RoutingTable) -> None:
        """Carry the causation guard's memory over from the table this one replaces."""
        self._recent = previous._recent

    def describe(self) -> dict[str, int]:
        return {"boxes": len(self.boxes),
                "relationships": sum(len(v) for v in self.related.values()) // 2,
                "subscriptions": len(self.subscriptions)}

    def decide(self, headers: Mapping[str, bytes], owner: str) -> Decision:
        """Where one record of ``owner``'s ingress topic goes, from its headers (a mapping of
        header name to raw value). The hot path: a cache hit costs a few dictionary look-ups and
        decodes nothing."""
        get = headers.get
        source, kind = get(SOURCE), get(TYPE)
        if not (source and kind and get(ID) and get(REGION)):
            return _INVALID
        key: tuple[Any, ...] = (owner, source, kind, get(REGION), get(TARGET_BOX),
                                get(ORIGIN_BOX))
        if self._fine:
            key += (get(PARTITION_KEY), get(CORRELATION_ID))
        decision = self._cache.get(key)
        if decision is None:
            decision = self._decide(attributes(headers.items()), owner)
            if len(self._cache) >= self.cache_size:
                self._cache.clear()  # the mix changed a lot: start over
            self._cache[key] = decision
        if decision.recipients:
            causation = get(CAUSATION_ID)
            if causation:
                cause = self._recent.get(causation)
                if cause is not None and cause[1] == kind and any(
                        r.source == cause[0] for r in decision.recipients):
                    decision = Decision(
                        tuple(r for r in decision.recipients if r.source != cause[0]),
                        echoes=(*decision.echoes,
                                cause[0][len(_SOURCE_PREFIX):].decode()),
                        region_topic=decision.region_topic)
            # Only delivered events can be answered, so only they are remembered.
            self._recent[get(ID)] = (source, kind)  # type: ignore[index]
            if len(self._recent) > self.memory_size:
                for old in list(itertools.islice(self._recent, self.memory_size // 4)):
                    del self._recent[old]
        return decision

    def _decide(self, found: Mapping[str, str], owner: str) -> Decision:
        source_id, kind = found.get("source", ""), found.get("type", "")
        source = self.boxes.get(owner)
        if source is None:  # (a partner's ingress topic is written by the mailer for it)
            return _quarantine("unknown-source", f"box {owner!r}, whose ingress topic this is, "
                               "is not registered in the network (apply a topology that "
                               "declares it)")
        if source_id != owner:
            return _quarantine("forged-source", f"the event claims source box {source_id!r}, "
                               f"but it came from the ingress topic of box {owner!r}")
        if found.get("region") != source.region:
            return _quarantine("forged-source", f"the event claims region "
                               f"{found.get('region')!r}, but its source box {owner!r} is in "
                               f"region {source.region!r}")
        if kind in ROUTER_ONLY:
            return _quarantine("type-not-allowed", f"{kind!r} is written by the router itself; "
                               f"box {source_id!r} may not publish it")
        if source.publishes is not None and kind not in source.publishes:
            return _quarantine("type-not-allowed", f"box {source_id!r} may not publish "
                               f"{kind!r} (its publishes list does not name it)")
        related = self.related.get(source_id, frozenset())
        chosen: list[str] = []
        target = found.get("targetbox")
        if target:
            if target not in self.boxes:
                return _quarantine("unknown-target", f"target box {target!r} is not registered")
            if target not in related:
                return _quarantine("unrelated-target", f"target box {target!r} has no "
                                   f"relationship with source box {source_id!r}")
            chosen.append(target)
        if kind in QUESTIONS or kind in ANSWERS:
            return self._request_or_reply(kind, source_id, target)
        for subscription in self.subscriptions:
            if kind not in subscription.types or subscription.box in chosen:
                continue
            if not subscription.network and subscription.box not in related:
                continue
            if all(found.get(a) in values for a, values in subscription.where.items()):
                chosen.append(subscription.box)
        echoes = tuple(b for b in chosen if b in (source_id, found.get("origin")))
        recipients = tuple(self._recipient(b) for b in chosen
                           if b not in echoes and b in self.boxes)
        return Decision(recipients, echoes=echoes,
                        region_topic=naming.region_topic(self.namespace, source.region))

    def _request_or_reply(self, kind: str, source: str, target: str | None) -> Decision:
        """A question goes to its target's requests topic, an answer to the replies topic of
        the box that asked (at the partition it named): only between related boxes that take
        part in request/reply, and never to subscribers."""
        what = "question" if kind in QUESTIONS else "answer"
        if not target:
            return _quarantine("no-target", f"a {what} ({kind}) names the box it is for "
                               "(ce_targetbox)")
        if not self.boxes[target].rpc or not self.boxes[source].rpc:
            other = target if not self.boxes[target].rpc else source
            return _quarantine("no-rpc", f"box {other!r} takes no part in request/reply (give "
                               "it rpc: true in the topology)")
        if kind in QUESTIONS:
            return Decision((Recipient(target, naming.requests_topic(self.namespace, target)),))
        return Decision((Recipient(target, naming.replies_topic(self.namespace, target),
                                   reply=True),))

    def _recipient(self, box_id: str) -> Recipient:
        if self.boxes[box_id].partner:
            return Recipient(box_id, naming.mail_topic(self.namespace), partner=True)
        return Recipient(box_id, naming.inbox_topic(self.namespace, box_id))

    def recipient_topics(self) -> list[str]:
        """Every topic a decision may send to: inboxes, the mail topic, region topics, and
        the requests and replies topics of the boxes in request/reply."""
        return sorted({self._recipient(b).topic for b in self.boxes}
                      | {naming.region_topic(self.namespace, b.region)
                         for b in self.boxes.values()}
                      | {t for b in self.boxes.values() if b.rpc
                         for t in (naming.requests_topic(self.namespace, b.id),
                                   naming.replies_topic(self.namespace, b.id))})


def _quarantine(code: str, reason: str) -> Decision:
    return Decision(quarantine=code, reason=reason)
