"""A supplier's box confirms the orders it receives: its handler, tested with the box test kit.
In memory by default; on PostgreSQL with database=; on the real stack with BOXBUS_TEST_REAL=1."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from bus import example
from bus.events.models import EventMeta, OrderConfirmed, OrderPlaced
from connectors.box import Applied, Handlers, Rejected
from connectors.box.testing import BoxTest

handlers = Handlers()


@handlers.on(OrderPlaced)
async def confirm(order: OrderPlaced, applied: Applied) -> None:
    if not order.lines:
        raise Rejected("an order needs at least one line")
    now = datetime.now(UTC)
    assert applied.outbox is not None
    await applied.outbox.publish(applied.conn, OrderConfirmed(
        meta=EventMeta(event_id=str(uuid.uuid4()), source_box=applied.box_id,
                       region=order.meta.region, aggregate_key=order.order_id,
                       occurred_at=now, target_box=order.buyer_box,
                       correlation_id=order.order_id, causation_id=order.meta.event_id),
        order_id=order.order_id, lines=order.lines, total=order.total,
        payment_terms="NET30", payment_due_days=30,
        promised_dispatch_at=now + timedelta(days=1),
        promised_delivery_at=now + timedelta(days=2)))


async def test_an_order_is_confirmed_once() -> None:
    order = example("boxbus.orders.OrderPlaced")
    assert isinstance(order, OrderPlaced)
    async with BoxTest(handlers, box="dairy-hub") as box:
        assert (await box.deliver(order)).status == "applied"
        assert [type(e) for e in box.published] == [OrderConfirmed]
        assert (await box.deliver(order)).status == "duplicate"  # redelivered: applied once

        empty = order.model_copy(update={"lines": (), "meta": order.meta.model_copy(
            update={"event_id": str(uuid.uuid4())})})
        refused = await box.deliver(empty)
        assert refused.status == "rejected" and "at least one line" in (refused.reason or "")
        assert len(box.published) == 1  # nothing published for the refused one
