"""One e-mail to a partner, whole: the letter in text and HTML (Jinja2 templates shipped in
``templates/``, HTML autoescaped, a missing value an error), the order's PDF and UBL Order for
orders placed and amended, a document sent inline as its own attachment, and the headers that
thread it and bring the partner's answer back:

- ``Message-ID``: ``<event id@mail domain>``, the same however often the event is mailed, so
  a copy sent again after a crash is the same message to every mail client;
- ``In-Reply-To`` and ``References``: the first message of the order's thread, so the
  partner's client shows the order's e-mails as one conversation;
- ``Reply-To``: the order's own signed reply address (:mod:`connectors.mail.addresses`);
- ``X-Boxbus-Event-Id``, ``-Event-Type``, ``-Order``: for the partner's filters and support.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from bus.events import EventBase
from bus.events.models import DocumentAttached, OrderAmended, OrderPlaced
from connectors.mail.letter import Letter, Party, letter_for
from connectors.mail.pdf import letter_pdf
from connectors.mail.phrases import Phrases
from connectors.mail.ubl import order_xml


@functools.cache
def templates() -> Environment:
    return Environment(loader=PackageLoader("connectors.mail", "templates"),
                       autoescape=select_autoescape(["html", "html.j2"]),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                       keep_trailing_newline=True)


def message_id(event_id: str, domain: str) -> str:
    return f"<{event_id}@{domain}>"


@dataclass(frozen=True)
class Addressing:
    """Who writes to whom about what, and the thread the e-mail belongs to."""

    partner: Party
    partner_email: str
    language: str
    sender: Party  # the box whose event this is
    mail_from: str  # the mailer's address
    domain: str  # of Message-IDs
    reply_to: str  # the order's signed reply address
    thread_root: str | None  # Message-ID of the order's first e-mail; None: this is it
    invite_url: str = ""
    invite_until: datetime | None = None


def render(letter: Letter) -> tuple[str, str]:
    """The letter's text and HTML bodies."""
    env = templates()
    return (env.get_template("letter.txt.j2").render(letter=letter),
            env.get_template("letter.html.j2").render(letter=letter))


def compose(event: EventBase, to: Addressing, *, sent_at: datetime) -> EmailMessage:
    """The e-mail that tells the partner about ``event``."""
    letter = letter_for(event, language=to.language, partner=to.partner, sender=to.sender,
                        invite_url=to.invite_url, invite_until=to.invite_until)
    text, html = render(letter)
    message = EmailMessage()
    message["Subject"] = letter.subject
    message["From"] = formataddr((to.sender.name, to.mail_from))
    message["To"] = formataddr((to.partner.name, to.partner_email))
    message["Reply-To"] = str(Address(to.sender.name, addr_spec=to.reply_to))
    message["Date"] = format_datetime(sent_at)
    message["Message-ID"] = message_id(event.meta.event_id, to.domain)
    if to.thread_root is not None and to.thread_root != message["Message-ID"]:
        message["In-Reply-To"] = to.thread_root
        message["References"] = to.thread_root
    message["X-Boxbus-Event-Id"] = event.meta.event_id
    message["X-Boxbus-Event-Type"] = event.TYPE
    message["X-Boxbus-Order"] = letter.order_id
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    if isinstance(event, OrderPlaced | OrderAmended):
        phrases = Phrases(to.language)
        name = letter.order_id if isinstance(event, OrderPlaced) \
            else f"{letter.order_id}-R{event.revision}"
        pdf = letter_pdf(letter, phrases.say("pdf.title", order=letter.order_id),
                         phrases.label("page"))
        message.add_attachment(pdf, maintype="application", subtype="pdf",
                               filename=f"order-{name}.pdf")
        buyer, seller = (to.sender, to.partner)
        xml = order_xml(event, buyer=buyer, seller=seller, buyer_endpoint=to.reply_to,
                        seller_endpoint=to.partner_email)
        message.add_attachment(xml, maintype="application", subtype="xml",
                               filename=f"order-{name}.ubl.xml")
    elif isinstance(event, DocumentAttached) and event.content is not None:
        maintype, _, subtype = event.media_type.partition("/")
        message.add_attachment(event.content, maintype=maintype or "application",
                               subtype=subtype or "octet-stream", filename=event.file_name)
    # (After the parts: making a message multipart moves its Content-* headers inside.)
    message["Content-Language"] = to.language
    return message
