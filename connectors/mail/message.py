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

import email
import email.policy
import functools
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email import encoders
from email.header import Header
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
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


def safe_part(text: str) -> str:
    """An id as a part of a Message-ID or a file name: as it is when it is plain (letters,
    digits, '.', '_', '-'), else a digest of it (the same id, the same part)."""
    if _PLAIN.fullmatch(text):
        return text
    return "h" + hashlib.sha256(text.encode()).hexdigest()[:32]


_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def message_id(event_id: str, domain: str) -> str:
    return f"<{safe_part(event_id)}@{domain}>"


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


@dataclass(frozen=True)
class Composed:
    """An e-mail ready for SMTP: its Message-ID and its bytes (CRLF line ends)."""

    message_id: str
    subject: str
    data: bytes

    def parsed(self) -> EmailMessage:
        """The e-mail read back (for tests and tools)."""
        message = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message


def _attachment(content: bytes, maintype: str, subtype: str, filename: str) -> MIMEBase:
    part = MIMEApplication(content, subtype) if maintype == "application" \
        else MIMEBase(maintype, subtype)
    if maintype != "application":
        part.set_payload(content)
        encoders.encode_base64(part)
    part.add_header("Content-Disposition", "attachment", filename=one_line(filename))
    return part


def one_line(value: str) -> str:
    """Text from an event as a header may hold it: line breaks and other control characters
    become spaces (a comment's author written as "Olena\r\nBcc: ..." adds no header)."""
    return " ".join(_CONTROL.sub(" ", value).split())


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _header(value: str, name: str) -> str:
    """A header value on one line, non-ASCII text encoded (RFC 2047) and folded where the
    header starts (the MIME classes take a Header object where their types say str)."""
    value = one_line(value)
    if value.isascii():
        return value
    return Header(value, "utf-8", header_name=name)  # type: ignore[return-value]


def address(name: str, addr: str) -> str:
    """``Name <addr>`` with the name on one line and encoded if it must be."""
    return formataddr((one_line(name), one_line(addr)), "utf-8")


def compose(event: EventBase, to: Addressing, *, sent_at: datetime) -> Composed:
    """The e-mail that tells the partner about ``event``. Built with the email package's
    MIME classes and written once (the newer EmailMessage API took a fifth of the mailer's
    time parsing back the headers it had just been given)."""
    letter = letter_for(event, language=to.language, partner=to.partner, sender=to.sender,
                        invite_url=to.invite_url, invite_until=to.invite_until)
    text, html = render(letter)
    body = MIMEMultipart("alternative")
    body.attach(MIMEText(text, "plain", "utf-8"))
    body.attach(MIMEText(html, "html", "utf-8"))
    attachments: list[MIMEBase] = []
    if isinstance(event, OrderPlaced | OrderAmended):
        phrases = Phrases(to.language)
        name = letter.order_id if isinstance(event, OrderPlaced) \
            else f"{letter.order_id}-R{event.revision}"
        pdf = letter_pdf(letter, phrases.say("pdf.title", order=letter.order_id),
                         phrases.label("page"))
        attachments.append(_attachment(pdf, "application", "pdf", f"order-{name}.pdf"))
        xml = order_xml(event, buyer=to.sender, seller=to.partner, buyer_endpoint=to.reply_to,
                        seller_endpoint=to.partner_email)
        attachments.append(_attachment(xml, "application", "xml", f"order-{name}.ubl.xml"))
    elif isinstance(event, DocumentAttached) and event.content is not None:
        maintype, _, subtype = event.media_type.partition("/")
        attachments.append(_attachment(event.content, maintype or "application",
                                       subtype or "octet-stream", event.file_name))
    message: MIMEMultipart = body
    if attachments:
        message = MIMEMultipart("mixed")
        message.attach(body)
        for part in attachments:
            message.attach(part)
    identity = message_id(event.meta.event_id, to.domain)
    message["Subject"] = _header(letter.subject, "Subject")
    message["From"] = address(to.sender.name, to.mail_from)
    message["To"] = address(to.partner.name, to.partner_email)
    message["Reply-To"] = address(to.sender.name, to.reply_to)
    message["Date"] = format_datetime(sent_at)
    message["Message-ID"] = identity
    if to.thread_root is not None and to.thread_root != identity:
        message["In-Reply-To"] = to.thread_root
        message["References"] = to.thread_root
    message["Content-Language"] = to.language
    message["Auto-Submitted"] = "auto-generated"
    message["X-Boxbus-Event-Id"] = _header(event.meta.event_id, "X-Boxbus-Event-Id")
    message["X-Boxbus-Event-Type"] = event.TYPE
    message["X-Boxbus-Order"] = _header(letter.order_id, "X-Boxbus-Order")
    return Composed(identity, letter.subject, message.as_bytes(policy=_WIRE))


_WIRE = email.policy.compat32.clone(linesep="\r\n")
