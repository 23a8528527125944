"""Mass mailings (``boxbus campaign``): a letter template merged with a box's contacts into
e-mails and printable PDF letters.

- **Contacts**: the latest ``ContactUpserted`` of each contact the box published, read from its
  region topic (where the router keeps only events of a proven source); contacts without an
  e-mail address are left out, and so is every address on the box's suppression list
  (``mail_suppressed``: unsubscribed or bounced for good).
- **The template**: a Jinja2 text whose first line is ``Subject: ...``; undefined names are
  errors (StrictUndefined), so ``preview`` fails on a merge field a contact lacks before
  anything is sent. Names: ``contact`` (name, email, company, address, phone, tags, kind),
  ``sender`` (the box's company), ``campaign``, ``unsubscribe_url``.
- **Sending**: per contact, in a fixed order, at most ``rate`` a second: a row ``sending`` in
  ``campaign_sends``, the e-mail (with RFC 8058 one-click unsubscribe headers pointing at the
  mailer's HTTP endpoint), then the PDF letter written atomically into the printer's spool
  directory (a temporary file renamed into place), then the row ``sent``. A contact whose
  server refuses for good (5xx) is suppressed and gets no letter. Run again, a campaign skips
  every contact already ``sent``; one killed between the e-mail and its row is sent again with
  the same Message-ID (``<campaign.box.contact@domain>``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
from jinja2 import Environment, StrictUndefined, TemplateError, UndefinedError
from markupsafe import Markup, escape

from bus import naming
from bus.envelope import SOURCE, SOURCE_PREFIX, TYPE
from bus.errors import BadEvent, ConfigError
from bus.events.models import ContactUpserted
from bus.kafka import KafkaAccess
from bus.serde import EventSerde
from bus.settings import Settings
from bus.topics import read_topic
from connectors.mail.addresses import MailAddresses
from connectors.mail.letter import Letter
from connectors.mail.message import _WIRE, _header, address, safe_part
from connectors.mail.pdf import letter_pdf
from connectors.mail.smtp import Outcome, SmtpSender

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Template:
    subject: str
    body: str

    @classmethod
    def read(cls, path: Path) -> Template:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the template {path}: {exc.strerror}",
                              hint="give the path of a text file") from None
        first, _, rest = text.partition("\n")
        if not first.lower().startswith("subject:"):
            raise ConfigError(f"{path}: the first line must be the subject, 'Subject: ...'",
                              hint="for example: Subject: New prices for {{ contact.name }}")
        return cls(first.split(":", 1)[1].strip(), rest.strip("\n"))


@dataclass(frozen=True)
class Contact:
    contact_id: str
    name: str
    email: str
    company: str | None
    address: str | None
    phone: str | None
    tags: tuple[str, ...]
    kind: str

    def fields(self) -> dict[str, Any]:
        return {"id": self.contact_id, "name": self.name, "email": self.email,
                "company": self.company, "address": self.address, "phone": self.phone,
                "tags": self.tags, "kind": self.kind}


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str


def _environment() -> Environment:
    return Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def render(template: Template, contact: Contact, sender: str, campaign: str,
           unsubscribe_url: str) -> Rendered:
    """The template merged with one contact; a merge field it lacks is a ConfigError naming
    the field and the contact (a field that is empty, like a missing company, is empty)."""
    env = _environment()
    values = {"contact": {k: (v if v is not None else "") for k, v in contact.fields().items()},
              "sender": sender, "campaign": campaign, "unsubscribe_url": unsubscribe_url}
    try:
        return Rendered(env.from_string(template.subject).render(values).strip(),
                        env.from_string(template.body).render(values))
    except UndefinedError as exc:
        raise ConfigError(f"the template uses a field contact {contact.contact_id} "
                          f"({contact.email}) does not have: {exc.message}",
                          hint="a contact has: " + ", ".join(
                              f"contact.{k}" for k in contact.fields())
                          + "; also sender, campaign, unsubscribe_url") from None
    except TemplateError as exc:
        raise ConfigError(f"the template is not valid Jinja2: {exc}",
                          hint="check its {{ }} and {% %} pairs") from None


async def contacts_of(kafka: KafkaAccess, serde: EventSerde, namespace: str, box: str,
                      region: str) -> list[Contact]:
    """The box's contacts with an e-mail address: the latest ContactUpserted of each, as
    the box published it (its region topic holds what the router proved came from it)."""
    source = (SOURCE_PREFIX + box).encode()
    wanted = ContactUpserted.TYPE.encode()
    latest: dict[str, ContactUpserted] = {}
    for record in await read_topic(kafka, naming.region_topic(namespace, region)):
        headers = dict(record.headers or ())
        if headers.get(TYPE) != wanted or headers.get(SOURCE) != source:
            continue
        try:
            event = await serde.decode(record.value)
        except BadEvent:
            continue  # its dead letter is the region's business
        assert isinstance(event, ContactUpserted)
        latest[event.contact_id] = event
    return sorted((Contact(e.contact_id, e.name, e.email.strip().lower(), e.company, e.address,
                           e.phone, e.tags, e.kind.value)
                   for e in latest.values() if e.email), key=lambda c: c.contact_id)


async def suppressed(conn: asyncpg.Connection, box: str) -> set[str]:
    return {r["email"] for r in await conn.fetch(
        "SELECT email FROM mail_suppressed WHERE box = $1", box)}


async def suppress(conn: asyncpg.Connection, box: str, email: str, reason: str) -> None:
    await conn.execute("INSERT INTO mail_suppressed (box, email, reason) VALUES ($1, $2, $3) "
                       "ON CONFLICT (box, email) DO NOTHING", box, email.lower(), reason)


def unsubscribe_token(addresses: MailAddresses, box: str, email: str) -> str:
    """The path part of a contact's one-click unsubscribe link: box, address (URL-encoded:
    '?', '#' and '%' are allowed in one), signature."""
    signature = addresses.signature("unsubscribe", f"{box} {email}")
    return f"{quote(box, safe='')}/{quote(email, safe='@')}/{signature}"


def read_unsubscribe(addresses: MailAddresses, token: str) -> tuple[str, str]:
    """(box, address) of a valid unsubscribe token, as the HTTP server hands over the link's
    path (decoded once already); ValueError otherwise."""
    box, _, rest = token.partition("/")
    email, _, signature = rest.rpartition("/")
    if not (box and email and signature) or not hmac.compare_digest(
            signature, addresses.signature("unsubscribe", f"{box} {email}")):
        raise ValueError("not a valid unsubscribe link")
    return box, email


def bounce_reference(box: str, campaign: str, contact_id: str) -> str:
    """What a campaign e-mail's bounce address names (VERP): its box, campaign and contact,
    as a short digest the mailer looks up; the address is signed, so a bounce cannot be made
    up for another contact."""
    return "c" + hashlib.sha256(f"{box}\0{campaign}\0{contact_id}".encode()).hexdigest()[:20]


@dataclass
class CampaignResult:
    campaign: str
    contacts: int = 0
    suppressed: int = 0
    sent: int = 0
    already_sent: int = 0
    bounced: int = 0
    letters: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _write_atomically(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".spooling-", suffix=".pdf")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        final = folder / name
        os.replace(temporary, final)  # a printer never sees half a letter
        return final
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


async def send_campaign(settings: Settings, kafka: KafkaAccess, serde: EventSerde,
                        dsn: str, key: bytes, *, box: str, region: str, sender: str,
                        name: str, template: Template, spool: Path, printer: str,
                        smtp: tuple[str, int], rate: float,
                        progress: Callable[[int, int], None] = lambda _d, _t: None,
                        ) -> CampaignResult:
    if not _NAME.match(name) or not _NAME.match(printer):
        raise ConfigError(f"campaign {name!r} or printer {printer!r} is not a plain name",
                          hint="use lower-case letters, digits, '-' and '_'")
    addresses = MailAddresses(key, settings.mail_domain)
    public = settings.mail_public_url.rstrip("/")
    found = await contacts_of(kafka, serde, settings.topic_namespace, box, region)
    result = CampaignResult(name, contacts=len(found))
    conn = await asyncpg.connect(dsn)
    smtp_sender = SmtpSender(settings.model_copy(update={"mail_rate": rate}), *smtp)
    try:
        blocked = await suppressed(conn, box)
        todo = [c for c in found if c.email not in blocked]
        result.suppressed = len(found) - len(todo)
        done = {r["contact_id"]: r["status"] for r in await conn.fetch(
            "SELECT contact_id, status FROM campaign_sends WHERE campaign = $1 AND box = $2",
            name, box)}
        for n, contact in enumerate(todo, 1):
            if done.get(contact.contact_id) in ("sent", "bounced"):
                result.already_sent += 1
                progress(n, len(todo))
                continue
            link = f"{public}/unsubscribe/{unsubscribe_token(addresses, box, contact.email)}"
            merged = render(template, contact, sender, name, link)
            identity = (f"<{name}.{box}.{safe_part(contact.contact_id)}@"
                        f"{settings.mail_domain}>")
            reference = bounce_reference(box, name, contact.contact_id)
            data = _message(merged, contact, sender, settings.mail_from, identity, link)
            await conn.execute(
                "INSERT INTO campaign_sends (campaign, box, contact_id, email, status, "
                "message_id, bounce_ref) VALUES ($1, $2, $3, $4, 'sending', $5, $6) "
                "ON CONFLICT (campaign, box, contact_id) DO UPDATE SET "
                "updated_at = clock_timestamp()",
                name, box, contact.contact_id, contact.email, identity, reference)
            answer = await smtp_sender.send(data, sender=addresses.bounce(reference),
                                            recipient=contact.email)
            if answer.outcome is Outcome.PERMANENT:
                async with conn.transaction():
                    await suppress(conn, box, contact.email, f"bounced: {answer.detail}")
                    await conn.execute(
                        "UPDATE campaign_sends SET status = 'bounced', detail = $4 WHERE "
                        "campaign = $1 AND box = $2 AND contact_id = $3", name, box,
                        contact.contact_id, answer.detail)
                result.bounced += 1
            elif answer.outcome is Outcome.TEMPORARY:
                raise ConfigError(f"the SMTP server did not take the campaign's mail now: "
                                  f"{answer.detail}", hint="run the same campaign again "
                                  "later: it goes on where it stopped")
            else:
                letter = Letter(language="en", kind="campaign", subject=merged.subject,
                                greeting="", intro="", order_id="",
                                quote=merged.text, footer=f"{sender} · {contact.name}")
                pdf = await asyncio.to_thread(
                    letter_pdf, letter, merged.subject, "{page}",
                    address=_address(contact))
                path = _write_atomically(
                    spool / printer, f"{name}-{box}-{safe_part(contact.contact_id)}.pdf", pdf)
                await conn.execute(
                    "UPDATE campaign_sends SET status = 'sent', letter = $4 WHERE "
                    "campaign = $1 AND box = $2 AND contact_id = $3", name, box,
                    contact.contact_id, str(path))
                result.sent += 1
                result.letters += 1
            progress(n, len(todo))
    finally:
        await smtp_sender.close()
        await conn.close()
    return result


def _address(contact: Contact) -> str:
    return "\n".join(x for x in (contact.name, contact.company, contact.address) if x)


def _message(merged: Rendered, contact: Contact, sender: str, mail_from: str, identity: str,
             unsubscribe: str) -> bytes:
    message = MIMEMultipart("alternative")
    message.attach(MIMEText(merged.text, "plain", "utf-8"))
    paragraphs = "".join(
        f"<p>{Markup('<br>').join(escape(line) for line in p.split(chr(10)))}</p>"
        for p in merged.text.split("\n\n") if p.strip())
    message.attach(MIMEText(f"<!DOCTYPE html><html><body>{paragraphs}<p style=\"color:#777;"
                            f"font-size:smaller\"><a href=\"{escape(unsubscribe)}\">"
                            f"Unsubscribe</a></p></body></html>", "html", "utf-8"))
    message["Subject"] = _header(merged.subject, "Subject")
    message["From"] = address(sender, mail_from)
    message["To"] = address(contact.name, contact.email)
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = identity
    message["List-Unsubscribe"] = f"<{unsubscribe}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Precedence"] = "bulk"
    message["X-Boxbus-Contact"] = _header(contact.contact_id, "X-Boxbus-Contact")
    return message.as_bytes(policy=_WIRE)
