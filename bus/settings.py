"""Settings: one frozen model, read from ``BOXBUS_*`` environment variables (or a ``.env`` file).

Build it once at the entry point (``Settings()``) and pass it down; nothing in boxbus reads the
environment on its own. A service whose address is given (Kafka bootstrap servers, database URL,
schema registry URL, SMTP host, object store URL) is *external*: the embedded local stack does
not start it.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class LogFormat(StrEnum):
    CONSOLE = "console"
    JSON = "json"


def _state_home() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "boxbus"


def _repo_schemas() -> Path:
    from bus.resources import schemas_dir

    return schemas_dir()


def _cache_home() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "boxbus"


class Settings(BaseSettings):
    """Everything boxbus needs to know about its surroundings."""

    model_config = SettingsConfigDict(
        env_prefix="BOXBUS_", env_file=".env", extra="ignore", frozen=True
    )

    # Kafka: leave bootstrap servers unset to use the embedded broker of `boxbus dev up`.
    kafka_bootstrap_servers: str | None = None
    kafka_security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None

    # PostgreSQL, e.g. postgresql://user:pass@host:5432/db
    database_url: SecretStr | None = None
    # Confluent-compatible schema registry, e.g. http://host:8081 (Apicurio: .../apis/ccompat/v7)
    schema_registry_url: str | None = None

    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    # How the mailer talks to it: plain, STARTTLS after connecting, or TLS from the start.
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # CA certificates to verify the SMTP server's TLS certificate with (the system's if unset).
    smtp_ca_file: Path | None = None
    # The mailer (connectors.mail): its sender address; the domain of its Message-IDs and
    # reply addresses (replies to it must reach `boxbus mailer run`'s SMTP endpoint); the
    # key that signs reply addresses and invitation links; e-mails a second it sends to
    # one SMTP server; how long a partner's mailbox may stay unreachable before its mail is
    # given up; the address its links point to (its HTTP endpoint, or a proxy in front).
    mail_from: str = "orders@boxbus.localhost"
    mail_domain: str = "boxbus.localhost"
    mail_signing_key: SecretStr | None = None
    mail_rate: float = Field(default=100.0, gt=0)
    mail_retry_hours: float = Field(default=24.0, gt=0)
    mail_public_url: str = "http://127.0.0.1:8025"

    # An S3-compatible object store for business documents (bus.objectstore), e.g.
    # http://127.0.0.1:PORT (the local stack's S3Proxy) or any S3 endpoint. Without keys the
    # client takes AWS's usual ones (AWS_ACCESS_KEY_ID, ~/.aws, an instance role).
    object_store_url: str | None = None
    object_store_region: str = "us-east-1"
    object_store_access_key: str | None = None
    object_store_secret_key: SecretStr | None = None
    object_store_bucket: str = "boxbus"

    # Every topic boxbus names starts with this, so several networks can share one cluster.
    topic_namespace: str = "boxbus"
    # The Avro schemas (the contract); the repository's schemas/ folder by default.
    schemas_dir: Path = Field(default_factory=lambda: _repo_schemas())

    # Distributed tracing (bus.tracing): none, or otlp (to OTEL_EXPORTER_OTLP_ENDPOINT; needs
    # the extra boxbus[tracing]); service_name names this process's spans.
    tracing: Literal["none", "otlp"] = "none"
    service_name: str = "boxbus"

    log_format: LogFormat = LogFormat.CONSOLE
    log_level: str = "INFO"

    # The embedded stack: where it keeps run state, where JVM artifacts are cached, first port.
    run_dir: Path = Field(default_factory=lambda: _state_home() / "dev")
    cache_dir: Path = Field(default_factory=_cache_home)
    dev_base_port: int = Field(default=19090, ge=1024, le=65000)
    # How long a login lasts on the embedded Kafka (its connections.max.reauth.ms): a client
    # that does not log in again within it is disconnected, so a rotated password or a removed
    # user ends open sessions too. aiokafka cannot re-authenticate a connection (KIP-368); it
    # reconnects and logs in anew. 0: a session lasts as long as its connection.
    dev_kafka_session_seconds: int = Field(default=300, ge=0, le=86_400)
    # A JDK for the schema registry (Apicurio 3.3 needs Java 21+); found automatically if unset.
    registry_java_home: Path | None = None
    # The PostgreSQL installation the embedded stack runs (bin/, lib/, share/); the pgserver
    # wheel's if unset.
    postgres_install_dir: Path | None = None

    @field_validator("topic_namespace")
    @classmethod
    def _namespace_is_a_topic_prefix(cls, value: str) -> str:
        # No '.': it separates a name's parts, and ACL prefixes rely on it (a namespace
        # "ns.box.a" would fall under box a's prefix "ns.box.a." of namespace "ns").
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
        if not value or not set(value) <= allowed:
            raise ValueError(
                "topic_namespace may hold only letters, digits, '_' and '-' "
                f"(no '.': it separates the parts of topic names); got {value!r}"
            )
        return value

    @field_validator("object_store_url")
    @classmethod
    def _store_url_is_http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")) or "?" in value:
            raise ValueError(
                "object_store_url must be the store's http:// or https:// endpoint, e.g. "
                f"http://127.0.0.1:9000, without the bucket or a query; got {value!r}"
            )
        return value.rstrip("/")

    @field_validator("object_store_bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        # S3's rules for bucket names (the strict ones every S3 endpoint accepts).
        allowed = set("abcdefghijklmnopqrstuvwxyz0123456789.-")
        if not (3 <= len(value) <= 63 and set(value) <= allowed
                and value[0].isalnum() and value[-1].isalnum() and ".." not in value):
            raise ValueError(
                "object_store_bucket must be 3 to 63 lowercase letters, digits, '.' or '-', "
                f"starting and ending with a letter or digit; got {value!r}"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(
                f"log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL; got {value!r}"
            )
        return level

    @property
    def external_kafka(self) -> bool:
        return self.kafka_bootstrap_servers is not None

    @property
    def external_database(self) -> bool:
        return self.database_url is not None

    @property
    def external_registry(self) -> bool:
        return self.schema_registry_url is not None

    @property
    def external_smtp(self) -> bool:
        return self.smtp_host is not None

    @property
    def external_object_store(self) -> bool:
        return self.object_store_url is not None
