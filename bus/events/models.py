"""Event models generated from schemas/*.avsc by `boxbus schemas codegen`.

Do not edit: change the schema and generate again. A test fails when this file and
the schemas differ."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AfterValidator

from bus.events.base import EventBase, Record, Timestamp, decimal_places


class EventMeta(Record):
    """What every boxbus event carries besides its data: who published it, where it belongs,
    what it is about, and how it relates to other events. The same values travel as CloudEvents
    headers (ce_id, ce_source, ce_time, ce_region, ...) so that events can be routed without
    decoding the body."""

    event_id: str
    """Unique id of this event (a UUID). Consumers deduplicate by it; a retried publish keeps
    the same id."""
    source_box: str
    """Id of the box that published the event. A box publishes only as itself."""
    region: str
    """Region the event belongs to (north, south, east, west, centre, central, ...). It selects
    the region topic; it must match the topic it is read from."""
    aggregate_key: str
    """Key of the business object the event is about (an order id, a shipment id, a contact
    id). It is the Kafka record key: all events with the same key keep their order."""
    occurred_at: Timestamp
    """When the fact happened in the source box, UTC milliseconds since the epoch."""
    target_box: str | None = None
    """Id of the box the event is meant for, when it is meant for one box (a purchase order for
    its supplier); null for events any subscriber may receive."""
    correlation_id: str | None = None
    """Id shared by every event of one business conversation (an order and everything that
    follows from it)."""
    causation_id: str | None = None
    """event_id of the event that caused this one, if any."""


class CommentAdded(EventBase):
    """Someone wrote a comment on an order (or another shared object); comments flow both
    ways."""

    TYPE: ClassVar[str] = "boxbus.collaboration.CommentAdded"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    subject_id: str
    """Id of what the comment is about, e.g. the order id."""
    comment_id: str
    """Id of the comment."""
    author: str
    """Name of the person who wrote it, as shown to the other side."""
    text: str
    """The comment, plain text."""
    in_reply_to: str | None = None
    """comment_id this one answers."""


class DocumentType(StrEnum):
    """Kinds of documents."""

    INVOICE = "INVOICE"
    WAYBILL = "WAYBILL"
    CONTRACT = "CONTRACT"
    QUOTE = "QUOTE"
    CERTIFICATE = "CERTIFICATE"
    OTHER = "OTHER"


class DocumentAttached(EventBase):
    """A document was attached to an order: an invoice, a waybill, a contract. Small documents
    travel inline; large ones by reference (claim check): exactly one of content and
    content_ref is set."""

    TYPE: ClassVar[str] = "boxbus.collaboration.DocumentAttached"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    subject_id: str
    """Id of what the document belongs to, e.g. the order id."""
    document_id: str
    """Id of the document."""
    document_type: DocumentType
    """What kind of document it is."""
    file_name: str
    """File name, e.g. 'invoice-2026-0042.pdf'."""
    media_type: str
    """Media type, e.g. 'application/pdf'."""
    sha256: str
    """SHA-256 of the content, lower-case hex: the receiver checks it."""
    size_bytes: int
    """Size of the content in bytes."""
    content: bytes | None = None
    """The content itself, for documents up to 256 KiB."""
    content_ref: str | None = None
    """Where to fetch larger content (a URL the receiver is entitled to read)."""


class ContactKind(StrEnum):
    """Person or company."""

    PERSON = "PERSON"
    COMPANY = "COMPANY"


class ContactUpserted(EventBase):
    """A contact (a person or a company) was created or changed; the whole contact is sent."""

    TYPE: ClassVar[str] = "boxbus.contacts.ContactUpserted"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    contact_id: str
    """Id of the contact in the source box."""
    kind: ContactKind
    """What the contact is."""
    name: str
    """Full name or company name."""
    email: str | None = None
    """E-mail address."""
    phone: str | None = None
    """Phone number, international format."""
    company: str | None = None
    """For a person: the company they work for."""
    tax_id: str | None = None
    """For a company: its tax id."""
    address: str | None = None
    """Postal address, as one printable text."""
    tags: tuple[str, ...] = ()
    """Labels, e.g. 'supplier', 'vip'."""


class PartnerInvited(EventBase):
    """A partner without a box was invited to set one up (sent with the e-mail of an order)."""

    TYPE: ClassVar[str] = "boxbus.contacts.PartnerInvited"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    partner_id: str
    """Id of the partner in the inviting box."""
    email: str
    """Where the invitation went."""
    company_name: str
    """The partner's company."""
    invited_by_box: str
    """The box that invited."""
    invitation_url: str
    """Link that starts the partner's onboarding."""
    order_id: str | None = None
    """The order whose e-mail carried the invitation."""


