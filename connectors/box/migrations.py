"""The box SDK's tables in the box's own PostgreSQL, as numbered migrations.

``migrate`` applies the ones not applied yet, each in its own transaction, under an advisory
lock so that two processes starting at once do not race. Applied versions are recorded in
``boxbus_migrations``; a migration is never edited once released, only followed by another.
"""

from __future__ import annotations

import asyncpg

from bus.migrations import Migration, Schema

_LOCK_KEY = 0x626F7862  # "boxb": serialises migrations of one database


MIGRATIONS = [
    Migration(1, "outbox", """
        CREATE TABLE boxbus_outbox (
            id            bigserial PRIMARY KEY,
            event_id      text        NOT NULL UNIQUE,
            event_type    text        NOT NULL,
            topic         text        NOT NULL,
            record_key    bytea       NOT NULL,
            record_value  bytea       NOT NULL,
            headers       jsonb       NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        COMMENT ON TABLE boxbus_outbox IS
            'Events committed with the business change that caused them, waiting for the '
            'relay to publish them; a row is deleted once the brokers acknowledged it.';
    """),
    Migration(2, "inbox", """
        CREATE TABLE boxbus_inbox_events (
            event_id       text        PRIMARY KEY,
            event_type     text        NOT NULL,
            topic          text        NOT NULL,
            partition      int         NOT NULL,
            record_offset  bigint      NOT NULL,
            status         text        NOT NULL,
            applied_at     timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        COMMENT ON TABLE boxbus_inbox_events IS
            'Every valid event the inbox has dealt with (applied, skipped or dead-lettered), '
            'by id: a redelivered event finds its id here and is not applied again. Records '
            'that are not valid events are only in the dead-letter topic.';
        CREATE TABLE boxbus_inbox_offsets (
            consumer     text        NOT NULL,
            topic        text        NOT NULL,
            partition    int         NOT NULL,
            next_offset  bigint      NOT NULL,
            updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (consumer, topic, partition)
        );
        COMMENT ON TABLE boxbus_inbox_offsets IS
            'Where the inbox resumes each partition; committed in the same transaction as '
            'the effects of the events before it.';
    """),
    Migration(3, "outbox-notify-trigger", """
        CREATE FUNCTION boxbus_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('boxbus_outbox', '');
            RETURN NULL;
        END $$;
        CREATE TRIGGER boxbus_outbox_notify AFTER INSERT ON boxbus_outbox
            FOR EACH STATEMENT EXECUTE FUNCTION boxbus_outbox_notify();
        COMMENT ON FUNCTION boxbus_outbox_notify() IS
            'Wakes the relay when a transaction that wrote events commits (NOTIFY is '
            'delivered at commit), without a round trip of the publisher''s own.';
    """),
    Migration(4, "outbox-parked", """
        CREATE TABLE boxbus_outbox_parked (
            id            bigint      PRIMARY KEY,
            event_id      text        NOT NULL UNIQUE,
            event_type    text        NOT NULL,
            topic         text        NOT NULL,
            record_key    bytea       NOT NULL,
            record_value  bytea       NOT NULL,
            headers       jsonb       NOT NULL,
            created_at    timestamptz NOT NULL,
            parked_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
            reason        text        NOT NULL
        );
        CREATE INDEX boxbus_outbox_parked_topic ON boxbus_outbox_parked (topic, id);
        COMMENT ON TABLE boxbus_outbox_parked IS
            'Outbox rows the relay cannot publish (their topic does not exist), set aside so '
            'the box''s other events flow; `boxbus relay unpark` puts them back in order.';
    """),
    Migration(5, "rules", """
        CREATE TABLE boxbus_rules (
            version     int         PRIMARY KEY,
            body        text        NOT NULL,
            digest      text        NOT NULL,
            source      text        NOT NULL,
            applied_by  text        NOT NULL DEFAULT '',
            applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        COMMENT ON TABLE boxbus_rules IS
            'The box''s own rules (boxbus box rules apply), every version kept; the newest '
            'is in force for every transaction that starts after it was applied.';
    """),
    Migration(6, "business-receipts", """
        CREATE TABLE boxbus_sent (
            event_id        text        PRIMARY KEY,
            event_type      text        NOT NULL,
            aggregate_key   text        NOT NULL,
            target_box      text,
            created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
            sent_at         timestamptz,
            routed_at       timestamptz,
            refused_code    text,
            refused_reason  text
        );
        CREATE INDEX boxbus_sent_created ON boxbus_sent (created_at);
        COMMENT ON TABLE boxbus_sent IS
            'Every event this box published with tracking on: when it was committed, when '
            'the brokers acknowledged it (sent_at), when the router reported it (routed_at), '
            'or why the router refused it.';
        CREATE TABLE boxbus_sent_to (
            event_id      text        NOT NULL,
            recipient     text        NOT NULL,
            by_mail       boolean     NOT NULL DEFAULT false,
            status        text        NOT NULL
                          CHECK (status IN ('delivered', 'accepted', 'rejected')),
            reason        text,
            delivered_at  timestamptz,
            answered_at   timestamptz,
            PRIMARY KEY (event_id, recipient)
        );
        COMMENT ON TABLE boxbus_sent_to IS
            'Per event and recipient: delivered (the router forwarded it), then accepted or '
            'rejected (with the reason) by the recipient''s box or the mailer.';
    """),
]


SCHEMA = Schema("boxbus_migrations", _LOCK_KEY, MIGRATIONS)


async def pending(conn: asyncpg.Connection) -> list[int]:
    """The versions this SDK has that the database has not applied (all of them in a
    database never migrated)."""
    return await SCHEMA.pending(conn)


async def migrate(dsn: str) -> list[int]:
    """Apply the migrations not applied yet; the versions applied by this call."""
    conn = await asyncpg.connect(dsn)
    try:
        return await SCHEMA.migrate(conn)
    finally:
        await conn.close()
