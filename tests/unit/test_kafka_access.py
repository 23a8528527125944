"""One way to connect: every Kafka client of boxbus is made by bus.kafka.KafkaAccess, so a
box's credentials reach all of them and none is anonymous by accident."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import SecretStr

from bus.kafka import KafkaAccess
from bus.settings import SaslMechanism, SecurityProtocol, Settings
from tests.conftest import REPO

CLIENT = re.compile(r"\bAIOKafka(Producer|Consumer|AdminClient)\(|\b(AdminClient|Producer|"
                    r"Consumer)\(\{|\bfaust\.App\(|\bApplication\(")
# Peers of the router benchmark are other libraries' own ways of connecting; each builds its
# connection from the same BOXBUS_KAFKA_* variables (processors/peers/contract.py).
PEERS = {"processors/peers/faust_forward.py", "processors/peers/quix_forward.py",
         "processors/peers/quix_lean.py", "processors/peers/rdkafka_forward.py",
         "processors/peers/quix_app.py",
         "processors/peers/faust_aggregate.py"}


def test_no_kafka_client_is_made_outside_bus_kafka() -> None:
    offenders = []
    for folder in ("bus", "connectors", "processors", "boxbus"):
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = str(path.relative_to(REPO))
            if relative == "bus/kafka.py" or relative in PEERS:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if CLIENT.search(line) and not line.lstrip().startswith("#"):
                    offenders.append(f"{relative}:{number}: {line.strip()}")
    assert not offenders, "clients made by hand:\n" + "\n".join(offenders)


async def test_settings_become_one_connection_for_every_client_kind() -> None:
    settings = Settings(kafka_bootstrap_servers="k1:9092,k2:9092",
                        kafka_security_protocol=SecurityProtocol.SASL_PLAINTEXT,
                        kafka_sasl_mechanism=SaslMechanism.SCRAM_SHA_512,
                        kafka_sasl_username="box-north", kafka_sasl_password="s3cret")
    kafka = KafkaAccess.from_settings(settings)
    assert kafka.principal == "User:box-north"
    assert "s3cret" not in repr(kafka)
    options = kafka.client_options()
    assert options["bootstrap_servers"] == "k1:9092,k2:9092"
    assert (options["sasl_mechanism"], options["sasl_plain_password"]) == (
        "SCRAM-SHA-512", "s3cret")
    producer, consumer, admin = kafka.producer(), kafka.consumer(), kafka.admin()
    try:
        # The connection each kind of client opens.
        for made in (producer.client, consumer._client, admin._client):
            assert (made._sasl_plain_username, made._security_protocol) == (
                "box-north", "SASL_PLAINTEXT")
    finally:
        await producer.stop()
        await consumer.stop()
        await admin.close()
    assert kafka.librdkafka() == {
        "bootstrap.servers": "k1:9092,k2:9092", "security.protocol": "sasl_plaintext",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "box-north",
        "sasl.password": "s3cret"}
    child: dict[str, object] = {k.removeprefix("BOXBUS_").lower(): v
                                for k, v in kafka.env().items()}
    assert KafkaAccess.from_settings(Settings.model_validate(child)) == kafka


def test_another_principal_on_the_same_brokers() -> None:
    operator = KafkaAccess("127.0.0.1:9092")
    assert operator.principal == "ANONYMOUS"
    box = operator.as_principal("box-a", "pw")
    assert (box.bootstrap, box.security_protocol, box.sasl_mechanism, box.principal) == (
        "127.0.0.1:9092", SecurityProtocol.SASL_PLAINTEXT, SaslMechanism.SCRAM_SHA_512,
        "User:box-a")
    assert box.password == SecretStr("pw")
    tls = KafkaAccess("k:9093", SecurityProtocol.SSL, ssl_cafile=Path("/ca.pem"))
    assert tls.as_principal("b", "p").security_protocol is SecurityProtocol.SASL_SSL
    assert tls.librdkafka()["ssl.ca.location"] == "/ca.pem"
