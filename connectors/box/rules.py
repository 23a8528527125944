"""A box's own rules, written by its administrator in one YAML file, without code:

    box: fresh-farm
    inbound:
      orders:                     # the business process an incoming order lands in
        - {partner: north-branch, kind: PURCHASE_ORDER, pipeline: wholesale, stage: review}
        - {pipeline: sales, stage: new}            # any other partner and kind
      items:                      # a partner's item codes -> this box's (with a unit change)
        north-branch:
          NB-APPLE: {sku: apples-kg}
          NB-PLUMS-5: {sku: plums-kg, unit: kg, factor: 5}
      units:                      # unit names of any partner -> this box's
        KGM: {unit: kg}
    outbound:
      share:                      # event type -> the partners it goes to
        StockLevelChanged: [north-branch, south-branch]
        ContactUpserted: [north-branch]
      withhold:                   # fields never shared, per partner ("*": with anyone)
        "*": {OrderPlaced: [notes]}
        south-branch: {ContactUpserted: [phone, email]}
      codes:                      # this box's item codes -> a partner's, in what it sends
        north-branch: {apples-kg: NB-APPLE}

The rules only narrow what the network allows: the router still delivers an event only to a
box related to its sender (or subscribed to it), whatever a box's rules say.

Rules are kept in the box's database, versioned (``boxbus_rules``); every transaction of the box
reads the newest version, so a change takes effect at once, without a restart.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bus.errors import ConfigError
from bus.events import EventBase
from bus.events.models import EVENT_TYPES, OrderKind
from bus.topology.model import EventType, Name
from bus.yamlfile import At, Problem, line_of, parse, render

# Events a box's rules never hold back: the bus's own answers (a receipt goes back to the
# sender of what it answers; the router's reports come from the router).
UNRULED = frozenset({"boxbus.network.DeliveryReceipt", "boxbus.network.EventsRouted"})
# What a box holds about people and its warehouse goes to nobody unless its rules say so.
PRIVATE = frozenset({"boxbus.contacts.ContactUpserted", "boxbus.logistics.StockLevelChanged"})
ANYONE = "*"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderProcess(_Strict):
    """Where an incoming order lands: the first rule whose partner and kind match."""

    partner: Name | None = None
    kind: OrderKind | None = None
    pipeline: str = Field(min_length=1, max_length=100)
    stage: str = Field(min_length=1, max_length=100)


class ItemCode(_Strict):
    """This box's article for a partner's code; ``factor`` of this box's ``unit`` make one of
    the partner's units (a box of 5 kg: unit kg, factor 5)."""

    sku: str = Field(min_length=1)
    unit: str | None = None
    factor: Decimal = Field(Decimal(1), gt=0)


class UnitName(_Strict):
    unit: str = Field(min_length=1)
    factor: Decimal = Field(Decimal(1), gt=0)


class Inbound(_Strict):
    orders: tuple[OrderProcess, ...] = ()
    items: dict[Name, dict[str, ItemCode]] = {}
    units: dict[str, UnitName] = {}


Partners = tuple[Name, ...] | Literal["related"]


class Outbound(_Strict):
    share: dict[EventType, Partners] = {}
    withhold: dict[Name | Literal["*"], dict[EventType, tuple[str, ...]]] = {}
    codes: dict[Name, dict[str, str]] = {}

    @model_validator(mode="after")
    def _check(self) -> Outbound:
        for kind in self.share:
            if kind in UNRULED:
                raise At(("outbound", "share", _short(kind)),
                         f"{_short(kind)} is the bus's own answer and always goes back to the "
                         "sender: it cannot be shared or held back")
        for partner, types in self.withhold.items():
            for kind, fields in types.items():
                model = EVENT_TYPES[kind]
                for name in fields:
                    where = ("outbound", "withhold", partner, _short(kind))
                    info = model.model_fields.get(name)
                    if info is None or name == "meta":
                        known = ", ".join(f for f in model.model_fields if f != "meta")
                        raise At(where, f"{_short(kind)} has no field {name!r} that can be "
                                 f"held back; its fields: {known}")
                    if info.is_required():
                        raise At(where, f"{_short(kind)}.{name} is required by the contract: "
                                 "only optional fields can be held back")
        return self


