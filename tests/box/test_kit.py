"""The box test kit runs the same test in its three ways: in memory, on PostgreSQL, and on the
real stack (Kafka, the registry, the inbox as in production). Also: an event without a handler
is rejected with the reason, a handler that touches the database in memory is told how to run
it, and the README shows the example test as it is."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bus import Settings, example
from bus.devstack import StackInfo
from bus.events.models import OrderPlaced
from connectors.box import Applied, Handlers
from connectors.box.testing import BoxTest
from tests.box import test_kit_example

REPO = Path(__file__).resolve().parents[2]


def test_the_readme_shows_the_example_test_as_it_is() -> None:
    example_text = (REPO / "tests" / "box" / "test_kit_example.py").read_text()
    body = example_text.split('"""', 2)[2].strip()  # without the module docstring
    assert body in (REPO / "README.md").read_text()


@pytest.mark.stack
async def test_the_example_on_postgresql(box_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXBUS_TEST_DATABASE_URL", box_db)
    await test_kit_example.test_an_order_is_confirmed_once()


@pytest.mark.stack
async def test_the_example_on_the_real_stack(
    box_db: str, settings: Settings, stack: StackInfo, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BOXBUS_TEST_REAL", "1")
    monkeypatch.setenv("BOXBUS_TEST_DATABASE_URL", box_db)
    monkeypatch.setenv("BOXBUS_RUN_DIR", str(settings.run_dir))  # the suite's stack
    monkeypatch.setenv("BOXBUS_TOPIC_NAMESPACE", f"kit{uuid.uuid4().hex[:8]}")
    await test_kit_example.test_an_order_is_confirmed_once()


async def test_an_event_without_a_handler_is_rejected_with_the_reason() -> None:
    order = example("boxbus.orders.OrderPlaced")
    async with BoxTest(Handlers(), box="dairy-hub") as box:
        outcome = await box.deliver(order)
        assert outcome.status == "rejected"
        assert "no handler for boxbus.orders.OrderPlaced" in (outcome.reason or "")


async def test_a_handler_that_queries_in_memory_is_told_how_to_run_it() -> None:
    handlers = Handlers()

    @handlers.on(OrderPlaced)
    async def store(order: OrderPlaced, applied: Applied) -> None:
        await applied.conn.execute("INSERT INTO sales_orders VALUES ($1)", order.order_id)

    async with BoxTest(handlers, box="dairy-hub") as box:
        outcome = await box.deliver(example("boxbus.orders.OrderPlaced"))
    assert outcome.status == "rejected"
    assert "database=" in (outcome.reason or "")
