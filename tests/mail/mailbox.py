"""A real SMTP server for the mailer's tests (aiosmtpd on loopback, in the test's event loop)
that answers like the internet's servers do: it accepts mail for most addresses and keeps
what it got, refuses ``nobody@...`` for good (550) and turns away the addresses in ``down``
for now (451)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Received:
    message: EmailMessage
    mail_from: str
    rcpt_tos: list[str]


@dataclass
class Mailbox:
    host: str = "127.0.0.1"
    port: int = 0
    received: list[Received] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    refused: int = 0
    deferred: int = 0
    _server: asyncio.Server | None = None
    # TLS and login, as a provider's submission server asks for them: STARTTLS with this
    # context first, then AUTH with ``login`` (user, password).
    tls: ssl.SSLContext | None = None
    login: tuple[str, str] | None = None
    logins: int = 0

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if address.startswith("nobody"):
            self.refused += 1
            return f"550 5.1.1 <{address}>: no such mailbox here"
        if address in self.down:
            self.deferred += 1
            return "451 4.4.1 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        message = email.message_from_bytes(raw if isinstance(raw, bytes) else raw.encode(),
                                           policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(Received(message, str(envelope.mail_from),
                                      list(envelope.rcpt_tos)))
        return "250 2.0.0 queued"

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, data: Any) -> AuthResult:
        assert self.login is not None
        ok = isinstance(data, LoginPassword) and (
            data.login.decode(), data.password.decode()) == self.login
        self.logins += ok
        return AuthResult(success=ok, handled=False)

    async def start(self) -> Mailbox:
        def protocol() -> Any:
            if self.tls is None:
                return SMTP(self, hostname="mx.partners.example")
            return SMTP(self, hostname="mx.partners.example", tls_context=self.tls,
                        require_starttls=True, auth_required=self.login is not None,
                        auth_require_tls=True, authenticator=self._authenticate)

        self._server = await asyncio.get_running_loop().create_server(protocol, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def about(self, event_ids: set[str]) -> list[Received]:
        return [r for r in self.received if r.message["X-Boxbus-Event-Id"] in event_ids]

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.rcpt_tos]
