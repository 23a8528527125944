"""Several instances of a system answer its questions: a second billing runs as its own
process (`boxbus company run`), is killed with SIGKILL mid-run, and every question is still
answered, each exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bus import Settings, naming
from bus.devstack import StackInfo
from bus.events.models import AnswerStatus, BillingPeriodAnswered, BillingPeriodRequested
from bus.kafka import KafkaAccess
from bus.topics import read_topic
from connectors.company import Sales
from connectors.refbox.network import LocalNetwork
from tests.conftest import boxbus_cli
from tests.networks import running_network

pytestmark = pytest.mark.stack

NETWORK = """\
regions:
  central: {partitions: 3}
boxes:
  - {id: sales, region: central, company: acme, rpc: true}
  - {id: delivery, region: central, company: acme}
  - {id: billing, region: central, company: acme, rpc: true}
relationships:
  - {kind: internal, systems: [sales, delivery, billing]}
"""
SYSTEMS = {"sales": "sales", "delivery": "delivery", "billing": "billing"}


@pytest.fixture(scope="module")
async def network(settings: Settings, stack: StackInfo, kafka: KafkaAccess
                  ) -> AsyncIterator[LocalNetwork]:
    async with running_network(settings, stack, kafka, NETWORK, "rs",
                               systems=SYSTEMS) as running:
        yield running


async def test_a_second_responder_process_shares_the_questions_and_its_death_loses_none(
        network: LocalNetwork, env_for_cli: dict[str, str], kafka: KafkaAccess,
        tmp_path: Path) -> None:
    sales = network.systems["sales"].system
    assert isinstance(sales, Sales) and sales.requester is not None
    ns = network.settings.topic_namespace
    log = tmp_path / "billing-2.log"
    with open(log, "wb") as out:
        second = subprocess.Popen(
            [*boxbus_cli(), "company", "run", "--box", "billing", "--system", "billing",
             "--sales", "sales", "--delivery", "delivery", "--billing", "billing",
             "--namespace", ns, "--region", "central",
             "--database-url", network.dsns["billing"]],
            env={**env_for_cli, "BOXBUS_LOG_LEVEL": "INFO"}, stdout=out, stderr=out)
    try:
        async with asyncio.timeout(60):
            while "partitions assigned" not in log.read_text() or \
                    "requests" not in log.read_text():
                assert second.poll() is None, log.read_text()[-2000:]
                await asyncio.sleep(0.2)

        asking = sales.requester

        async def ask(n: int) -> str:
            answer = await asking.ask(BillingPeriodRequested, "billing", timeout=45,
                                      client_id=f"client-{n}")
            assert isinstance(answer, BillingPeriodAnswered)
            assert answer.answer.status is AnswerStatus.NOT_FOUND
            return answer.answer.request_id

        first = await asyncio.gather(*(ask(n) for n in range(20)))
        os.kill(second.pid, signal.SIGKILL)  # mid-run: its questions go to the other
        second.wait(timeout=10)
        rest = await asyncio.gather(*(ask(n) for n in range(20, 40)))
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(timeout=10)
    assert len(set(first) | set(rest)) == 40
    replies = await read_topic(kafka, naming.replies_topic(ns, "sales"))
    per_question = Counter(dict(r.headers).get("ce_correlationid", b"").decode()
                           for r in replies)
    assert all(per_question[q] == 1 for q in [*first, *rest])  # each answered once
