"""The mailer's pure pieces: signed reply and bounce addresses, what a reply says once the
quoted original is cut off, why a bounce says mail failed, and the pause of a partner whose
mailbox does not answer."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from urllib.parse import unquote

import pytest

from connectors.mail.addresses import MailAddresses, UnknownAddress, new_reference
from connectors.mail.campaign import read_unsubscribe, unsubscribe_token
from connectors.mail.courier import LONGEST_PAUSE, pause_after
from connectors.mail.replies import (
    bounce_reason,
    failed_for_good,
    html_text,
    reply_text,
    strip_quoted,
)

ADDRESSES = MailAddresses(b"key", "bus.example")


def test_addresses_are_signed_short_and_case_blind() -> None:
    reference = new_reference()
    address = ADDRESSES.reply(reference)
    local = address.split("@")[0]
    assert len(local) <= 64 and local.startswith("reply+")
    assert ADDRESSES.read(address) == ("reply", reference)
    assert ADDRESSES.read(address.upper()) == ("reply", reference)  # servers fold case
    assert ADDRESSES.read(f"<{ADDRESSES.bounce(42)}>") == ("bounce", "42")


@pytest.mark.parametrize("mangle", [
    lambda a: a.replace("reply+", "reply+x"),  # another reference, the same signature
    lambda a: a.replace("reply+", "bounce+"),  # the signature covers the kind
    lambda a: a[:-len("@bus.example")] + "@other.example",
    lambda a: "postmaster@bus.example",
    lambda a: MailAddresses(b"another key", "bus.example").reply("abc"),
])
def test_made_up_addresses_are_refused(mangle: object) -> None:
    address = ADDRESSES.reply("abc")
    with pytest.raises(UnknownAddress):
        ADDRESSES.read(mangle(address))  # type: ignore[operator]


@pytest.mark.parametrize(("reply", "kept"), [
    ("Yes, Friday.\n\nOn Mon, 30 Nov 2026 at 09:30, Acme <r@x> wrote:\n> Can you?", "Yes, Friday."),
    ("Yes.\nOn Mon, 30 Nov 2026 at 09:30, Acme Corporation\n<r@x> wrote:\n> q", "Yes."),
    ("Ano.\n\nDne 30. 11. 2026 v 9:30 Acme <r@x> napsal(a):\n> q", "Ano."),
    ("Так, у п'ятницю.\n\n30.11.2026 09:30 Acme <r@x> написав(-ла):\n> q", "Так, у п'ятницю."),
    ("Fine\n-----Original Message-----\nFrom: Acme\nOld text", "Fine"),
    ("Fine\n\nFrom: Acme <r@x>\nSent: Monday\n", "Fine"),
    ("Fine\n-- \nPetr Novák\nFarm", "Fine"),
    ("He wrote the list we need\nthanks", "He wrote the list we need\nthanks"),
    ("> only quoted\n> text", ""),
    ("> Can you deliver on Friday?\nYes, before noon.\n> And the pike?\nNo pike.",
     "Yes, before noon.\nNo pike."),  # answers between the quoted lines
])
def test_a_reply_keeps_its_new_words_only(reply: str, kept: str) -> None:
    assert strip_quoted(reply) == kept


def test_an_html_reply_loses_its_quote_and_markup() -> None:
    html = ("<html><head><style>p{}</style></head><body><div>We deliver <b>Thursday</b>."
            "</div><div>Petr</div><blockquote>Acme wrote: order 7</blockquote></body></html>")
    assert html_text(html).strip() == "We deliver Thursday.\nPetr"
    message = EmailMessage()
    message.set_content(html, subtype="html")
    assert reply_text(message) == "We deliver Thursday.\nPetr"


def test_only_a_failure_report_is_a_bounce() -> None:
    def dsn(action: str, status: str) -> EmailMessage:
        raw = (b"Content-Type: multipart/report; report-type=delivery-status; boundary=b"
               b"\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n"
               b"Reporting-MTA: dns; mx\r\n\r\nFinal-Recipient: rfc822; a@b.example\r\n"
               + f"Action: {action}\r\nStatus: {status}\r\n\r\n--b--\r\n".encode())
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message

    assert failed_for_good(dsn("failed", "5.1.1"))
    assert not failed_for_good(dsn("delayed", "4.4.7"))
    assert not failed_for_good(dsn("failed", "4.4.7"))
    away = EmailMessage()
    away.set_content("I am out of the office.")
    assert not failed_for_good(away)


def test_a_bounce_says_why() -> None:
    raw = (b"From: MAILER-DAEMON@mx.example\r\nSubject: failure\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n"
           b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
           b"Final-Recipient: rfc822; orders@mill.example\r\nAction: failed\r\n"
           b"Status: 5.2.2\r\nDiagnostic-Code: smtp; 552 mailbox full\r\n\r\n--b--\r\n")
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    reason = bounce_reason(message)
    assert "5.2.2" in reason and "552 mailbox full" in reason
    assert "orders@mill.example" in reason


def test_an_unreachable_partner_waits_longer_each_time_up_to_an_hour() -> None:
    pauses = [pause_after(n, 0.5) for n in range(1, 16)]
    assert pauses[0] == 5.0 and pauses == sorted(pauses)
    assert pauses[-1] == LONGEST_PAUSE
    assert 3.75 <= pause_after(1, 0.0) <= pause_after(1, 1.0) <= 6.25  # jitter


@pytest.mark.parametrize("email", ["anna@x.example", "a%41b@x.example", "who?@x.example",
                                   "hash#tag@x.example", "jiří@x.example"])
def test_an_unsubscribe_link_holds_any_address(email: str) -> None:
    token = unsubscribe_token(ADDRESSES, "hq", email)
    assert "?" not in token and "#" not in token  # the URL stays one path
    # The HTTP server decodes the path once before the app reads it.
    assert read_unsubscribe(ADDRESSES, unquote(token)) == ("hq", email)
    with pytest.raises(ValueError, match="not a valid"):
        read_unsubscribe(ADDRESSES, unquote(token).replace("hq/", "shop/"))
