"""The e-mails themselves, without a server: what each event's e-mail says in each language,
the order's PDF (read back with pypdf) and UBL Order (parsed back), the headers that thread
the conversation, and the escaping of what boxes write."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from decimal import Decimal
from email.message import EmailMessage

import pytest
from pypdf import PdfReader

from bus.events.models import (
    CommentAdded,
    DocumentAttached,
    DocumentType,
    EventMeta,
    InvoiceIssued,
    ItemQuantity,
    Line,
    Money,
    OrderAmended,
    OrderCancelled,
    OrderKind,
    OrderPlaced,
    ShipmentDispatched,
)
from connectors.mail.letter import Party
from connectors.mail.message import Addressing, compose, message_id
from connectors.mail.phrases import CATALOG, LANGUAGES
from connectors.mail.ubl import CAC, CBC, CUSTOMIZATION, NS, PROFILE

NOW = datetime(2026, 11, 30, 9, 30, tzinfo=UTC)
BUYER = Party("north-branch", "Acme Північ")
PARTNER = Party("river-fish", "Rybářství Říční s.r.o.")


def meta(event_id: str, key: str = "PO-7") -> EventMeta:
    return EventMeta(event_id=event_id, source_box="north-branch", region="north",
                     aggregate_key=key, occurred_at=NOW, correlation_id=key)


LINES = (
    Line(line_no=1, sku="CARP-1", description="Короп живий / Kapr živý", quantity=Decimal("12.5"),
         unit="kg", unit_price=Money(amount_minor=289, currency="EUR"), tax_rate_bp=1200),
    Line(line_no=2, sku="PIKE-2", description="Štika <čerstvá> & led", quantity=Decimal("3"),
         unit="pcs", unit_price=Money(amount_minor=1450, currency="EUR"), tax_rate_bp=1200),
)
# 12.5 x 2.89 = 36.125 -> 36.13; 3 x 14.50 = 43.50; net 79.63, 12 % tax 9.56, total 89.19
ORDER = OrderPlaced(meta=meta("ev-order"), order_id="PO-7", kind=OrderKind.PURCHASE_ORDER,
                    buyer_box="north-branch", supplier_email="orders@river-fish.example",
                    lines=LINES, total=Money(amount_minor=8919, currency="EUR"),
                    requested_delivery_at=NOW, delivery_address="Přístavní 12\nDěčín",
                    notes="Please call <before> delivery")


def addressing(language: str, root: str | None = None) -> Addressing:
    return Addressing(partner=PARTNER, partner_email="orders@river-fish.example",
                      language=language, sender=BUYER, mail_from="orders@boxbus.localhost",
                      domain="boxbus.localhost", reply_to="r-abc.sig@boxbus.localhost",
                      thread_root=root, invite_url="http://127.0.0.1:8025/invite/T0K3N",
                      invite_until=NOW)


def mail(event: object, to: Addressing, *, sent_at: datetime) -> EmailMessage:
    """The e-mail as the partner's client reads it."""
    return compose(event, to, sent_at=sent_at).parsed()  # type: ignore[arg-type]


