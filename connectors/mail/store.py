"""The mailer's own PostgreSQL: the box SDK's tables (its intake is the SDK's inbox, its
replies and receipts leave through the SDK's outbox and relay) and the mail tables below, as
numbered migrations.

- ``mail_outgoing``: every record the mailer took from the mail topic, one row per event and
  partner, written in the same transaction as the topic offset after it (the inbox's commit).
  Its status goes ``queued`` -> ``sent`` (the SMTP server accepted it), or ``dead`` (refused
  for good, or undeliverable for longer than the retry window), or ``onboarded`` (the partner
  got a box before it was sent: the onboarding replays it into the box instead). The record
  itself (key, value, headers) is kept: the e-mail is rendered from it when it is sent, and
  the onboarding replays it.
- ``mail_partners``: each partner's delivery state: when its mailbox may be tried again and
  since when it fails, so that one unreachable mailbox waits alone.
- ``mail_threads``: one per partner, box and order (two boxes may use the same order id):
  the reply address's reference, the order's first Message-ID (which every later e-mail of
  the order refers to).
- ``mail_invitations``: the invitation tokens sent, and the one used.

When a partner becomes a box (:mod:`connectors.mail.onboarding`), its row in
``mail_partners`` is marked handed over (the courier sends it nothing more) and each of its
events is marked ``replayed_at`` once it is in the new box's inbox.
"""

from __future__ import annotations

import asyncpg

from bus.migrations import Migration, Schema
from connectors.box import migrations as box_migrations

_LOCK_KEY = 0x6D61696C  # "mail"

MIGRATIONS = [
    Migration(1, "mail", """
        CREATE TABLE mail_outgoing (
            id               bigserial   PRIMARY KEY,
            event_id         text        NOT NULL,
            partner          text        NOT NULL,
            event_type       text        NOT NULL,
            thread_key       text        NOT NULL,
            source_box       text        NOT NULL,
            record_topic     text        NOT NULL,
            record_partition int         NOT NULL,
            record_offset    bigint      NOT NULL,
            record_key       bytea,
            record_value     bytea       NOT NULL,
            headers          jsonb       NOT NULL,
            status           text        NOT NULL DEFAULT 'queued',
            attempts         int         NOT NULL DEFAULT 0,
            last_error       text,
            message_id       text,
            queued_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
            sent_at          timestamptz,
            UNIQUE (event_id, partner)
        );
        CREATE INDEX mail_outgoing_queued ON mail_outgoing (partner, id)
            WHERE status = 'queued';
        COMMENT ON TABLE mail_outgoing IS
            'Every event the mailer took for a partner, queued in the transaction of its topic '
            'offset, and what became of its e-mail.';
        CREATE FUNCTION mail_outgoing_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('boxbus_mail', '');
            RETURN NULL;
        END $$;
        CREATE TRIGGER mail_outgoing_notify AFTER INSERT ON mail_outgoing
            FOR EACH STATEMENT EXECUTE FUNCTION mail_outgoing_notify();
        CREATE TABLE mail_partners (
            partner          text        PRIMARY KEY,
            next_attempt_at  timestamptz NOT NULL DEFAULT '-infinity',
            failing_since    timestamptz,
            failures         int         NOT NULL DEFAULT 0,
            last_error       text
        );
        COMMENT ON TABLE mail_partners IS
            'Delivery state per partner: a mailbox that does not answer waits alone.';
        CREATE TABLE mail_threads (
            partner          text        NOT NULL,
            buyer_box        text        NOT NULL,
            thread_key       text        NOT NULL,
            reference        text        NOT NULL UNIQUE,
            root_message_id  text        NOT NULL,
            created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (partner, buyer_box, thread_key)
        );
        COMMENT ON TABLE mail_threads IS
            'One conversation per partner and order: its reply address and first message.';
        CREATE TABLE mail_invitations (
            nonce            text        PRIMARY KEY,
            partner          text        NOT NULL,
            issued_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
            used_at          timestamptz,
            used_for         text
        );
        COMMENT ON TABLE mail_invitations IS
            'Invitation links sent; a token is good once.';
    """),
]

MIGRATIONS.append(Migration(2, "onboarding", """
    ALTER TABLE mail_partners ADD COLUMN handed_over_at timestamptz;
    COMMENT ON COLUMN mail_partners.handed_over_at IS
        'When the partner became a box (boxbus partner onboard): its mail is replayed into its '
        'box from then on, not sent.';
    ALTER TABLE mail_outgoing ADD COLUMN replayed_at timestamptz;
    COMMENT ON COLUMN mail_outgoing.replayed_at IS
        'When the event was written into the partner''s new box (onboarding).';
"""))

MIGRATIONS.append(Migration(3, "campaigns", """
    CREATE TABLE mail_suppressed (
        box         text        NOT NULL,
        email       text        NOT NULL,
        reason      text        NOT NULL,
        added_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (box, email)
    );
    COMMENT ON TABLE mail_suppressed IS
        'Addresses a box''s campaigns never write to again: unsubscribed (one click) or '
        'bounced for good.';
    CREATE TABLE campaign_sends (
        campaign    text        NOT NULL,
        box         text        NOT NULL,
        contact_id  text        NOT NULL,
        email       text        NOT NULL,
        status      text        NOT NULL,
        detail      text,
        message_id  text        NOT NULL,
        bounce_ref  text        NOT NULL UNIQUE,
        letter      text,
        updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (campaign, box, contact_id)
    );
    COMMENT ON TABLE campaign_sends IS
        'One row per campaign and contact: sending -> sent (or bounced); a campaign run again '
        'skips what is sent.';
"""))

SCHEMA = Schema("mail_migrations", _LOCK_KEY, MIGRATIONS)


async def migrate(dsn: str) -> list[int]:
    """The box SDK's tables and the mail tables; the mail versions applied by this call."""
    await box_migrations.migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        return await SCHEMA.migrate(conn)
    finally:
        await conn.close()
