"""What comes back by e-mail, read: a partner's answer to an order's e-mail (its new text, the
quoted e-mail and the signature cut off) and a bounce (why the e-mail was not delivered).

Replies lose their quoted lines (``>``; answers written between them stay) and are cut at
the first line that starts the quoted original below: a "On <date>, <someone> wrote:" line
in the languages the mailer writes (and the usual variants of mail clients), an "Original
Message" or "From:" header block, or the signature separator ``-- ``. HTML-only replies are
turned into text first, with quoted ``<blockquote>`` parts left out.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from html.parser import HTMLParser

# "<someone> wrote:" as clients write it in English, Czech, Ukrainian (and German, French):
# the line ends with the verb and a colon.
_ATTRIBUTION = re.compile(
    r"^.{0,300}\b(wrote|napsal|napsala|napsal\(a\)|написав|написала|написав\(-?ла\)|"
    r"пише|schrieb|a écrit)\s*:\s*$", re.IGNORECASE)
_HEADER_BLOCK = re.compile(
    r"^\s*(-{2,}\s*(original message|původní zpráva|оригінальне повідомлення|forwarded "
    r"message)\s*-{2,}|(from|od|від):\s.+)$", re.IGNORECASE)


def strip_quoted(text: str) -> str:
    """The new part of a reply: everything above the quoted original and the signature."""
    kept: list[str] = []
    lines = text.replace("\r\n", "\n").split("\n")
    for n, line in enumerate(lines):
        if line.startswith(">"):
            continue  # quoted; an answer may go on below it (inline answers)
        if line == "-- " or _HEADER_BLOCK.match(line):
            break
        if _ATTRIBUTION.match(line):
            break
        # "On Mon, 30 Nov 2026 at 09:30, Acme <r@x>" wrapped before "wrote:"
        if (line.lower().startswith(("on ", "dne ")) and n + 1 < len(lines)
                and _ATTRIBUTION.match(f"{line} {lines[n + 1]}")):
            break
        kept.append(line)
    return "\n".join(kept).strip()


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._quoted = 0
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "blockquote":
            self._quoted += 1
        elif tag in ("style", "script", "head"):
            self._skip += 1
        elif tag in ("br", "p", "div", "li", "tr"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "blockquote":
            self._quoted = max(0, self._quoted - 1)
        elif tag in ("style", "script", "head"):
            self._skip = max(0, self._skip - 1)

    def handle_data(self, data: str) -> None:
        if not self._quoted and not self._skip:
            self.parts.append(data)


def html_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    text = "".join(parser.parts)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line.strip() for line in text.split("\n")))


def reply_text(message: EmailMessage) -> str:
    """The partner's own words in a reply."""
    part = message.get_body(("plain", "html"))
    if part is None:
        return ""
    content = str(part.get_content())
    if part.get_content_subtype() == "html":
        content = html_text(content)
    return strip_quoted(content)


def bounce_reason(message: EmailMessage) -> str:
    """Why a bounce says the e-mail was not delivered: the delivery status report's
    status and diagnostic (RFC 3464) when there is one, else the subject."""
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            fields: dict[str, str] = {}
            for block in part.get_payload() or []:
                for name in ("Final-Recipient", "Status", "Diagnostic-Code", "Action"):
                    value = block.get(name) if hasattr(block, "get") else None
                    if value and name not in fields:
                        fields[name] = " ".join(str(value).split())
            if fields:
                return "; ".join(f"{k}: {v}" for k, v in fields.items())
    return str(message.get("Subject", "delivery failed"))


def failed_for_good(message: EmailMessage) -> bool:
    """Whether a message is a delivery status notification (RFC 3464) saying delivery failed
    for good: a report part with ``Action: failed`` and a 5.x.x status. Out-of-office answers
    and "delayed" warnings, sent to the same address, are not."""
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        for block in part.get_payload() or []:
            action = str(block.get("Action", "")).strip().lower() if hasattr(block, "get") \
                else ""
            status = str(block.get("Status", "")).strip() if hasattr(block, "get") else ""
            if action == "failed" and status.startswith("5."):
                return True
    return False
