"""The embedded stack is real: a Kafka broker, PostgreSQL, the registry's Confluent API, an
SMTP server and an S3 object store that each answer real client requests (the store's own
tests are in test_objectstore.py)."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import hashlib
import ipaddress
import json
import os
import smtplib
import subprocess
import uuid
from email.message import EmailMessage
from pathlib import Path

import asyncpg
import httpx
import pytest

from bus import Settings, TopicSpec, create_database, ensure_topics
from bus.devstack import LocalStack, StackInfo, read_maildir
from bus.kafka import KafkaAccess
from tests.conftest import boxbus_cli

pytestmark = pytest.mark.stack


async def test_every_component_runs_and_reports_where_it_answers(
    settings: Settings, stack: StackInfo
) -> None:
    assert set(stack.components) == {"kafka", "postgres", "registry", "smtp", "objectstore"}
    assert set(stack.components.values()) <= {"running", "external"}
    assert stack.kafka_bootstrap and stack.database_url and stack.schema_registry_url
    assert stack.object_store_url and stack.object_store_bucket
    if not settings.external_kafka:
        assert stack.kafka_bootstrap.startswith("127.0.0.1:")
        assert [n.alive for n in stack.nodes] == [True]
    if not settings.external_registry:
        assert stack.schema_registry_url.endswith("/apis/ccompat/v7")
    embedded = [c for c, state in stack.components.items() if state == "running"]
    assert set(stack.boot_seconds) >= {*embedded, "total"}


@pytest.mark.embedded
async def test_status_and_second_up_from_another_process_reuse_what_runs(
    stack: StackInfo, env_for_cli: dict[str, str]
) -> None:
    status = subprocess.run(
        [*boxbus_cli(), "dev", "status", "--json"], env=env_for_cli,
        capture_output=True, text=True, check=True,
    )
    seen = json.loads(status.stdout)
    assert set(seen) >= {"kafka_bootstrap", "database_url", "schema_registry_url", "smtp", "nodes"}
    assert seen["kafka_bootstrap"] == stack.kafka_bootstrap
    assert seen["smtp"]["maildir"] == str(stack.smtp.maildir)
    assert seen["object_store_url"] == stack.object_store_url
    assert seen["object_store_credentials"] == str(stack.object_store_credentials)

    again = subprocess.run(
        [*boxbus_cli(), "dev", "up", "--json"], env=env_for_cli,
        capture_output=True, text=True, check=True,
    )
    reused = json.loads(again.stdout)
    assert reused["processes"] == stack.processes
    assert sorted(reused["processes"]) == [
        "kafka-1", "objectstore", "postgres", "registry", "smtp"]


async def test_topic_with_partitions_and_consumer_group_round_trip(
    settings: Settings, kafka: KafkaAccess
) -> None:
    topic = f"it.roundtrip.{uuid.uuid4().hex[:8]}"
    created = await ensure_topics(kafka, [TopicSpec(topic, partitions=4)])
    assert created == [topic]
    assert await ensure_topics(kafka, [TopicSpec(topic, partitions=4)]) == []

    admin = kafka.admin()
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        assert len(described[0]["partitions"]) == 4
    finally:
        await admin.close()

    producer = kafka.producer(acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i in range(40):
            await producer.send(topic, f"{i}".encode(), key=f"order-{i % 8}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    group = f"it-{uuid.uuid4().hex[:8]}"
    seen: dict[bytes, list[int]] = {}
    consumer = kafka.consumer(topic, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while sum(len(v) for v in seen.values()) < 40:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        assert r.key is not None and r.value is not None
                        seen.setdefault(r.key, []).append(int(r.value))
                await consumer.commit()
        partitions = consumer.assignment()
    finally:
        await consumer.stop()
    assert len(partitions) == 4
    # Every key keeps the order it was produced in.
    for key, values in seen.items():
        assert values == sorted(values), key
    assert sorted(v for vs in seen.values() for v in vs) == list(range(40))

    # The group committed: a new member of the same group reads nothing again.
    late = kafka.consumer(topic, group_id=group,
                            auto_offset_reset="earliest", enable_auto_commit=False)
    await late.start()
    try:
        again = await late.getmany(timeout_ms=2000)
    finally:
        await late.stop()
    assert sum(len(v) for v in again.values()) == 0


async def test_registry_answers_the_confluent_api(stack: StackInfo) -> None:
    url = stack.schema_registry_url
    subject = f"it.registry.{uuid.uuid4().hex[:8]}-value"
    schema = {"type": "record", "name": "Ping", "namespace": "it",
              "fields": [{"name": "id", "type": "string"}]}
    async with httpx.AsyncClient(base_url=str(url), timeout=10) as client:
        put = await client.put("/config", json={"compatibility": "BACKWARD_TRANSITIVE"})
        assert put.status_code == 200, put.text
        reg = await client.post(
            f"/subjects/{subject}/versions",
            json={"schemaType": "AVRO", "schema": json.dumps(schema)},
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        )
        assert reg.status_code == 200, reg.text
        schema_id = reg.json()["id"]
        by_id = await client.get(f"/schemas/ids/{schema_id}")
        assert json.loads(by_id.json()["schema"])["name"] == "Ping"
        subjects = (await client.get("/subjects")).json()
        assert subject in subjects
        unknown = await client.get("/schemas/ids/987654321")
        assert unknown.status_code == 404


@pytest.mark.embedded
async def test_mail_sent_to_the_smtp_server_arrives_in_the_maildir(stack: StackInfo) -> None:
    assert stack.smtp.host and stack.smtp.port and stack.smtp.maildir
    message = EmailMessage()
    token = uuid.uuid4().hex
    message["From"] = "orders@shop-north.example"
    message["To"] = "sales@partner-without-box.example"
    message["Subject"] = f"Purchase order {token}"
    message.set_content("5 lines, total 123.45 EUR")
    with smtplib.SMTP(stack.smtp.host, stack.smtp.port, timeout=10) as client:
        client.send_message(message)
    arrived = [m for m in read_maildir(stack.smtp.maildir) if token in m["Subject"]]
    assert len(arrived) == 1
    assert arrived[0]["X-Boxbus-Envelope-To"] == "sales@partner-without-box.example"
    assert "123.45 EUR" in arrived[0].get_payload()


async def test_one_database_per_box(stack: StackInfo) -> None:
    assert stack.database_url
    name = f"box_{uuid.uuid4().hex[:8]}"
    url = await create_database(stack.database_url, name)
    assert url.endswith(f"/{name}")
    assert await create_database(stack.database_url, name) == url  # idempotent
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE t (id int primary key)")
        await conn.execute("INSERT INTO t VALUES (1)")
        assert await conn.fetchval("SELECT current_database()") == name
    finally:
        await conn.close()


async def test_external_services_are_used_not_started(settings: Settings, stack: StackInfo) -> None:
    """With every address given, `up` starts nothing and reports what it was given."""
    external = Settings(
        run_dir=settings.run_dir.parent / "external",
        kafka_bootstrap_servers=stack.kafka_bootstrap,
        database_url=stack.database_url,
        schema_registry_url=stack.schema_registry_url,
        smtp_host=stack.smtp.host, smtp_port=stack.smtp.port,
        object_store_url=stack.object_store_url,
    )
    local = LocalStack(external)
    try:
        info = await local.up()
        assert info.components == {
            "kafka": "external", "postgres": "external", "registry": "external", "smtp": "external",
            "objectstore": "external",
        }
        assert info.object_store_url == stack.object_store_url
        assert info.object_store_credentials is None
        assert info.kafka_bootstrap == stack.kafka_bootstrap
        assert info.nodes == []
    finally:
        assert local.down() == []


@pytest.mark.embedded
async def test_demo_plays_the_network_story(
    stack: StackInfo, env_for_cli: dict[str, str]
) -> None:
    result = subprocess.run(
        [*boxbus_cli(), "demo", "--json"], env=env_for_cli,
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["stack"]["processes"] == stack.processes  # the running stack was reused
    assert [s["ok"] for s in report["steps"]] == [True] * 21, report["steps"]
    views = report["views"]
    order_id = report["facts"]["order_id"]
    (sales,) = [o for o in views["fresh-farm"]["orders"] if o["order_id"] == order_id]
    assert (sales["role"], sales["status"], sales["lines"]) == ("sales", "received", 3)
    assert [c["origin_box"] for c in views["north-branch"]["comments"]] == [
        "north-branch", "fresh-farm", "river-fish"]  # the last one answered by e-mail
    steps = report["steps"]
    assert f"fresh-farm shows sales order {order_id}: 3 lines" in steps[0]["detail"]
    assert "north-branch shows in transit: apples-kg 120 kg" in steps[2]["detail"]
    # Each branch's report counts the store orders it took that day.
    reports = {r["branch_box"]: r for r in views["hq"]["branch_reports"]}
    assert {b: r["orders_count"] for b, r in reports.items()} == {
        "north-branch": 2, "south-branch": 3, "east-branch": 4}
    assert all(r["revenue_minor"] > 0 for r in reports.values())
    assert "hq shows: " in steps[19]["detail"] and "north-branch 2 orders" in steps[19]["detail"]
    # The whole chain between south-branch and fresh-farm (two regions): the order in the
    # supplier's process and codes, its stock, a 2 MB waybill by claim check, the invoice and
    # payment agreeing, every event accepted.
    chain = report["facts"]["chain"]
    assert chain["process"] == "wholesale/review"
    assert "SB-PEAR-6 10 crate -> pears-kg 60 kg" in chain["lines"]
    assert chain["stock"]["SB-APPLE"].endswith(" kg")  # in the buyer's own codes
    waybill = Path(chain["waybill_file"]).read_bytes()
    assert waybill.startswith(b"%PDF") and len(waybill) > 2_000_000
    assert hashlib.sha256(waybill).hexdigest() == chain["waybill_sha256"]
    assert chain["open_minor"] > 0
    farm = {b["counterparty"]: b for b in views["fresh-farm"]["balances"]}
    branch = {b["counterparty"]: b for b in views["south-branch"]["balances"]}
    assert farm["south-branch"]["open_minor"] == branch["fresh-farm"]["open_minor"]
    assert all(c["accepted"] > 0 and c["rejected"] == 0 for c in chain["receipts"].values())
    # Inside the head office: a booking entered once in sales ends as an invoice in
    # sun-dairy's box, and sales' question to billing shows that balance.
    company = report["facts"]["company"]
    total = 65 * 12 + 65 * 11 * 3
    total += round(total * 0.21)
    assert company["invoice_total_minor"] == company["balance_minor"] == total
    assert any(i["order_id"] == company["booking"] and i["counterparty"] == "hq-billing"
               for i in views["sun-dairy"]["invoices"])
    # The partner without a box: its order by e-mail (PDF, UBL), its answer, its onboarding
    # with the backlog, and a campaign's letters in the print spool.
    mail = report["facts"]["mail"]
    assert Path(mail["pdf"]).read_bytes().startswith(b"%PDF")
    assert b"urn:fdc:peppol.eu:poacc:bis:ordering:3" in Path(mail["ubl"]).read_bytes()
    sent = email.message_from_bytes(Path(mail["eml"]).read_bytes(), policy=email.policy.default)
    assert isinstance(sent, EmailMessage)
    assert "/invite/" in str(sent.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    fish = [o for o in views["river-fish"]["orders"] if o["role"] == "sales"]
    assert len(fish) == 1 and fish[0]["counterparty"] == "north-branch"
    assert len(list(Path(report["facts"]["spool"]).glob("*.pdf"))) == 6
    # Central analytics sees the purchase orders and the store orders of every region.
    seen = {n["region"]: n["orders"] for n in views["hq-analytics"]["network_orders"]}
    assert seen == {"north": 2 + 2, "south": 3 + 1, "east": 4}  # + the chain's order
    reasons = report["facts"]["bad_input"]
    assert any("claims source box 'fresh-farm'" in r for r in reasons)
    assert any("ce_source" in r for r in reasons)
    # The demo ends with the head office's analytics: the aggregates of the story's orders,
    # and the dashboard, left running as a service of the stack, answering with them.
    analytics = report["analytics"]
    assert analytics["orders"] == 2 + 3 + 4 and analytics["reports_agree"]
    assert {r["branch"]: r["orders"] for r in analytics["branches"]} == {
        "north-branch": 2, "south-branch": 3, "east-branch": 4}
    assert analytics["funnel"]["placed"] == 2 + 1 and analytics["funnel"]["received"] == 1
    async with httpx.AsyncClient(timeout=10) as client:
        page = await client.get(analytics["url"])
        sales = (await client.get(analytics["url"] + "api/sales", params={"by": "branch"})
                 ).json()
    assert page.status_code == 200 and "Central analytics" in page.text
    assert sales["rows"] == analytics["branches"]
    local = LocalStack(Settings(run_dir=Path(env_for_cli["BOXBUS_RUN_DIR"])))
    names = {r.name for r in local.services()}
    assert {f"{report['namespace']}-aggregator", f"{report['namespace']}-dashboard"} <= names


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """/proc/net/tcp{,6} print each 32-bit word of an address in host (little-endian) order."""
    raw = b"".join(bytes.fromhex(hex_address[i:i + 8])[::-1]
                   for i in range(0, len(hex_address), 8))
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw)
    v6 = ipaddress.IPv6Address(raw)
    return v6.ipv4_mapped or v6


def _listening_addresses(pid: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The local addresses of the TCP sockets process ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append(_address(fields[1].split(":")[0]))
    return found


@pytest.mark.embedded
async def test_every_process_listens_on_loopback_only(stack: StackInfo) -> None:
    assert stack.processes
    for name, pid in stack.processes.items():
        addresses = _listening_addresses(pid)
        assert addresses, f"{name} listens on nothing"
        assert all(a.is_loopback for a in addresses), (name, addresses)
