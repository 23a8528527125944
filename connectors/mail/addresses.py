"""The mailer's own addresses, signed so that nobody can make one up:

- the **reply address** of an order's thread, ``reply+<reference>.<signature>@<domain>``:
  what the partner writes to becomes a comment in the buyer's box;
- the **bounce address** of one e-mail (the SMTP envelope sender, VERP style),
  ``bounce+<mail id>.<signature>@<domain>``: a delivery status notification sent back to it
  tells which e-mail bounced.

The signature is an HMAC-SHA-256 of the kind and value under the mailer's key, cut to 80 bits
and written in lower-case base32, so the local part stays short (well under SMTP's 64
characters) and survives servers that fold its case. A reference is random (it says nothing
about the order); the mailer's database knows which thread it is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

Kind = Literal["reply", "bounce", "unsubscribe"]
_LOCAL = re.compile(r"^(reply|bounce)\+([a-z0-9-]{1,40})\.([a-z2-7]{16})$")


class UnknownAddress(ValueError):
    """Not one of the mailer's addresses, or its signature does not hold."""


@dataclass(frozen=True)
class MailAddresses:
    key: bytes
    domain: str

    def signature(self, kind: Kind, value: str) -> str:
        digest = hmac.new(self.key, f"{kind}:{value}".encode(), hashlib.sha256).digest()
        return base64.b32encode(digest[:10]).decode().lower()

    def make(self, kind: Kind, value: str) -> str:
        return f"{kind}+{value}.{self.signature(kind, value)}@{self.domain}"

    def reply(self, reference: str) -> str:
        return self.make("reply", reference)

    def bounce(self, what: int | str) -> str:
        """The envelope sender of one e-mail: an order e-mail's row id, or a campaign
        e-mail's reference (``c...``)."""
        return self.make("bounce", str(what))

    def read(self, address: str) -> tuple[Kind, str]:
        """(kind, value) of one of the mailer's addresses; UnknownAddress otherwise."""
        local, _, domain = address.strip().strip("<>").rpartition("@")
        if domain.lower() != self.domain.lower():
            raise UnknownAddress(f"{address}: not an address of {self.domain}")
        found = _LOCAL.match(local.lower())
        if found is None:
            raise UnknownAddress(f"{address}: not a reply or bounce address")
        kind, value, signature = found.group(1), found.group(2), found.group(3)
        if not hmac.compare_digest(signature, self.signature(kind, value)):  # type: ignore[arg-type]
            raise UnknownAddress(f"{address}: its signature does not match")
        return kind, value  # type: ignore[return-value]


def new_reference() -> str:
    """A thread's reference: 60 random bits in base32."""
    return base64.b32encode(secrets.token_bytes(10)).decode().lower()[:12]
