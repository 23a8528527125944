from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from bus import ComponentFailed, ConfigError, PortInUseError, SecurityProtocol, Settings
from bus.kafka import KafkaAccess


@pytest.fixture(autouse=True)
def no_boxbus_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests define the environment they read; the caller's BOXBUS_* do not leak in."""
    for name in [n for n in os.environ if n.startswith("BOXBUS_")]:
        monkeypatch.delenv(name)


def test_settings_come_from_boxbus_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXBUS_KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("BOXBUS_DATABASE_URL", "postgresql://u:pw-of-db@db/boxes")
    monkeypatch.setenv("BOXBUS_OBJECT_STORE_SECRET_KEY", "pw-of-store")
    monkeypatch.setenv("BOXBUS_TOPIC_NAMESPACE", "acme")
    settings = Settings()
    assert settings.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert settings.external_kafka and settings.external_database
    assert not settings.external_registry and not settings.external_smtp
    assert not settings.external_object_store
    assert settings.topic_namespace == "acme"
    # Secrets are not printed (a field's name may say "secret"; its value is hidden).
    assert "pw-of-db" not in repr(settings) and "pw-of-store" not in repr(settings)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.topic_namespace = "other"  # type: ignore[misc]


def test_a_bad_namespace_is_refused_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="topic_namespace may hold only letters"):
        Settings(topic_namespace="acme orders!")
    # A dot would let a namespace fall under another's ACL prefixes (ns.box.a. covers it).
    with pytest.raises(ValidationError, match=r"no '\.'"):
        Settings(topic_namespace="ns.box.a")


def test_a_bad_log_level_is_refused() -> None:
    with pytest.raises(ValidationError, match="log_level must be"):
        Settings(log_level="loud")


def test_sasl_settings_become_client_options(tmp_path: Path) -> None:
    settings = Settings(
        kafka_bootstrap_servers="k:9093",
        kafka_security_protocol=SecurityProtocol.SASL_PLAINTEXT,
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="box-north",
        kafka_sasl_password="pw",
    )
    assert KafkaAccess.from_settings(settings).client_options() == {
        "bootstrap_servers": "k:9093",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "box-north",
        "sasl_plain_password": "pw",
    }


def test_errors_say_what_to_do_and_where_the_log_is() -> None:
    error = ComponentFailed("kafka died", hint="read the log", log_path=Path("/x/kafka.log"))
    assert str(error).startswith("kafka died\n  what to do: read the log\n  log: /x/kafka.log\n")
    assert "BOXBUS_KAFKA_BOOTSTRAP_SERVERS" in str(error)
    assert error.retriable
    assert not PortInUseError("taken").retriable
    assert not ConfigError("bad").retriable
