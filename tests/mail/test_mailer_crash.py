"""`boxbus mailer run` killed with SIGKILL in the middle of its mail and started again: every
order reaches its partner, and the partners see exactly one Message-ID per event (a copy sent
again after the kill carries the same one)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bus import Settings, naming
from bus.catalog import SchemaCatalog
from bus.db import create_database
from bus.devstack import StackInfo
from bus.kafka import KafkaAccess
from bus.registry import SchemaRegistry
from bus.serde import EventSerde
from bus.topology import parse_topology
from connectors.refbox.network import LocalNetwork
from tests.conftest import boxbus_cli
from tests.mail.mailbox import Mailbox
from tests.mail.test_mailer import LINES

pytestmark = pytest.mark.stack

NETWORK = """\
regions:
  north: {partitions: 3}
boxes:
  - {id: shop, region: north, company: Corner Shop}
  - {id: farm, region: north, company: Farm, kind: partner, email: orders@farm.example}
  - {id: mill, region: north, company: Mill, kind: partner, email: orders@mill.example}
relationships:
  - {kind: trade, buyer: shop, supplier: farm}
  - {kind: trade, buyer: shop, supplier: mill}
"""
ORDERS = 40


@pytest.fixture
async def network(settings: Settings, stack: StackInfo, kafka: KafkaAccess
                  ) -> AsyncIterator[LocalNetwork]:
    assert stack.database_url and stack.schema_registry_url
    ns_settings = Settings(run_dir=settings.run_dir, topic_namespace=f"mk{uuid.uuid4().hex[:8]}")
    serde = EventSerde(SchemaRegistry(stack.schema_registry_url), SchemaCatalog.load())
    async with LocalNetwork(ns_settings, kafka, stack.database_url, serde,
                            parse_topology(NETWORK)) as running:
        yield running
        assert running.failed() == []


async def test_a_killed_mailer_sends_every_order_once_per_message_id(
        network: LocalNetwork, stack: StackInfo, env_for_cli: dict[str, str],
        tmp_path: Path) -> None:
    assert stack.database_url
    ns = network.settings.topic_namespace
    mailbox = await Mailbox().start()
    dsn = await create_database(stack.database_url, naming.box_database(ns, "mailer"))
    env = {**env_for_cli, "BOXBUS_TOPIC_NAMESPACE": ns, "BOXBUS_MAIL_SIGNING_KEY": "k" * 32,
           "BOXBUS_SMTP_HOST": mailbox.host, "BOXBUS_SMTP_PORT": str(mailbox.port),
           "BOXBUS_MAIL_RATE": "25", "BOXBUS_LOG_LEVEL": "INFO"}
    logs: list[Path] = []

    def mailer() -> subprocess.Popen[str]:
        logs.append(tmp_path / f"mailer-{len(logs)}.log")
        with logs[-1].open("w") as log:
            return subprocess.Popen([*boxbus_cli(), "mailer", "run", "--database-url", dsn,
                                     "--replies", "none", "--http", "none"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=log, text=True)

    shop = network.boxes["shop"]
    orders = [await shop.place_order("farm" if n % 2 else "mill", LINES[:1])
              for n in range(ORDERS)]

    def ours() -> list[str]:
        return [r.message["Message-ID"] for r in mailbox.received
                if r.message["X-Boxbus-Order"] in orders]

    first = mailer()
    try:
        async def some() -> bool:
            if first.poll() is not None:
                raise AssertionError(f"the mailer ended: {logs[0].read_text()[-2000:]}")
            return len(ours()) >= 8
        await network.until(some, timeout=60, what="the first e-mails")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        before = len(ours())
        assert before < ORDERS, "the mailer finished before it could be killed"
        second = mailer()
        try:
            async def all_sent() -> bool:
                if second.poll() is not None:
                    raise AssertionError(f"the mailer ended: {logs[1].read_text()[-2000:]}")
                return len(set(ours())) >= ORDERS
            await network.until(all_sent, timeout=90, what="every order's e-mail")
            await asyncio.sleep(1)  # nothing more arrives
        finally:
            second.send_signal(signal.SIGTERM)
            # Waited for without blocking the loop: the SMTP server the mailer says goodbye
            # to runs in it.
            async def ended() -> bool:
                return second.poll() is not None
            try:
                await network.until(ended, timeout=30, what="the mailer to stop on SIGTERM")
            finally:
                if second.poll() is None:
                    second.kill()
    finally:
        if first.poll() is None:
            first.kill()
        await mailbox.stop()
    ids = ours()
    assert len(set(ids)) == ORDERS
    assert {r.message["X-Boxbus-Order"] for r in mailbox.received} >= set(orders)
    # A copy sent again after the kill has the Message-ID of the first: at most the e-mails
    # in flight when it died (one per SMTP connection) come twice.
    assert len(ids) - ORDERS <= 4
    assert "mailer stopped" in logs[1].read_text()