# An exact quantity with three decimal places (12.500 kg, 3.000 pcs): a decimal, never a float.
# The unit travels next to it.
Quantity = Annotated[Decimal, AfterValidator(decimal_places(3, 18))]


class Money(Record):
    """An amount of money, exact: integer minor units (cents) with its ISO 4217 currency
    code."""

    amount_minor: int
    """Amount in minor units of the currency (1234 EUR = 12.34 euros). Negative for credits and
    refunds."""
    currency: str
    """ISO 4217 alphabetic code, upper case, e.g. EUR, USD, PLN."""


class Line(Record):
    """One line of an order, confirmation or invoice."""

    line_no: int
    """Position of the line, from 1; stable across amendments."""
    sku: str
    """The seller's article number (stock keeping unit)."""
    description: str
    """Name of the article as the customer sees it."""
    quantity: Quantity
    """How many units are ordered."""
    unit: str
    """Unit of the quantity: pcs, kg, l, m, box, ..."""
    unit_price: Money
    """Price of one unit, before tax."""
    tax_rate_bp: int = 0
    """Tax rate in basis points (2300 = 23 %)."""


class InvoiceIssued(EventBase):
    """The supplier issued an invoice for an order."""

    TYPE: ClassVar[str] = "boxbus.finance.InvoiceIssued"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    invoice_id: str
    """Id of the invoice."""
    order_id: str
    """The order invoiced."""
    number: str
    """The invoice number as printed."""
    issued_at: Timestamp
    """Date of issue."""
    due_at: Timestamp
    """When payment is due."""
    lines: tuple[Line, ...]
    """Invoiced lines."""
    net: Money
    """Total before tax."""
    tax: Money
    """Total tax."""
    total: Money
    """Total to pay."""


class PaymentMethod(StrEnum):
    """How money is paid."""

    BANK_TRANSFER = "BANK_TRANSFER"
    CARD = "CARD"
    CASH = "CASH"
    OFFSET = "OFFSET"
    OTHER = "OTHER"


class PaymentRecorded(EventBase):
    """A payment was made (buyer) or received (supplier) against an invoice."""

    TYPE: ClassVar[str] = "boxbus.finance.PaymentRecorded"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    payment_id: str
    """Id of the payment."""
    invoice_id: str
    """The invoice paid."""
    amount: Money
    """Amount paid."""
    paid_at: Timestamp
    """When the money moved."""
    method: PaymentMethod
    """How it was paid."""
    reference: str | None = None
    """Bank or payment reference."""


class ItemQuantity(Record):
    """A quantity of one article, without price: what is shipped, received or counted."""

    line_no: int
    """Line of the order this quantity belongs to (0 if none)."""
    sku: str
    """Article number."""
    quantity: Quantity
    """How many units."""
    unit: str
    """Unit of the quantity."""


class GoodsReceived(EventBase):
    """The buyer received goods of a shipment into a warehouse; differences to what was shipped
    are reported line by line."""

    TYPE: ClassVar[str] = "boxbus.logistics.GoodsReceived"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    shipment_id: str
    """The shipment received."""
    order_id: str
    """Its order."""
    warehouse: str
    """Warehouse the goods went into."""
    lines: tuple[ItemQuantity, ...]
    """What arrived."""
    received_at: Timestamp
    """When the goods were received."""
    discrepancy_note: str | None = None
    """What was missing or damaged, if anything."""


