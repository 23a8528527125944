"""Handing e-mails to the SMTP server (aiosmtplib): one connection kept open per sender and
reopened when it breaks, TLS and login as the settings say, a rate limit per server shared by
every sender of the process (aiolimiter), and each answer sorted into what the mailer does next:

- **sent**: the server accepted the message (2xx);
- **temporary**: a 4xx answer, a connection refused, dropped or timed out: try again later;
- **permanent**: a 5xx answer about this e-mail (no such mailbox, refused as spam, too
  large): give up and tell the sending box.

A refused login or sender address, or a TLS handshake that fails, is the mailer's own
configuration, not the partner's: temporary (with an error in the log that says what to set),
so nobody's mail is given up for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from enum import StrEnum

import aiosmtplib
from aiolimiter import AsyncLimiter

from bus.log import get_logger
from bus.settings import Settings

log = get_logger(__name__)

_LIMITERS: dict[tuple[str, int, float], AsyncLimiter] = {}


class Outcome(StrEnum):
    SENT = "sent"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    detail: str  # the server's words, or what went wrong on the way
    ours: bool = False  # the mailer's own configuration failed, not the partner's mailbox


def limiter(host: str, port: int, rate: float) -> AsyncLimiter:
    """The process's one rate limit for a server: ``rate`` messages a second, in bursts of
    at most a tenth of a second's worth."""
    key = (host, port, rate)
    if key not in _LIMITERS:
        burst = max(1.0, rate / 10)
        _LIMITERS[key] = AsyncLimiter(burst, burst / rate)
    return _LIMITERS[key]


class SmtpSender:
    def __init__(self, settings: Settings, host: str, port: int, timeout: float = 30.0) -> None:
        self.settings = settings
        self.host, self.port = host, port
        self.timeout = timeout
        self._client: aiosmtplib.SMTP | None = None
        self._limit = limiter(host, port, settings.mail_rate)

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is not None and self._client.is_connected:
            return self._client
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=self.timeout,
            use_tls=s.smtp_tls == "tls", start_tls=s.smtp_tls == "starttls" or None,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            cert_bundle=str(s.smtp_ca_file) if s.smtp_ca_file else None)
        await client.connect()
        self._client = client
        return client

    async def send(self, data: bytes, *, sender: str, recipient: str) -> Answer:
        """Hand one e-mail (its bytes, CRLF line ends) to the server for ``recipient``."""
        try:
            async with self._limit:
                client = await self._connected()
                _, response = await client.sendmail(sender, [recipient], data)
            return Answer(Outcome.SENT, response)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0] if exc.recipients else None
            code = refused.code if refused is not None else 550
            words = f"{code} {refused.message}" if refused is not None else str(exc)
            await self._reset()
            return Answer(Outcome.PERMANENT if code >= 500 else Outcome.TEMPORARY,
                          f"the server refused {recipient}: {words}")
        except (aiosmtplib.SMTPAuthenticationError, aiosmtplib.SMTPSenderRefused) as exc:
            await self._reset()
            if isinstance(exc, aiosmtplib.SMTPSenderRefused) and exc.code in (452, 552):
                # MAIL FROM carries the message's SIZE (RFC 1870): too large for the server
                # (552, for good) or for its storage now (452): about this e-mail, not us.
                return Answer(Outcome.PERMANENT if exc.code == 552 else Outcome.TEMPORARY,
                              f"the server refused the e-mail's size: {exc.code} "
                              f"{exc.message}")
            what = ("refused the mailer's login (BOXBUS_SMTP_USERNAME, _PASSWORD)"
                    if isinstance(exc, aiosmtplib.SMTPAuthenticationError)
                    else f"refused the sender address {sender} (BOXBUS_MAIL_DOMAIN)")
            log.error("the SMTP server " + what + "; mail waits", server=f"{self.host}:"
                      f"{self.port}", code=exc.code, answer=exc.message)
            return Answer(Outcome.TEMPORARY, f"the server {what}: {exc.code} {exc.message}",
                          ours=True)
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset()
            return Answer(Outcome.PERMANENT if exc.code >= 500 else Outcome.TEMPORARY,
                          f"the server answered {exc.code} {exc.message}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self._reset()
            return Answer(Outcome.TEMPORARY, f"no answer from {self.host}:{self.port}: {exc!r}")

    async def _reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):  # a server that does not answer QUIT
                    await client.quit()
            client.close()
