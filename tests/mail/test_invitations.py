"""Invitation links on a real PostgreSQL: a token works once, for its partner, until it
expires; an altered, expired or used one is refused with what went wrong."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from bus.db import create_database
from bus.devstack import StackInfo
from connectors.mail import store
from connectors.mail.invitations import InvitationRefused, Invitations

pytestmark = pytest.mark.stack


@pytest.fixture
async def conn(stack: StackInfo) -> AsyncIterator[asyncpg.Connection]:
    assert stack.database_url
    dsn = await create_database(stack.database_url, f"inv{uuid.uuid4().hex[:10]}_mailer")
    await store.migrate(dsn)
    connection = await asyncpg.connect(dsn)
    yield connection
    await connection.close()


async def test_a_token_works_once_for_its_partner(conn: asyncpg.Connection) -> None:
    invitations = Invitations(b"key", "https://bus.example/")
    token, nonce = invitations.make("farm")
    await invitations.record(conn, "farm", nonce)
    assert invitations.link(token) == f"https://bus.example/invite/{token}"
    with pytest.raises(InvitationRefused, match="is for partner 'farm', not 'mill'"):
        await invitations.use(conn, token, "mill", "onboarding of mill")
    used = await invitations.use(conn, token, "farm", "onboarding of farm")
    assert used.partner == "farm"
    with pytest.raises(InvitationRefused, match="used already") as refused:
        await invitations.use(conn, token, "farm", "onboarding of farm")
    assert refused.value.hint and "works once" in refused.value.hint


@pytest.mark.parametrize("change", [
    # a character in the middle of the signature (its last ones may be padding bits only)
    lambda t: t[:-10] + ("A" if t[-10] != "A" else "B") + t[-9:],
    lambda t: t[1:],  # cut short
    lambda t: "x" + t,
])
async def test_an_altered_token_is_refused(conn: asyncpg.Connection, change: object) -> None:
    invitations = Invitations(b"key", "https://bus.example")
    token, nonce = invitations.make("farm")
    await invitations.record(conn, "farm", nonce)
    with pytest.raises(InvitationRefused, match="altered or cut short"):
        await invitations.use(conn, change(token), "farm", "onboarding")  # type: ignore[operator]
    # Signed with another key: refused the same way.
    with pytest.raises(InvitationRefused, match="altered"):
        Invitations(b"other key", "https://bus.example").read(token)


async def test_an_expired_or_unknown_token_is_refused(conn: asyncpg.Connection) -> None:
    brief = Invitations(b"key", "https://bus.example", valid_for=timedelta(seconds=1))
    token, nonce = brief.make("farm")
    await brief.record(conn, "farm", nonce)
    await asyncio.sleep(2.2)
    with pytest.raises(InvitationRefused, match="expired") as refused:
        await brief.use(conn, token, "farm", "onboarding")
    assert refused.value.hint and "new link" in refused.value.hint
    # Well signed, but never sent by this mailer (its nonce is not recorded).
    invitations = Invitations(b"key", "https://bus.example")
    stray, _ = invitations.make("farm")
    with pytest.raises(InvitationRefused, match="not known"):
        await invitations.use(conn, stray, "farm", "onboarding")