class ShipmentDispatched(EventBase):
    """The supplier shipped goods: they are written off its warehouse, and the buyer sees them
    in transit at once (and can sell from transit)."""

    TYPE: ClassVar[str] = "boxbus.logistics.ShipmentDispatched"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    shipment_id: str
    """Id of the shipment."""
    order_id: str
    """The order being fulfilled."""
    from_warehouse: str
    """Warehouse the goods left."""
    lines: tuple[ItemQuantity, ...]
    """What was shipped."""
    dispatched_at: Timestamp
    """When the goods left."""
    expected_at: Timestamp | None = None
    """When they should arrive."""
    carrier: str | None = None
    """Who carries them."""
    tracking_id: str | None = None
    """The carrier's tracking number."""


class StockChangeReason(StrEnum):
    """Why stock changes."""

    SALE = "SALE"
    RECEIPT = "RECEIPT"
    DISPATCH = "DISPATCH"
    RETURN = "RETURN"
    ADJUSTMENT = "ADJUSTMENT"
    COUNT = "COUNT"


class StockLevelChanged(EventBase):
    """The stock of one article in one warehouse changed."""

    TYPE: ClassVar[str] = "boxbus.logistics.StockLevelChanged"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    warehouse: str
    """The warehouse."""
    sku: str
    """The article."""
    unit: str
    """Unit of the quantities."""
    on_hand: Quantity
    """Quantity physically in the warehouse after the change."""
    in_transit: Quantity
    """Quantity on its way to the warehouse."""
    reserved: Quantity
    """Quantity promised to orders and not yet shipped."""
    reason: StockChangeReason
    """What changed it."""


class BranchReportSent(EventBase):
    """A branch reported its figures for a period back to the head office."""

    TYPE: ClassVar[str] = "boxbus.network.BranchReportSent"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    report_id: str
    """Id of the report."""
    branch_box: str
    """The reporting branch."""
    period_start: Timestamp
    """Start of the period (inclusive)."""
    period_end: Timestamp
    """End of the period (exclusive)."""
    orders_count: int
    """Orders taken in the period."""
    revenue: Money
    """Revenue of the period including tax."""
    stock_value: Money
    """Value of the stock at the end of the period."""
    notes: str | None = None
    """Comments of the branch."""


class ReceiptStatus(StrEnum):
    """Outcome of applying an event."""

    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"


class DeliveryReceipt(EventBase):
    """The recipient's answer to an event it received: applied (ACCEPTED) or refused (REJECTED,
    with the reason), so the sender knows its event took effect, not just that it arrived."""

    TYPE: ClassVar[str] = "boxbus.network.DeliveryReceipt"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    receipt_for_event_id: str
    """event_id of the event this receipt is about."""
    receipt_for_type: str
    """Its type, e.g. boxbus.orders.OrderPlaced."""
    status: ReceiptStatus
    """Whether the event was applied."""
    reason: str | None = None
    """Why it was rejected, in words a person can act on."""
    processed_at: Timestamp
    """When the recipient applied or refused it."""


class DirectiveSent(EventBase):
    """The head office sent a directive (an instruction) to branches."""

    TYPE: ClassVar[str] = "boxbus.network.DirectiveSent"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    directive_id: str
    """Id of the directive."""
    title: str
    """Short title."""
    body: str
    """The directive, plain text."""
    effective_from: Timestamp
    """From when it applies."""
    branches: tuple[str, ...] = ()
    """Boxes of the branches it is for; empty means all branches."""


class RoutedEvent(Record):
    """What became of one event at the router."""

    event_id: str
    """event_id of the box's event."""
    event_type: str
    """Its type, e.g. boxbus.orders.OrderPlaced."""
    recipients: tuple[str, ...]
    """Boxes (or partners without a box) the event was delivered to; empty when it went
    nowhere."""
    by_mail: tuple[str, ...] = ()
    """Those of the recipients that are partners without a box, reached by e-mail: they answer
    only to refuse (a mail that could not be delivered)."""
    refused_code: str | None = None
    """Why the router did not deliver it at all (e.g. target-not-related), as a code; null when
    delivered."""
    refused_reason: str | None = None
    """The same in words a person can act on."""


