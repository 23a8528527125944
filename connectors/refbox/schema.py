"""The reference box's own tables, beside the SDK's (``boxbus_*``) in the box's database.

An order is one row whether the box bought it (``role = 'purchase'``) or sells it
(``'sales'``, created by the inbox from the buyer's OrderPlaced); ``counterparty`` is the other
box. Goods a supplier dispatched to this box are ``goods_in_transit`` until they are received.
"""

from __future__ import annotations

import asyncpg

from bus.migrations import Migration, Schema
from connectors.box import migrate

V1 = """
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

# The whole business chain: processes and item codes, tasks, invoices and payments, partners'
# stock, contacts, documents.
V2 = """-- The business process a sales order is in (the box's rules choose it when it arrives), and
-- the buyer's own codes of each line as they came (kept for a person to map them).
ALTER TABLE orders ADD COLUMN IF NOT EXISTS pipeline text NOT NULL DEFAULT 'purchasing';
ALTER TABLE orders ADD COLUMN IF NOT EXISTS stage text;
ALTER TABLE order_lines ADD COLUMN IF NOT EXISTS partner_sku text;
ALTER TABLE order_lines ADD COLUMN IF NOT EXISTS partner_unit text;
ALTER TABLE order_lines ADD COLUMN IF NOT EXISTS partner_quantity numeric(18, 3);
ALTER TABLE order_lines ADD COLUMN IF NOT EXISTS partner_price_minor bigint;
ALTER TABLE stock ADD COLUMN IF NOT EXISTS unit text;
CREATE TABLE IF NOT EXISTS tasks (
    task_id     bigserial PRIMARY KEY,
    order_id    text NOT NULL,
    kind        text NOT NULL,
    detail      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    done_at     timestamptz
);
CREATE TABLE IF NOT EXISTS invoices (
    invoice_id    text PRIMARY KEY,
    order_id      text NOT NULL,
    role          text NOT NULL CHECK (role IN ('receivable', 'payable')),
    counterparty  text NOT NULL,
    number        text NOT NULL,
    issued_at     timestamptz NOT NULL,
    due_at        timestamptz NOT NULL,
    net_minor     bigint NOT NULL,
    tax_minor     bigint NOT NULL,
    total_minor   bigint NOT NULL,
    currency      text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS invoices_number ON invoices (role, counterparty, number);
CREATE TABLE IF NOT EXISTS payments (
    payment_id    text PRIMARY KEY,
    invoice_id    text NOT NULL REFERENCES invoices,
    role          text NOT NULL CHECK (role IN ('incoming', 'outgoing')),
    counterparty  text NOT NULL,
    amount_minor  bigint NOT NULL,
    currency      text NOT NULL,
    paid_at       timestamptz NOT NULL,
    method        text NOT NULL,
    reference     text
);
-- The open balance with each partner: what was invoiced (credit notes count negative) less
-- what was paid, per currency; 'receivable' is owed to this box, 'payable' by it.
DROP VIEW IF EXISTS balances;
CREATE VIEW balances AS
    SELECT i.counterparty, i.role, i.currency, count(*) AS invoices,
           sum(i.total_minor)::bigint AS invoiced_minor,
           coalesce(sum(p.paid), 0)::bigint AS paid_minor,
           (sum(i.total_minor) - coalesce(sum(p.paid), 0))::bigint AS open_minor
    FROM invoices i LEFT JOIN (SELECT invoice_id, sum(amount_minor) AS paid FROM payments
                               GROUP BY invoice_id) p USING (invoice_id)
    GROUP BY i.counterparty, i.role, i.currency;
CREATE TABLE IF NOT EXISTS partner_stock (
    supplier    text NOT NULL,
    warehouse   text NOT NULL,
    sku         text NOT NULL,
    unit        text NOT NULL,
    on_hand     numeric(18, 3) NOT NULL,
    reserved    numeric(18, 3) NOT NULL,
    in_transit  numeric(18, 3) NOT NULL,
    changed_at  timestamptz NOT NULL,
    PRIMARY KEY (supplier, warehouse, sku)
);
CREATE TABLE IF NOT EXISTS contacts (
    contact_id  text NOT NULL,
    owner_box   text NOT NULL,
    order_id    text,
    kind        text NOT NULL,
    name        text NOT NULL,
    email       text,
    phone       text,
    company     text,
    changed_at  timestamptz NOT NULL,
    PRIMARY KEY (contact_id, owner_box)
);
CREATE TABLE IF NOT EXISTS documents (
    document_id    text NOT NULL,
    direction      text NOT NULL CHECK (direction IN ('outgoing', 'incoming')),
    order_id       text NOT NULL,
    counterparty   text NOT NULL,
    document_type  text NOT NULL,
    file_name      text NOT NULL,
    media_type     text NOT NULL,
    sha256         text NOT NULL,
    size_bytes     bigint NOT NULL,
    carried        text NOT NULL CHECK (carried IN ('inline', 'claim-check')),
    object_key     text,
    content        bytea,
    at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (document_id, direction, counterparty)
);
"""

MIGRATIONS = [Migration(1, "reference-box", V1), Migration(2, "business-chain", V2)]
SCHEMA = Schema("refbox_migrations", 0x72626F78, MIGRATIONS)  # "rbox"


async def migrate_refbox(dsn: str) -> None:
    """The SDK's migrations, then the reference box's own, each applied once (DDL takes
    strong locks: it must not run again on a box at work)."""
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await SCHEMA.migrate(conn)
    finally:
        await conn.close()
