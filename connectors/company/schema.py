"""The tables of the three internal systems of a company (each on its own database, beside the
box SDK's): sales keeps its clients, their contract rates and the bookings it took; delivery
keeps the services it is to provide and what they used; billing keeps its copy of the rates,
the usage it billed, its invoices and what was paid."""

from __future__ import annotations

import asyncpg

from bus.migrations import Migration, Schema
from connectors.box import migrate

SALES = """
CREATE TABLE IF NOT EXISTS clients (
    client_id     text PRIMARY KEY,
    name          text NOT NULL,
    client_box    text,
    client_email  text
);
CREATE TABLE IF NOT EXISTS rates (
    client_id    text NOT NULL REFERENCES clients,
    service      text NOT NULL,
    unit         text NOT NULL,
    price_minor  bigint NOT NULL,
    currency     text NOT NULL,
    tax_rate_bp  int NOT NULL,
    valid_from   timestamptz NOT NULL,
    PRIMARY KEY (client_id, service, unit, valid_from)
);
CREATE TABLE IF NOT EXISTS bookings (
    booking_id        text PRIMARY KEY,
    client_id         text NOT NULL REFERENCES clients,
    service           text NOT NULL,
    starts_at         timestamptz NOT NULL,
    duration_minutes  int NOT NULL,
    participants      int NOT NULL,
    booked_at         timestamptz NOT NULL DEFAULT now()
);
"""

DELIVERY = """
CREATE TABLE IF NOT EXISTS scheduled (
    booking_id        text PRIMARY KEY,
    client_id         text NOT NULL,
    client_box        text,
    client_email      text,
    service           text NOT NULL,
    starts_at         timestamptz NOT NULL,
    duration_minutes  int NOT NULL,
    participants      int NOT NULL,
    status            text NOT NULL CHECK (status IN ('scheduled', 'delivered')),
    started_at        timestamptz,
    ended_at          timestamptz,
    used_minutes      int,
    attended          int,
    resources         text[] NOT NULL DEFAULT '{}'
);
"""

BILLING = """
CREATE TABLE IF NOT EXISTS client_rates (
    client_id    text NOT NULL,
    service      text NOT NULL,
    unit         text NOT NULL,
    price_minor  bigint NOT NULL,
    currency     text NOT NULL,
    tax_rate_bp  int NOT NULL,
    valid_from   timestamptz NOT NULL,
    learned      text NOT NULL CHECK (learned IN ('asked', 'changed')),
    PRIMARY KEY (client_id, service, unit, valid_from)
);
CREATE TABLE IF NOT EXISTS usage (
    booking_id        text PRIMARY KEY,
    client_id         text NOT NULL,
    service           text NOT NULL,
    started_at        timestamptz NOT NULL,
    duration_minutes  int NOT NULL,
    participants      int NOT NULL,
    invoice_id        text,
    client_box        text,
    status            text NOT NULL DEFAULT 'unpriced'
                      CHECK (status IN ('unpriced', 'priced', 'failed')),
    problem           text
);
CREATE TABLE IF NOT EXISTS bills (
    invoice_id    text PRIMARY KEY,
    client_id     text NOT NULL,
    booking_id    text NOT NULL UNIQUE,
    number        text NOT NULL UNIQUE,
    issued_at     timestamptz NOT NULL,
    net_minor     bigint NOT NULL,
    tax_minor     bigint NOT NULL,
    total_minor   bigint NOT NULL,
    currency      text NOT NULL,
    sent_to       text NOT NULL
);
CREATE TABLE IF NOT EXISTS received_payments (
    payment_id    text PRIMARY KEY,
    invoice_id    text NOT NULL REFERENCES bills,
    amount_minor  bigint NOT NULL,
    paid_at       timestamptz NOT NULL
);
"""

TABLES = {"sales": SALES, "delivery": DELIVERY, "billing": BILLING}


SCHEMAS = {kind: Schema(f"{kind}_migrations", 0x636F6D70 + n,  # "comp"
                        [Migration(1, kind, sql)])
           for n, (kind, sql) in enumerate(TABLES.items())}


async def migrate_system(dsn: str, kind: str) -> None:
    """The SDK's migrations, then the system's own, each applied once."""
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await SCHEMAS[kind].migrate(conn)
    finally:
        await conn.close()