class EventsRouted(EventBase):
    """The router's report to a box about events of that box it routed in one round: to which
    boxes each went, or why it went nowhere. Written only for events the box asked to track
    (header boxbus_track), straight into the box's inbox topic."""

    TYPE: ClassVar[str] = "boxbus.network.EventsRouted"

    meta: EventMeta
    """Identity, origin and routing of this report (source_box is the router)."""
    events: tuple[RoutedEvent, ...]
    """The events routed, in the order the router read them."""
    routed_at: Timestamp
    """When the router delivered them."""


class PriceEntry(Record):
    """The price of one article."""

    sku: str
    """Article number."""
    unit: str
    """Unit the price is for."""
    price: Money
    """Price of one unit, before tax."""
    tax_rate_bp: int = 0
    """Tax rate in basis points."""


class PriceListSent(EventBase):
    """The head office sent a price list to branches; it replaces the previous one from
    valid_from on."""

    TYPE: ClassVar[str] = "boxbus.network.PriceListSent"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    price_list_id: str
    """Id of the price list."""
    valid_from: Timestamp
    """From when the prices apply."""
    valid_until: Timestamp | None = None
    """Until when; null for 'until replaced'."""
    entries: tuple[PriceEntry, ...]
    """One entry per article."""


class OrderAmended(EventBase):
    """The buyer changed an order before it was fulfilled; the lines given replace the previous
    ones."""

    TYPE: ClassVar[str] = "boxbus.orders.OrderAmended"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    order_id: str
    """Id of the order in the buyer's box; the aggregate key of every event about this
    order."""
    revision: int
    """Number of this amendment, from 1, increasing by one."""
    lines: tuple[Line, ...]
    """All lines of the order after the amendment."""
    total: Money
    """New total including tax."""
    reason: str | None = None
    """Why the order changed."""


class Party(StrEnum):
    """A side of an order."""

    BUYER = "BUYER"
    SUPPLIER = "SUPPLIER"


class OrderCancelled(EventBase):
    """An order was cancelled; nothing more will be delivered or invoiced for it."""

    TYPE: ClassVar[str] = "boxbus.orders.OrderCancelled"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    order_id: str
    """Id of the order in the buyer's box; the aggregate key of every event about this
    order."""
    cancelled_by: Party
    """Which side cancelled."""
    reason: str
    """Why, in words for the other side."""


class OrderConfirmed(EventBase):
    """The supplier accepted an order, with its terms and dates; the lines may differ from the
    ordered ones (partial availability, other prices)."""

    TYPE: ClassVar[str] = "boxbus.orders.OrderConfirmed"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    order_id: str
    """Id of the order in the buyer's box; the aggregate key of every event about this
    order."""
    lines: tuple[Line, ...]
    """The lines the supplier will deliver."""
    total: Money
    """Confirmed total including tax."""
    payment_terms: str
    """Payment terms as agreed, e.g. 'NET30', 'prepayment'."""
    payment_due_days: int
    """Days after the invoice within which payment is due."""
    promised_dispatch_at: Timestamp
    """When the supplier will dispatch the goods."""
    promised_delivery_at: Timestamp
    """When the goods will arrive."""
    notes: str | None = None
    """Free text from the supplier."""


class OrderKind(StrEnum):
    """Who orders from whom."""

    STORE_ORDER = "STORE_ORDER"
    PURCHASE_ORDER = "PURCHASE_ORDER"


