"""Invitation links: every e-mail to a partner carries one, with a token that is signed (by
itsdangerous, under the mailer's key), expires, and is good once. ``boxbus partner onboard``
takes it; a token altered, expired or used before is refused with what went wrong.

The token holds the partner's id and a nonce; the nonce is recorded in ``mail_invitations``
when the token is made, and marked used by the onboarding in the same transaction that hands
the partner's mail over, so two onboardings with one token cannot both succeed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from bus.errors import BoxbusError

SALT = "boxbus.invitation"


class InvitationRefused(BoxbusError):
    """The token cannot be used: tampered with, expired, used, or for another partner."""


@dataclass(frozen=True)
class Invitation:
    partner: str
    nonce: str
    issued_at: datetime


class Invitations:
    def __init__(self, key: bytes, public_url: str, valid_for: timedelta = timedelta(days=30)
                 ) -> None:
        self._serializer = URLSafeTimedSerializer(key, salt=SALT)
        self.public_url = public_url.rstrip("/")
        self.valid_for = valid_for

    def make(self, partner: str) -> tuple[str, str]:
        """A new token for ``partner`` and its nonce (record it with ``record``)."""
        nonce = secrets.token_urlsafe(12)
        return self._serializer.dumps({"p": partner, "n": nonce}), nonce

    def link(self, token: str) -> str:
        return f"{self.public_url}/invite/{token}"

    def until(self, now: datetime | None = None) -> datetime:
        return (now or datetime.now(UTC)) + self.valid_for

    @staticmethod
    async def record(conn: asyncpg.Connection, partner: str, nonce: str) -> None:
        await conn.execute("INSERT INTO mail_invitations (nonce, partner) VALUES ($1, $2) "
                           "ON CONFLICT (nonce) DO NOTHING", nonce, partner)

    def read(self, token: str, *, expired_ok: bool = False) -> Invitation:
        """What a token says, if its signature holds and it has not expired (whether it was
        used is the database's to say: ``use``). ``expired_ok``: to finish an onboarding the
        token began before it expired."""
        try:
            body, signed_at = self._serializer.loads(
                token.strip(), max_age=None if expired_ok else
                int(self.valid_for.total_seconds()), return_timestamp=True)
        except SignatureExpired as exc:
            raise InvitationRefused(
                f"the invitation expired on {exc.date_signed + self.valid_for:%Y-%m-%d}"
                if exc.date_signed else "the invitation expired",
                hint="ask the partner that invited you for a new link: every e-mail it "
                "sends carries a fresh one") from None
        except BadSignature:
            raise InvitationRefused(
                "the invitation token is not valid: it was altered or cut short",
                hint="copy the whole link from the e-mail") from None
        if not isinstance(body, dict) or not {"p", "n"} <= body.keys():
            raise InvitationRefused("the invitation token does not say whom it invites")
        return Invitation(str(body["p"]), str(body["n"]), signed_at)

    async def check(self, conn: asyncpg.Connection, token: str, partner: str, *,
                    expired_ok: bool = False) -> Invitation:
        """What the token says, if it may be used now for ``partner``: signed, not expired,
        for this partner, sent by this mailer and not used; InvitationRefused otherwise."""
        invitation = self.read(token, expired_ok=expired_ok)
        if invitation.partner != partner:
            raise InvitationRefused(
                f"the invitation is for partner {invitation.partner!r}, not {partner!r}",
                hint=f"onboard {invitation.partner!r} with it, or use the link sent to "
                f"{partner!r}")
        used = await conn.fetchrow("SELECT used_at, used_for FROM mail_invitations "
                                   "WHERE nonce = $1 AND partner = $2",
                                   invitation.nonce, partner)
        if used is None:
            raise InvitationRefused("the invitation is not known to this mailer",
                                    hint="use a link from an e-mail this network sent")
        if used["used_at"] is not None:
            raise InvitationRefused(
                f"the invitation was used already, on {used['used_at']:%Y-%m-%d %H:%M} UTC "
                f"({used['used_for']})", hint="a link works once; the box it made is yours")
        return invitation

    async def use(self, conn: asyncpg.Connection, token: str, partner: str,
                  used_for: str, *, expired_ok: bool = False) -> Invitation:
        """Mark the token used (inside the caller's transaction); refused if it is not
        valid, not for ``partner``, or used before (by another onboarding meanwhile too)."""
        invitation = await self.check(conn, token, partner, expired_ok=expired_ok)
        row = await conn.fetchrow(
            "UPDATE mail_invitations SET used_at = clock_timestamp(), used_for = $3 "
            "WHERE nonce = $1 AND partner = $2 AND used_at IS NULL RETURNING nonce",
            invitation.nonce, partner, used_for)
        if row is None:
            await self.check(conn, token, partner, expired_ok=True)  # says who used it
            raise InvitationRefused("the invitation was used meanwhile")
        return invitation
