"""What one e-mail to a partner says, before it has a layout: :class:`Letter`, made from an
event by :func:`letter_for` in the partner's language. The templates (text and HTML) and the
order's PDF lay it out; nothing here knows about either.

Every event the router sends a partner becomes a letter: orders placed, amended and
cancelled, comments, documents and shipments have their own wording; any other type gets a
generic one listing its fields, so nothing sent to a partner is dropped for want of a
template.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from bus.events import EventBase
from bus.events.models import (
    CommentAdded,
    DocumentAttached,
    Line,
    Money,
    OrderAmended,
    OrderCancelled,
    OrderPlaced,
    ShipmentDispatched,
)
from connectors.mail.phrases import Phrases

# ISO 4217 currencies without two decimals (the rest have two).
_EXPONENT = {"JPY": 0, "KRW": 0, "HUF": 2, "ISK": 0, "CLP": 0, "BHD": 3, "KWD": 3, "TND": 3}


def amount(money: Money) -> Decimal:
    """The exact amount of ``money`` in units of its currency."""
    exponent = _EXPONENT.get(money.currency, 2)
    return Decimal(money.amount_minor).scaleb(-exponent)


def show_money(value: Decimal, currency: str) -> str:
    exponent = _EXPONENT.get(currency, 2)
    rounded = value.quantize(Decimal(1).scaleb(-exponent), ROUND_HALF_UP)
    return f"{rounded:,.{exponent}f} {currency}".replace(",", "\u202f")


def show_quantity(value: Decimal) -> str:
    text = f"{value.normalize():f}"
    return text


def show_date(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d") if value is not None else ""


def line_net(line: Line) -> Decimal:
    """Quantity times unit price, exact (rounded only when shown or written to UBL)."""
    return line.quantity * amount(line.unit_price)


@dataclass(frozen=True)
class Table:
    """The lines of an order, shown: a header, the rows, and the totals under them."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    totals: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Party:
    """A side of the conversation, as the partner should read it."""

    box: str
    name: str


@dataclass(frozen=True)
class Letter:
    language: str
    kind: str  # placed, amended, cancelled, comment, document, shipment, other
    subject: str
    greeting: str
    intro: str
    order_id: str
    facts: tuple[tuple[str, str], ...] = ()
    quote: str | None = None  # a comment's text, shown as written
    table: Table | None = None
    notes: tuple[str, ...] = ()
    reply: str = ""
    invite: str = ""
    footer: str = ""
    with_order_documents: bool = False  # the PDF and the UBL Order go with it
    extra: dict[str, Any] = field(default_factory=dict)


def order_table(phrases: Phrases, lines: tuple[Line, ...], total: Money) -> Table:
    label = phrases.label
    currency = total.currency
    net = sum((line_net(line) for line in lines), Decimal(0))
    rows = tuple(
        (str(line.line_no), line.sku, line.description,
         f"{show_quantity(line.quantity)} {line.unit}",
         show_money(amount(line.unit_price), line.unit_price.currency),
         f"{Decimal(line.tax_rate_bp) / 100:g} %",
         show_money(line_net(line), line.unit_price.currency))
        for line in lines)
    gross = amount(total)
    return Table(
        header=(label("line"), label("sku"), label("description"), label("quantity"),
                label("unit_price"), label("tax"), label("net")),
        rows=rows,
        totals=((label("net_total"), show_money(net, currency)),
                (label("tax_total"), show_money(gross - net, currency)),
                (label("total"), show_money(gross, currency))))


def order_of(event: EventBase) -> str:
    """The order (or other object) an event is about: the thread it belongs to."""
    for name in ("order_id", "subject_id"):
        value = getattr(event, name, None)
        if isinstance(value, str) and value:
            return value
    return str(event.meta.aggregate_key)