class OrderPlaced(EventBase):
    """A buyer placed an order: a store order in its region's box, or a purchase order to a
    supplier (which arrives in the supplier's box as a sales order)."""

    TYPE: ClassVar[str] = "boxbus.orders.OrderPlaced"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    order_id: str
    """Id of the order in the buyer's box; the aggregate key of every event about this
    order."""
    kind: OrderKind
    """STORE_ORDER: a store orders from its regional box; PURCHASE_ORDER: a box buys from a
    supplier."""
    buyer_box: str
    """Box of the buying company."""
    supplier_box: str | None = None
    """Box of the supplier; null when the supplier has no box and is reached by e-mail (see
    supplier_email)."""
    supplier_email: str | None = None
    """Where the order goes by e-mail when the supplier has no box."""
    store_id: str | None = None
    """The store that placed a store order."""
    lines: tuple[Line, ...]
    """The ordered lines, at least one."""
    total: Money
    """Total of the order including tax."""
    requested_delivery_at: Timestamp | None = None
    """When the buyer wants the goods."""
    delivery_address: str | None = None
    """Where the goods go, as one printable text."""
    notes: str | None = None
    """Free text from the buyer."""


class AnswerStatus(StrEnum):
    """How a question was answered."""

    OK = "OK"
    NOT_FOUND = "NOT_FOUND"
    REFUSED = "REFUSED"
    FAILED = "FAILED"


class AnswerInfo(Record):
    """What every answer on the bus carries: the question it answers and how it went."""

    request_id: str
    """Id of the question answered."""
    status: AnswerStatus
    """OK: the data follows; NOT_FOUND: nothing known about what was asked; REFUSED: the
    answering box may not tell; FAILED: it could not answer now."""
    error: str | None = None
    """Why it is not OK, in words a person can act on."""


class BillingPeriodAnswered(EventBase):
    """Billing's answer: the client's current billing period, what was invoiced and paid in it,
    and the open balance. Any answer but OK carries only its status and error (the router
    itself answers REFUSED for a question it does not deliver)."""

    TYPE: ClassVar[str] = "boxbus.rpc.BillingPeriodAnswered"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    answer: AnswerInfo
    """The question answered and how."""
    client_id: str | None = None
    """The client. Empty unless the status is OK."""
    period_start: Timestamp | None = None
    """First day of the current billing period. Empty unless the status is OK."""
    period_end: Timestamp | None = None
    """Day after its last day. Empty unless the status is OK."""
    invoiced: Money | None = None
    """Invoiced to the client in the period. Empty unless the status is OK."""
    paid: Money | None = None
    """Paid by the client in the period. Empty unless the status is OK."""
    balance: Money | None = None
    """Open balance of the client (all periods). Empty unless the status is OK."""
    open_invoices: int = 0
    """Invoices not paid in full. Empty unless the status is OK."""


class RequestInfo(Record):
    """What every question asked on the bus carries: its id, where the answer goes back to and
    until when it is awaited."""

    request_id: str
    """Id of the question; the answer names it (also the event's correlation id)."""
    reply_partition: int
    """The partition of the asking box's replies topic the asking instance reads: the router
    puts the answer there."""
    deadline: Timestamp
    """When the asker stops waiting; an answer after it is dropped."""
    requester: str
    """Which instance of the asking box asked (for logs and traces)."""


class BillingPeriodRequested(EventBase):
    """A question to billing: the current billing period of a client and its balance (a
    salesperson on the client's profile)."""

    TYPE: ClassVar[str] = "boxbus.rpc.BillingPeriodRequested"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    request: RequestInfo
    """The question's id, reply partition and deadline."""
    client_id: str
    """The client, by its id in the company's systems."""


class Rate(Record):
    """A contract rate: the price of one unit of a service."""

    service: str
    """The service, e.g. 'conference-bridge'."""
    unit: str
    """What is counted: minute, participant-minute, session, ..."""
    price: Money
    """Price of one unit, before tax."""
    tax_rate_bp: int = 0
    """Tax rate in basis points (2100 = 21 %)."""


class ContractRatesAnswered(EventBase):
    """Sales' answer: the client's contract rates in force. Any answer but OK carries only its
    status and error (the router itself answers REFUSED for a question it does not deliver)."""

    TYPE: ClassVar[str] = "boxbus.rpc.ContractRatesAnswered"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    answer: AnswerInfo
    """The question answered and how."""
    client_id: str | None = None
    """The client. Empty unless the status is OK."""
    rates: tuple[Rate, ...] = ()
    """The rates, one per service and unit. Empty unless the status is OK."""
    valid_from: Timestamp | None = None
    """Since when they apply. Empty unless the status is OK."""


