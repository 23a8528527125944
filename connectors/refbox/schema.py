"""The reference box's own tables, beside the SDK's (``boxbus_*``) in the box's database.

An order is one row whether the box bought it (``role = 'purchase'``) or sells it
(``'sales'``, created by the inbox from the buyer's OrderPlaced); ``counterparty`` is the other
box. Goods a supplier dispatched to this box are ``goods_in_transit`` until they are received.
"""

from __future__ import annotations

import asyncpg

from connectors.box import migrate

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id      text PRIMARY KEY,
    role          text NOT NULL CHECK (role IN ('purchase', 'sales')),
    counterparty  text NOT NULL,
    status        text NOT NULL,
    revision      int NOT NULL DEFAULT 0,
    total_minor   bigint NOT NULL,
    currency      text NOT NULL,
    notes         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS order_lines (
    order_id          text NOT NULL REFERENCES orders ON DELETE CASCADE,
    line_no           int NOT NULL,
    sku               text NOT NULL,
    description       text NOT NULL,
    quantity          numeric(18, 3) NOT NULL,
    unit              text NOT NULL,
    unit_price_minor  bigint NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE IF NOT EXISTS comments (
    comment_id  text PRIMARY KEY,
    order_id    text NOT NULL,
    author      text NOT NULL,
    text        text NOT NULL,
    origin_box  text NOT NULL,
    written_at  timestamptz NOT NULL,
    seq         bigserial
);
CREATE TABLE IF NOT EXISTS stock (
    warehouse  text NOT NULL,
    sku        text NOT NULL,
    quantity   numeric(18, 3) NOT NULL,
    PRIMARY KEY (warehouse, sku)
);
CREATE TABLE IF NOT EXISTS shipments (
    shipment_id    text PRIMARY KEY,
    order_id       text NOT NULL,
    direction      text NOT NULL CHECK (direction IN ('outgoing', 'incoming')),
    counterparty   text NOT NULL,
    status         text NOT NULL CHECK (status IN ('in_transit', 'received')),
    dispatched_at  timestamptz NOT NULL,
    received_at    timestamptz
);
CREATE TABLE IF NOT EXISTS shipment_lines (
    shipment_id  text NOT NULL REFERENCES shipments ON DELETE CASCADE,
    line_no      int NOT NULL,
    sku          text NOT NULL,
    quantity     numeric(18, 3) NOT NULL,
    unit         text NOT NULL,
    PRIMARY KEY (shipment_id, line_no)
);
CREATE OR REPLACE VIEW goods_in_transit AS
    SELECT s.shipment_id, s.order_id, s.counterparty AS supplier, s.dispatched_at,
           l.sku, l.quantity, l.unit
    FROM shipments s JOIN shipment_lines l USING (shipment_id)
    WHERE s.direction = 'incoming' AND s.status = 'in_transit';
CREATE TABLE IF NOT EXISTS price_lists (
    price_list_id  text PRIMARY KEY,
    from_box       text NOT NULL,
    valid_from     timestamptz NOT NULL,
    entries        int NOT NULL
);
CREATE TABLE IF NOT EXISTS prices (
    sku            text PRIMARY KEY,
    unit           text NOT NULL,
    price_minor    bigint NOT NULL,
    currency       text NOT NULL,
    price_list_id  text NOT NULL
);
CREATE TABLE IF NOT EXISTS observed_orders (
    order_id      text PRIMARY KEY,
    buyer_box     text NOT NULL,
    supplier_box  text NOT NULL,
    region        text NOT NULL,
    total_minor   bigint NOT NULL,
    currency      text NOT NULL
);
CREATE TABLE IF NOT EXISTS branch_reports (
    report_id      text PRIMARY KEY,
    branch_box     text NOT NULL,
    period_start   timestamptz NOT NULL,
    period_end     timestamptz NOT NULL,
    orders_count   bigint NOT NULL,
    revenue_minor  bigint NOT NULL,
    currency       text NOT NULL
);
ALTER TABLE branch_reports ADD COLUMN IF NOT EXISTS stock_value_minor bigint NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS receipts (
    event_id      text NOT NULL,
    from_box      text NOT NULL,
    event_type    text NOT NULL,
    status        text NOT NULL,
    reason        text,
    processed_at  timestamptz NOT NULL,
    PRIMARY KEY (event_id, from_box)
);
"""


async def migrate_refbox(dsn: str) -> None:
    """The SDK's migrations, then the reference box's tables (idempotent)."""
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('boxbus-refbox'))")
            await conn.execute(SCHEMA)
    finally:
        await conn.close()