def letter_for(event: EventBase, *, language: str, partner: Party, sender: Party,
               invite_url: str = "", invite_until: datetime | None = None) -> Letter:
    """The letter that tells ``partner`` about ``event`` sent by ``sender``."""
    phrases = Phrases(language)
    say, label = phrases.say, phrases.label
    order = order_of(event)
    common: dict[str, Any] = {
        "language": language, "order_id": order,
        "greeting": say("greeting", partner=partner.name),
        "reply": say("reply", sender=sender.name),
        "invite": say("invite", sender=sender.name, url=invite_url,
                      until=show_date(invite_until)) if invite_url else "",
        "footer": say("footer", sender=sender.name),
    }
    if isinstance(event, OrderPlaced):
        facts = [(label("order"), order), (label("buyer"), sender.name),
                 (label("supplier"), partner.name),
                 (label("date"), show_date(event.meta.occurred_at))]
        if event.requested_delivery_at:
            facts.append((label("delivery_by"), show_date(event.requested_delivery_at)))
        if event.delivery_address:
            facts.append((label("delivery_address"), event.delivery_address))
        if event.notes:
            facts.append((label("notes"), event.notes))
        return Letter(kind="placed", subject=say("placed.subject", order=order,
                                                 sender=sender.name),
                      intro=say("placed.intro", sender=sender.name), facts=tuple(facts),
                      table=order_table(phrases, event.lines, event.total),
                      notes=(say("attachments"),), with_order_documents=True, **common)
    if isinstance(event, OrderAmended):
        facts = [(label("order"), order), (label("revision"), str(event.revision)),
                 (label("date"), show_date(event.meta.occurred_at))]
        if event.reason:
            facts.append((label("reason"), event.reason))
        return Letter(kind="amended", subject=say("amended.subject", order=order,
                                                  revision=event.revision),
                      intro=say("amended.intro", sender=sender.name, order=order),
                      facts=tuple(facts),
                      table=order_table(phrases, event.lines, event.total),
                      notes=(say("attachments"),), with_order_documents=True, **common)
    if isinstance(event, OrderCancelled):
        return Letter(kind="cancelled", subject=say("cancelled.subject", order=order),
                      intro=say("cancelled.intro", sender=sender.name, order=order),
                      facts=((label("order"), order), (label("reason"), event.reason)),
                      **common)
    if isinstance(event, CommentAdded):
        return Letter(kind="comment", subject=say("comment.subject", order=order,
                                                  author=event.author),
                      intro=say("comment.intro", author=event.author, sender=sender.name,
                                order=order),
                      quote=event.text, **common)
    if isinstance(event, DocumentAttached):
        size = f"{event.size_bytes / 1024:.0f} KiB" if event.size_bytes >= 1024 \
            else f"{event.size_bytes} B"
        notes = (say("document.link", ref=event.content_ref),) if event.content is None \
            and event.content_ref else ()
        return Letter(kind="document", subject=say("document.subject", order=order,
                                                   file=event.file_name),
                      intro=say("document.intro", sender=sender.name, order=order,
                                file=event.file_name, size=size),
                      notes=notes, **common)
    if isinstance(event, ShipmentDispatched):
        facts = [(label("order"), order), (label("warehouse"), event.from_warehouse),
                 (label("date"), show_date(event.dispatched_at))]
        if event.expected_at:
            facts.append((label("expected"), show_date(event.expected_at)))
        if event.carrier:
            facts.append((label("carrier"), event.carrier))
        if event.tracking_id:
            facts.append((label("tracking"), event.tracking_id))
        rows = tuple((str(i.line_no), i.sku, "", f"{show_quantity(i.quantity)} {i.unit}")
                     for i in event.lines)
        table = Table((label("line"), label("sku"), label("description"), label("quantity")),
                      rows, ())
        return Letter(kind="shipment", subject=say("shipment.subject", order=order),
                      intro=say("shipment.intro", sender=sender.name, order=order),
                      facts=tuple(facts), table=table, **common)
    what = type(event).__name__
    fields = tuple((name, _plain(value)) for name, value in event.model_dump().items()
                   if name != "meta" and value not in (None, (), [], ""))
    return Letter(kind="other", subject=say("other.subject", what=what, sender=sender.name),
                  intro=say("other.intro", sender=sender.name, what=what), facts=fields,
                  **common)


def _plain(value: Any) -> str:
    if isinstance(value, datetime):
        return show_date(value)
    if isinstance(value, dict) and {"amount_minor", "currency"} <= value.keys():
        return show_money(amount(Money(**value)), value["currency"])
    if isinstance(value, list | tuple):
        return "; ".join(_plain(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_plain(v)}" for k, v in value.items() if v is not None)
    return str(value.value if hasattr(value, "value") else value)
