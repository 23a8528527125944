"""Building what every command needs once, at the entry point."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bus.catalog import SchemaCatalog
from bus.errors import ConfigError
from bus.kafka import KafkaAccess
from bus.log import configure_logging
from bus.registry import SchemaRegistry
from bus.serde import EventSerde
from bus.settings import Settings


def settings_from_env(namespace: str | None = None, *, service: bool = False) -> Settings:
    """The settings of this command; ``namespace`` (a --namespace flag) overrides
    BOXBUS_TOPIC_NAMESPACE. A command that answers once (not a ``service`` running until
    stopped) keeps aiokafka's own connection errors to itself: its one error says it all."""
    settings = Settings()
    if namespace:
        settings = Settings(**{**settings.model_dump(), "topic_namespace": namespace})
    configure_logging(settings.log_format, settings.log_level)
    if not service and settings.log_level != "DEBUG":
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if service:
        from bus import tracing

        tracing.configure(settings)  # BOXBUS_TRACING: spans of the services only
    return settings


def require_kafka(kafka: KafkaAccess) -> None:
    """Before a service starts: one clear error now if the brokers do not answer, rather
    than aiokafka's connection errors logged by every client it opens."""
    import asyncio

    from bus.topics import list_topics

    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        asyncio.run(list_topics(kafka))
    finally:
        client_log.setLevel(level)


def principal_access(settings: Settings, user: str, what: str) -> KafkaAccess:
    """How a box or service connects: as itself. An identity given in the settings
    (BOXBUS_KAFKA_SASL_USERNAME) wins; else the password boxbus keeps for ``user`` (made by
    `topology apply`), on the brokers the operator reaches; on a cluster without logins
    (no SASL), the settings' anonymous access."""
    from bus.credentials import CredentialStore

    if settings.kafka_sasl_username:
        if settings.kafka_sasl_username != user:
            from boxbus.cli.output import console_err

            console_err.print(f"note: connecting as {settings.kafka_sasl_username} "
                              f"(BOXBUS_KAFKA_SASL_USERNAME), not as {what}'s own user {user}",
                              highlight=False)
        return KafkaAccess.from_settings(settings)
    operator = kafka_access(settings)
    found = CredentialStore.of(settings).access(user, operator)
    if found is not None:
        return found
    if operator.principal == "ANONYMOUS":
        return operator
    raise ConfigError(
        f"boxbus keeps no Kafka credentials for {what} (user {user}) in "
        f"{CredentialStore.of(settings).folder}",
        hint="declare it in the topology and run `boxbus topology apply FILE` (it makes the "
        "user), pass --namespace, or set BOXBUS_KAFKA_SASL_USERNAME and _PASSWORD")


def box_access(settings: Settings, box: str) -> KafkaAccess:
    from bus import naming

    return principal_access(settings, naming.box_principal(settings.topic_namespace, box),
                            f"box {box} of network {settings.topic_namespace!r}")


def service_access(settings: Settings, service: str) -> KafkaAccess:
    from bus import naming

    return principal_access(settings, naming.service_principal(settings.topic_namespace,
                                                               service),
                            f"the {service} of network {settings.topic_namespace!r}")


@dataclass(frozen=True)
class Endpoints:
    kafka: KafkaAccess
    registry_url: str


def kafka_access(settings: Settings) -> KafkaAccess:
    """Kafka alone (for commands that need no registry, like the relay): the brokers and the
    identity the settings give, else the running local stack's, as its operator."""
    from bus.devstack import LocalStack

    if settings.kafka_bootstrap_servers:
        return KafkaAccess.from_settings(settings)
    info = LocalStack(settings).status()
    if info is None or info.kafka_bootstrap is None:
        raise ConfigError("boxbus does not know where Kafka is",
                          hint="start the local stack (`boxbus dev up`) or set "
                          "BOXBUS_KAFKA_BOOTSTRAP_SERVERS")
    return info.kafka_access(settings)


def endpoints(settings: Settings) -> Endpoints:
    """Kafka and the registry: from the settings, else from the running local stack."""
    from bus.devstack import LocalStack

    info = LocalStack(settings).status()
    bootstrap = settings.kafka_bootstrap_servers or (info.kafka_bootstrap if info else None)
    registry = settings.schema_registry_url or (info.schema_registry_url if info else None)
    if bootstrap is None or registry is None:
        missing = [n for n, v in (("where Kafka is", bootstrap),
                                  ("where the schema registry is", registry)) if not v]
        raise ConfigError(
            f"boxbus does not know {' nor '.join(missing)}",
            hint="start the local stack (`boxbus dev up`) or set BOXBUS_KAFKA_BOOTSTRAP_SERVERS "
            "and BOXBUS_SCHEMA_REGISTRY_URL",
        )
    if settings.kafka_bootstrap_servers or info is None:
        return Endpoints(KafkaAccess.from_settings(settings, bootstrap), registry)
    return Endpoints(info.kafka_access(settings), registry)


def serde_for(settings: Settings, registry_url: str) -> EventSerde:
    return EventSerde(SchemaRegistry(registry_url), SchemaCatalog.load(settings.schemas_dir))