class ContractRatesRequested(EventBase):
    """A question to sales: the latest contract rates of a client (billing, when it has
    none)."""

    TYPE: ClassVar[str] = "boxbus.rpc.ContractRatesRequested"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    request: RequestInfo
    """The question's id, reply partition and deadline."""
    client_id: str
    """The client."""


class BookingMade(EventBase):
    """A booking entered in sales: a service the delivery system is to provide (a conference
    bridge at a time)."""

    TYPE: ClassVar[str] = "boxbus.services.BookingMade"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    booking_id: str
    """Id of the booking; the aggregate key of its whole chain."""
    client_id: str
    """The client."""
    client_box: str | None = None
    """The client's own box, when it has one (its invoice goes there)."""
    client_email: str | None = None
    """Where the client is reached without a box."""
    service: str
    """What is booked, e.g. 'conference-bridge'."""
    starts_at: Timestamp
    """When it starts."""
    duration_minutes: int
    """How long it is booked for."""
    participants: int
    """How many take part."""
    notes: str | None = None
    """Free text from sales."""


class ContractRatesChanged(EventBase):
    """Sales changed a client's contract rates: billing keeps its copy current."""

    TYPE: ClassVar[str] = "boxbus.services.ContractRatesChanged"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    client_id: str
    """The client."""
    rates: tuple[Rate, ...]
    """The rates in force from valid_from."""
    valid_from: Timestamp
    """Since when they apply."""


class ServiceDelivered(EventBase):
    """The delivery system provided a booked service: its usage, for billing."""

    TYPE: ClassVar[str] = "boxbus.services.ServiceDelivered"

    meta: EventMeta
    """Identity, origin and routing of this event."""
    booking_id: str
    """The booking delivered."""
    client_id: str
    """The client."""
    client_box: str | None = None
    """The client's own box, when it has one."""
    client_email: str | None = None
    """Where the client is reached without a box."""
    service: str
    """What was provided."""
    started_at: Timestamp
    """When it started."""
    ended_at: Timestamp
    """When it ended."""
    duration_minutes: int
    """How long it ran."""
    participants: int
    """How many took part."""
    resources: tuple[str, ...] = ()
    """What it used (bridge line, recording, ...)."""


EVENT_TYPES: dict[str, type[EventBase]] = {
    BillingPeriodAnswered.TYPE: BillingPeriodAnswered,
    BillingPeriodRequested.TYPE: BillingPeriodRequested,
    BookingMade.TYPE: BookingMade,
    BranchReportSent.TYPE: BranchReportSent,
    CommentAdded.TYPE: CommentAdded,
    ContactUpserted.TYPE: ContactUpserted,
    ContractRatesAnswered.TYPE: ContractRatesAnswered,
    ContractRatesChanged.TYPE: ContractRatesChanged,
    ContractRatesRequested.TYPE: ContractRatesRequested,
    DeliveryReceipt.TYPE: DeliveryReceipt,
    DirectiveSent.TYPE: DirectiveSent,
    DocumentAttached.TYPE: DocumentAttached,
    EventsRouted.TYPE: EventsRouted,
    GoodsReceived.TYPE: GoodsReceived,
    InvoiceIssued.TYPE: InvoiceIssued,
    OrderAmended.TYPE: OrderAmended,
    OrderCancelled.TYPE: OrderCancelled,
    OrderConfirmed.TYPE: OrderConfirmed,
    OrderPlaced.TYPE: OrderPlaced,
    PartnerInvited.TYPE: PartnerInvited,
    PaymentRecorded.TYPE: PaymentRecorded,
    PriceListSent.TYPE: PriceListSent,
    ServiceDelivered.TYPE: ServiceDelivered,
    ShipmentDispatched.TYPE: ShipmentDispatched,
    StockLevelChanged.TYPE: StockLevelChanged,
}
