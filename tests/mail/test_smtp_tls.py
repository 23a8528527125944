"""The mailer talks to a provider's SMTP server as the settings say: STARTTLS with the
server's certificate checked against the CA file given, then a login; a wrong password makes
mail wait (the mailer's configuration, not the partner's fault), and nothing is given up."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from bus import Settings
from connectors.mail.smtp import Answer, Outcome, SmtpSender
from tests.mail.mailbox import Mailbox


def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.partners.example")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "mx.pem", folder / "mx.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[tuple[Mailbox, Path]]:
    cert, key = certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    box = await Mailbox(tls=context, login=("boxbus", "s3cret")).start()
    yield box, cert
    await box.stop()


def message() -> bytes:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "a@bus.example", "b@farm.example", "hello"
    mail.set_content("over TLS")
    return bytes(mail)


async def send_one(settings: Settings, box: Mailbox) -> Answer:
    sender = SmtpSender(settings, box.host, box.port)
    try:
        return await sender.send(message(), sender="a@bus.example", recipient="b@farm.example")
    finally:
        await sender.close()


async def test_starttls_and_login_as_the_settings_say(provider: tuple[Mailbox, Path]) -> None:
    box, ca = provider
    settings = Settings(smtp_tls="starttls", smtp_username="boxbus",
                        smtp_password=SecretStr("s3cret"), smtp_ca_file=ca)
    answer = await send_one(settings, box)
    assert answer.outcome is Outcome.SENT, answer.detail
    assert box.logins == 1 and len(box.received) == 1


async def test_a_refused_login_or_an_unknown_certificate_makes_mail_wait(
        provider: tuple[Mailbox, Path]) -> None:
    box, ca = provider
    wrong = Settings(smtp_tls="starttls", smtp_username="boxbus",
                     smtp_password=SecretStr("guess"), smtp_ca_file=ca)
    untrusted = Settings(smtp_tls="starttls", smtp_username="boxbus",
                         smtp_password=SecretStr("s3cret"))  # the system's CAs only
    plain = Settings(smtp_username="boxbus", smtp_password=SecretStr("s3cret"))
    for settings, says in ((wrong, "refused the mailer's login"),
                           (untrusted, "no answer from"), (plain, "")):
        answer = await send_one(settings, box)
        assert answer.outcome is Outcome.TEMPORARY, (settings.smtp_tls, answer.detail)
        assert says in answer.detail
    assert not box.received