def body(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    assert part is not None, kind
    return str(part.get_content())


def attachment(message: EmailMessage, suffix: str) -> bytes:
    for part in message.iter_attachments():
        if (part.get_filename() or "").endswith(suffix):
            payload = part.get_content()
            return payload if isinstance(payload, bytes) else payload.encode()
    raise AssertionError(f"no attachment ending {suffix}")


def test_every_language_has_every_phrase() -> None:
    assert set(LANGUAGES) == set(CATALOG)
    for language in LANGUAGES:
        assert set(CATALOG[language]) == set(CATALOG["en"]), language


@pytest.mark.parametrize(("language", "words"), [
    ("en", ["Purchase order PO-7", "Total"]),
    ("uk", ["Замовлення постачальнику PO-7", "Усього"]),
    ("cs", ["Objednávka PO-7", "Celkem"]),
])
def test_an_order_e_mail_carries_its_pdf_and_ubl(language: str, words: list[str]) -> None:
    message = mail(ORDER, addressing(language), sent_at=NOW)
    assert message["Message-ID"] == "<ev-order@boxbus.localhost>"
    assert message["In-Reply-To"] is None  # the first e-mail of the order's thread
    assert message["Reply-To"].addresses[0].addr_spec == "r-abc.sig@boxbus.localhost"
    text = body(message, "plain")
    html = body(message, "html")
    assert "http://127.0.0.1:8025/invite/T0K3N" in text and 'href="http://127.0.0.1:8025' in html

    pdf = PdfReader(io.BytesIO(attachment(message, ".pdf")))
    content = " ".join(page.extract_text() for page in pdf.pages)
    for expected in [*words, "CARP-1", "PIKE-2", "Короп живий", "Kapr živý",
                     "Štika <čerstvá> & led", "89.19 EUR", "Rybářství Říční s.r.o.",
                     "Acme Північ"]:
        assert expected in content, (expected, content)

    order = ET.fromstring(attachment(message, ".ubl.xml"))
    assert order.tag == f"{{{NS}}}Order"

    def one(path: str) -> str:
        found = order.find(path, {"cbc": CBC, "cac": CAC})
        assert found is not None and found.text, path
        return found.text

    assert one("cbc:CustomizationID") == CUSTOMIZATION and one("cbc:ProfileID") == PROFILE
    assert one("cbc:ID") == "PO-7" and one("cbc:IssueDate") == "2026-11-30"
    assert one("cbc:DocumentCurrencyCode") == "EUR"
    assert one("cac:BuyerCustomerParty/cac:Party/cac:PartyName/cbc:Name") == "Acme Північ"
    assert one("cac:SellerSupplierParty/cac:Party/cbc:EndpointID") == \
        "orders@river-fish.example"
    assert one("cac:AnticipatedMonetaryTotal/cbc:LineExtensionAmount") == "79.63"
    assert one("cac:AnticipatedMonetaryTotal/cbc:PayableAmount") == "89.19"
    lines = order.findall("cac:OrderLine/cac:LineItem", {"cac": CAC})
    assert [line.findtext(f"{{{CBC}}}Quantity") for line in lines] == ["12.5", "3"]
    assert [line.find(f"{{{CBC}}}Quantity").get("unitCode")  # type: ignore[union-attr]
            for line in lines] == ["KGM", "H87"]
    assert lines[1].findtext(f"{{{CAC}}}Item/{{{CBC}}}Name") == "Štika <čerstvá> & led"


def test_what_boxes_write_is_escaped_in_html_and_kept_in_text() -> None:
    message = mail(ORDER, addressing("en"), sent_at=NOW)
    html = body(message, "html")
    text = body(message, "plain")
    assert "Please call &lt;before&gt; delivery" in html and "<before>" not in html
    assert "Štika &lt;čerstvá&gt; &amp; led" in html
    assert "Please call <before> delivery" in text


def test_later_e_mails_of_an_order_join_its_thread() -> None:
    root = message_id("ev-order", "boxbus.localhost")
    comment = CommentAdded(meta=meta("ev-comment"), subject_id="PO-7", comment_id="c1",
                           author="Olena", text="Can you deliver on Friday?\nThanks")
    message = mail(comment, addressing("uk", root), sent_at=NOW)
    assert message["In-Reply-To"] == root and message["References"] == root
    assert message["Message-ID"] == "<ev-comment@boxbus.localhost>"
    assert "Olena" in message["Subject"] and "PO-7" in message["Subject"]
    text = body(message, "plain")
    assert "    Can you deliver on Friday?\n    Thanks" in text
    assert not list(message.iter_attachments())


def test_each_kind_of_event_has_its_e_mail() -> None:
    root = message_id("ev-order", "boxbus.localhost")
    amended = OrderAmended(meta=meta("ev-2"), order_id="PO-7", revision=2, lines=LINES[:1],
                           total=Money(amount_minor=4046, currency="EUR"), reason="less pike")
    cancelled = OrderCancelled(meta=meta("ev-3"), order_id="PO-7", cancelled_by="BUYER",
                               reason="shop closed")
    document = DocumentAttached(meta=meta("ev-4"), subject_id="PO-7", document_id="d1",
                                document_type=DocumentType.CONTRACT, file_name="contract.txt",
                                media_type="text/plain", sha256="0" * 64, size_bytes=5,
                                content=b"terms")
    shipment = ShipmentDispatched(meta=meta("ev-5"), shipment_id="s1", order_id="PO-7",
                                  from_warehouse="WH-1", dispatched_at=NOW,
                                  lines=(ItemQuantity(line_no=1, sku="CARP-1",
                                                      quantity=Decimal(1), unit="kg"),),
                                  carrier="DHL", tracking_id="TRK-1")
    invoice = InvoiceIssued(meta=meta("ev-6"), invoice_id="i1", order_id="PO-7",
                            number="2026/42", issued_at=NOW, due_at=NOW, lines=LINES,
                            net=Money(amount_minor=7963, currency="EUR"),
                            tax=Money(amount_minor=956, currency="EUR"),
                            total=Money(amount_minor=8919, currency="EUR"))
    for language in LANGUAGES:
        mails = [mail(e, addressing(language, root), sent_at=NOW)
                 for e in (amended, cancelled, document, shipment, invoice)]
        assert all(m["In-Reply-To"] == root for m in mails)
        assert len({m["Subject"] for m in mails}) == 5
        names = [[p.get_filename() for p in m.iter_attachments()] for m in mails]
        assert names == [["order-PO-7-R2.pdf", "order-PO-7-R2.ubl.xml"], [],
                         ["contract.txt"], [], []]
    assert "shop closed" in body(mails[1], "plain")
    assert "TRK-1" in body(mails[3], "plain")
    assert "2026/42" in body(mails[4], "plain")  # the generic letter


def test_what_a_box_writes_cannot_add_headers() -> None:
    comment = CommentAdded(meta=meta("ev-evil\r\nBcc: x@evil.example"), subject_id="PO-7\r\nX: y",
                           comment_id="c1", author="Olena\r\nBcc: spy@evil.example",
                           text="hello")
    message = mail(comment, addressing("en"), sent_at=NOW)
    assert message["Bcc"] is None and message["X"] is None
    assert "\n" not in message["Subject"] and "Olena Bcc: spy@evil.example" in message["Subject"]
    assert message["Message-ID"].startswith("<h") and "\n" not in message["Message-ID"]