class Rules(_Strict):
    box: Name
    inbound: Inbound = Inbound()
    outbound: Outbound = Outbound()

    # What the box's rules decide, read by the box's code.

    def process_for(self, partner: str, kind: OrderKind | None) -> tuple[str, str]:
        """(pipeline, stage) of a new order from ``partner``."""
        for rule in self.inbound.orders:
            if rule.partner in (None, partner) and rule.kind in (None, kind):
                return rule.pipeline, rule.stage
        return "sales", "new"

    def own_item(self, partner: str, sku: str, unit: str) -> tuple[str, str, Decimal] | None:
        """This box's (sku, unit, factor) for a line a partner sent, or None when the partner
        has an item list and the code is not on it (a person must map it). A partner without
        an item list uses this box's codes."""
        units = self.inbound.units.get(unit)
        own_unit, factor = (units.unit, units.factor) if units else (unit, Decimal(1))
        table = self.inbound.items.get(partner)
        if table is None:
            return sku, own_unit, factor
        item = table.get(sku)
        if item is None:
            return None
        if item.unit is not None:
            return item.sku, item.unit, item.factor
        return item.sku, own_unit, factor * item.factor

    def shares(self, kind: str, partner: str) -> bool:
        if kind in UNRULED:
            return True
        listed = self.outbound.share.get(kind)
        if listed is None:
            return kind not in PRIVATE
        return listed == "related" or partner in listed

    def outgoing(self, event: EventBase) -> list[EventBase]:
        """What leaves the box for ``event``: nothing (not shared), the event shaped for its
        target, or, for an event without a target whose type the rules share with listed
        partners, one copy per partner, each shaped for it and addressed to it (its event id
        derived from the original's, so a retry makes the same copies)."""
        kind, target = event.TYPE, event.meta.target_box
        if kind in UNRULED:
            return [event]
        if target is not None:
            return [self._shaped(event, target)] if self.shares(kind, target) else []
        listed = self.outbound.share.get(kind)
        if listed is None:
            return [] if kind in PRIVATE else [self._shaped(event, None)]
        if listed == "related":
            return [self._shaped(event, None)]
        copies = []
        for partner in listed:
            meta = event.meta.model_copy(update={
                "event_id": str(uuid.uuid5(uuid.UUID(event.meta.event_id), partner))
                if _is_uuid(event.meta.event_id) else f"{event.meta.event_id}.{partner}",
                "target_box": partner})
            copies.append(self._shaped(event.model_copy(update={"meta": meta}), partner))
        return copies

    def _shaped(self, event: EventBase, partner: str | None) -> EventBase:
        """``event`` as ``partner`` may see it; for an event without one addressee (any
        related box or subscriber may get it), without every field any partner must not
        see."""
        held = set(self.outbound.withhold.get(ANYONE, {}).get(event.TYPE, ()))
        if partner is not None:
            held |= set(self.outbound.withhold.get(partner, {}).get(event.TYPE, ()))
        else:
            for fields in self.outbound.withhold.values():
                held |= set(fields.get(event.TYPE, ()))
        changes: dict[str, Any] = {}
        for name in held:
            info = type(event).model_fields[name]
            changes[name] = info.get_default(call_default_factory=True)
        codes = self.outbound.codes.get(partner or "", {})
        if codes:
            if isinstance(getattr(event, "sku", None), str):
                changes["sku"] = codes.get(event.sku, event.sku)  # type: ignore[attr-defined]
            lines = getattr(event, "lines", None)
            if isinstance(lines, tuple) and lines and hasattr(lines[0], "sku"):
                changes["lines"] = tuple(line.model_copy(update={"sku": codes.get(
                    line.sku, line.sku)}) for line in lines)
        return event.model_copy(update=changes) if changes else event


def _short(kind: str) -> str:
    return kind.rsplit(".", 1)[-1]


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class RulesError(ConfigError):
    """A rules file is not valid; ``problems`` lists (line, field, message)."""

    def __init__(self, path: Path | str, problems: list[Problem]) -> None:
        super().__init__(f"the rules file {path} is not valid:\n  "
                         + "\n  ".join(render(path, problems)),
                         hint="fix the fields named above (the format is described at the top "
                         "of connectors/box/rules.py and in the README)")
        self.problems = problems


def parse_rules(text: str, path: Path | str = "<rules>", box: str | None = None) -> Rules:
    """The rules of ``text``; with ``box``, they must be that box's."""
    rules, root = parse(text, path, Rules, RulesError, holds="box, inbound and outbound")
    if box is not None and rules.box != box:
        raise RulesError(path, [(line_of(root, ("box",)), "box",
                                 f"these are the rules of box {rules.box!r}, not of {box!r}")])
    return rules


def load_rules(path: Path, box: str | None = None) -> tuple[str, Rules]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the rules file {path}: {exc.strerror}",
                          hint="give the path of the box's YAML rules file") from exc
    return text, parse_rules(text, path, box)


@dataclass(frozen=True)
class RulesVersion:
    version: int  # 0: no rules applied yet (the defaults)
    rules: Rules
    digest: str = ""


_parsed: dict[str, Rules] = {}  # by digest: a version is parsed once per process


async def current_rules(conn: asyncpg.Connection, box: str) -> RulesVersion:
    """The newest rules of the box (the defaults before any were applied), as this
    transaction sees them."""
    row = await conn.fetchrow("SELECT version, body, digest FROM boxbus_rules "
                              "ORDER BY version DESC LIMIT 1")
    if row is None:
        return RulesVersion(0, Rules(box=box))
    rules = _parsed.get(row["digest"])
    if rules is None:
        rules = _parsed[row["digest"]] = parse_rules(row["body"], f"rules v{row['version']}")
    return RulesVersion(row["version"], rules, row["digest"])


async def apply_rules(conn: asyncpg.Connection, text: str, path: Path | str,
                      box: str, applied_by: str = "") -> tuple[int, bool]:
    """Validate ``text`` and keep it as the box's newest rules; (version, whether it
    changed: the same file applied again keeps its version)."""
    parse_rules(text, path, box)
    digest = hashlib.sha256(text.encode()).hexdigest()
    async with conn.transaction():
        await conn.execute("LOCK TABLE boxbus_rules IN SHARE ROW EXCLUSIVE MODE")
        last = await conn.fetchrow("SELECT version, digest FROM boxbus_rules "
                                   "ORDER BY version DESC LIMIT 1")
        if last is not None and last["digest"] == digest:
            return last["version"], False
        version = (last["version"] if last else 0) + 1
        await conn.execute(
            "INSERT INTO boxbus_rules (version, body, digest, source, applied_by) "
            "VALUES ($1, $2, $3, $4, $5)", version, text, digest, str(path), applied_by)
        await conn.execute("SELECT pg_notify('boxbus_rules', $1)", str(version))
    return version, True


async def rules_history(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(
        "SELECT version, digest, source, applied_by, applied_at FROM boxbus_rules "
        "ORDER BY version")]
