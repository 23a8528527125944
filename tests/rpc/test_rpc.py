"""Request/reply on the bus, on the real stack: questions routed by the network's
relationships, answers back to exactly the instance that asked, deadlines, refusals, and
one answer per question however often a responder is retried."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from bus import Settings, naming
from bus.devstack import StackInfo
from bus.events.models import (
    AnswerStatus,
    BillingPeriodAnswered,
    BillingPeriodRequested,
    ContractRatesRequested,
    Money,
)
from bus.kafka import KafkaAccess
from bus.topics import read_topic
from connectors.box import Applied, Retry
from connectors.box.rpc import (
    Answers,
    NotFound,
    Requester,
    RequestFailed,
    RequestTimedOut,
    Responder,
)
from connectors.refbox.network import LocalNetwork
from tests.networks import running_network

pytestmark = pytest.mark.stack

NETWORK = """\
regions:
  central: {partitions: 3}
boxes:
  - {id: sales, region: central, company: acme, rpc: true}
  - {id: billing, region: central, company: acme, rpc: true}
  - {id: outsider, region: central, company: other, rpc: true}
  - {id: plain, region: central, company: acme}
relationships:
  - {kind: internal, systems: [sales, billing, plain]}
"""

answers = Answers()
tries: dict[str, int] = {}


@answers.to(BillingPeriodRequested)
async def billing_period(question: BillingPeriodRequested, applied: Applied) -> dict[str, Any]:
    if question.client_id == "flaky":  # a lock or a remote service: tried again
        tries[question.request.request_id] = tries.get(question.request.request_id, 0) + 1
        if tries[question.request.request_id] < 3:
            raise Retry("the ledger is locked")
    row = await applied.conn.fetchrow(
        "SELECT invoiced, paid FROM client_ledger WHERE client_id = $1", question.client_id)
    if row is None:
        raise NotFound(f"no client {question.client_id} in billing")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    return {"client_id": question.client_id, "period_start": start,
            "period_end": datetime(2026, 12, 1, tzinfo=UTC),
            "invoiced": Money(amount_minor=row["invoiced"], currency="EUR"),
            "paid": Money(amount_minor=row["paid"], currency="EUR"),
            "balance": Money(amount_minor=row["invoiced"] - row["paid"], currency="EUR"),
            "open_invoices": 1 if row["invoiced"] > row["paid"] else 0}


@pytest.fixture(scope="module")
async def network(settings: Settings, stack: StackInfo, kafka: KafkaAccess
                  ) -> AsyncIterator[LocalNetwork]:
    async with running_network(settings, stack, kafka, NETWORK, "rp") as running:
        conn = await asyncpg.connect(running.dsns["billing"])
        try:
            await conn.execute("CREATE TABLE client_ledger (client_id text PRIMARY KEY, "
                               "invoiced bigint, paid bigint)")
            await conn.execute("INSERT INTO client_ledger VALUES ('acme-travel', 184200, "
                               "120000), ('flaky', 10, 0)")
        finally:
            await conn.close()
        yield running


def requester(network: LocalNetwork, box: str = "sales", label: str | None = None) -> Requester:
    ns = network.settings.topic_namespace
    return Requester(network.settings, network.identity(naming.box_principal(ns, box)), box,
                     "central", network.serde, network.dsns[box],
                     outbox=network.boxes[box].outbox, label=label)


def responder(network: LocalNetwork) -> Responder:
    ns = network.settings.topic_namespace
    return Responder(network.settings, network.dsns["billing"],
                     network.identity(naming.box_principal(ns, "billing")), "billing",
                     "central", answers, network.serde, outbox=network.boxes["billing"].outbox)


async def test_a_question_is_answered_and_an_unknown_client_is_not_found(
        network: LocalNetwork) -> None:
    answering = responder(network)
    task = asyncio.create_task(answering.run())
    try:
        async with requester(network) as asking:
            answer = await asking.ask(BillingPeriodRequested, "billing", timeout=10,
                                      client_id="acme-travel")
            assert isinstance(answer, BillingPeriodAnswered)
            assert answer.answer.status is AnswerStatus.OK
            assert answer.balance == Money(amount_minor=64_200, currency="EUR")
            assert answer.meta.source_box == "billing"
            missing = await asking.ask(BillingPeriodRequested, "billing", timeout=10,
                                       client_id="nobody")
            assert missing.answer.status is AnswerStatus.NOT_FOUND  # type: ignore[attr-defined]
            assert "no client nobody" in (missing.answer.error or "")  # type: ignore[attr-defined]
            # Billing answers no ContractRatesRequested: the question waits out its deadline.
            with pytest.raises(RequestTimedOut):
                await asking.ask(ContractRatesRequested, "billing", timeout=1,
                                 client_id="acme-travel")
    finally:
        answering.stop()
        await task


async def test_with_the_responder_stopped_a_question_fails_at_its_deadline(
        network: LocalNetwork) -> None:
    async with requester(network) as asking:
        for deadline in (0.5, 1.5):
            started = time.perf_counter()
            with pytest.raises(RequestTimedOut, match="no answer within"):
                await asking.ask(BillingPeriodRequested, "billing", timeout=deadline,
                                 client_id="acme-travel")
            took = time.perf_counter() - started
            assert deadline <= took <= deadline * 1.1, took
        assert asking.stats.timeouts == 2


async def test_a_box_without_a_relationship_or_without_rpc_is_refused_at_once(
        network: LocalNetwork) -> None:
    async with requester(network, "outsider") as asking:
        started = time.perf_counter()
        with pytest.raises(RequestFailed, match="no relationship"):
            await asking.ask(BillingPeriodRequested, "billing", timeout=10,
                             client_id="acme-travel")
        assert time.perf_counter() - started < 5  # the router's refusal, not the deadline
    async with requester(network) as asking:
        with pytest.raises(RequestFailed, match="takes no part in request/reply"):
            await asking.ask(BillingPeriodRequested, "plain", timeout=10, client_id="x")


async def test_two_requesters_get_their_own_answers_and_a_restarted_one_loses_none(
        network: LocalNetwork) -> None:
    answering = responder(network)
    task = asyncio.create_task(answering.run())
    try:
        first = requester(network, label="sales/a")
        second = requester(network, label="sales/b")
        await first.start()
        await second.start()
        assert first.partition != second.partition

        async def ask_many(asking: Requester, count: int) -> list[Any]:
            return list(await asyncio.gather(*(
                asking.ask(BillingPeriodRequested, "billing", timeout=20,
                           client_id="acme-travel", key=f"q-{n}") for n in range(count))))

        running = asyncio.create_task(ask_many(first, 30))
        before = await ask_many(second, 10)
        await second.stop()  # restarted mid-run: its partition is free again
        second = requester(network, label="sales/b2")
        await second.start()
        after = await ask_many(second, 10)
        answered = await running
        await first.stop()
        await second.stop()
        for batch in (before, after, answered):
            assert all(a.answer.status is AnswerStatus.OK for a in batch)
            assert len({a.answer.request_id for a in batch}) == len(batch)
        assert first.stats.timeouts == second.stats.timeouts == 0
        assert first.stats.late == 0  # nothing of the other instance's reached it
    finally:
        answering.stop()
        await task


async def test_a_retried_answer_leaves_once(network: LocalNetwork, kafka: KafkaAccess) -> None:
    answering = responder(network)
    task = asyncio.create_task(answering.run())
    try:
        async with requester(network) as asking:
            answer = await asking.ask(BillingPeriodRequested, "billing", timeout=20,
                                      client_id="flaky")
    finally:
        answering.stop()
        await task
    request_id = answer.answer.request_id  # type: ignore[attr-defined]
    assert tries[request_id] == 3
    replies = await read_topic(kafka, naming.replies_topic(network.settings.topic_namespace,
                                                           "sales"))
    mine = [r for r in replies if dict(r.headers).get("ce_correlationid") == request_id.encode()]
    assert len(mine) == 1
