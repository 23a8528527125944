"""One way to connect to Kafka: :class:`KafkaAccess` says where the brokers are and who
connects, and makes every client boxbus uses from that.

Every producer, consumer and admin client of boxbus (relay, inbox, router, dead-letter writer,
consumers, topology, benchmarks, the CLI) comes from here, so a box's credentials reach each
one of them and no client is ever made anonymously by accident. A process that serves several
identities (the local network runs every box in one process) holds one ``KafkaAccess`` per
identity: :meth:`KafkaAccess.as_principal`.

The same value turns into librdkafka's configuration (confluent-kafka, for peers and for
checking that a box's credentials work with a client boxbus did not write) and into
``BOXBUS_KAFKA_*`` variables for a child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, SaslAuthenticationFailed
from pydantic import SecretStr

from bus.errors import KafkaAccessDenied
from bus.settings import SaslMechanism, SecurityProtocol, Settings

_TLS = (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)
_SASL = (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)


@dataclass(frozen=True)
class KafkaAccess:
    """Where the brokers are and who connects: a frozen value, passed down, never global."""

    bootstrap: str
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism | None = None
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings, bootstrap: str | None = None) -> KafkaAccess:
        """The identity the settings give (``BOXBUS_KAFKA_*``); ``bootstrap`` when the
        brokers were found elsewhere (the local stack)."""
        address = bootstrap or settings.kafka_bootstrap_servers
        if not address:
            from bus.errors import ConfigError

            raise ConfigError("boxbus does not know where Kafka is",
                              hint="start the local stack (`boxbus dev up`) or set "
                              "BOXBUS_KAFKA_BOOTSTRAP_SERVERS")
        return cls(bootstrap=address, security_protocol=settings.kafka_security_protocol,
                   sasl_mechanism=settings.kafka_sasl_mechanism,
                   username=settings.kafka_sasl_username,
                   password=settings.kafka_sasl_password,
                   ssl_cafile=settings.kafka_ssl_cafile)

    def as_principal(self, username: str, password: str | SecretStr,
                     mechanism: SaslMechanism = SaslMechanism.SCRAM_SHA_512) -> KafkaAccess:
        """The same brokers, another identity (SASL on the protocol's TLS choice)."""
        protocol = (SecurityProtocol.SASL_SSL if self.security_protocol in _TLS
                    else SecurityProtocol.SASL_PLAINTEXT)
        secret = password if isinstance(password, SecretStr) else SecretStr(password)
        return replace(self, security_protocol=protocol, sasl_mechanism=mechanism,
                       username=username, password=secret)

    @property
    def principal(self) -> str:
        """Who connects, for messages: ``User:name``, or ``ANONYMOUS``."""
        if self.security_protocol in _SASL and self.username:
            return f"User:{self.username}"
        return "ANONYMOUS"

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments every aiokafka client takes: the brokers and the security."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap,
                                   "security_protocol": self.security_protocol.value}
        if self.security_protocol in _SASL:
            options["sasl_mechanism"] = (self.sasl_mechanism or SaslMechanism.PLAIN).value
            options["sasl_plain_username"] = self.username
            options["sasl_plain_password"] = (self.password.get_secret_value()
                                              if self.password is not None else None)
        if self.security_protocol in _TLS:
            options["ssl_context"] = self._ssl_context()
        return options

    def _ssl_context(self) -> ssl.SSLContext:
        from aiokafka.helpers import create_ssl_context

        context: ssl.SSLContext = create_ssl_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
        return context

    def producer(self, **options: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(**self.client_options(), **options)

    def consumer(self, *topics: str, **options: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(*topics, **self.client_options(), **options)

    def admin(self, **options: Any) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.client_options(), **options)

    def librdkafka_admin(self, **config: str) -> Any:
        """librdkafka's admin client (confluent-kafka's ``AdminClient``), for what aiokafka's
        has not: users and ACLs (see :mod:`bus.security`)."""
        from confluent_kafka.admin import AdminClient

        return AdminClient({**self.librdkafka(), **config})

    def librdkafka(self) -> dict[str, str]:
        """The same connection for librdkafka (confluent-kafka's ``Producer({...})``)."""
        config = {"bootstrap.servers": self.bootstrap,
                  "security.protocol": self.security_protocol.value.lower()}
        if self.security_protocol in _SASL:
            config["sasl.mechanism"] = (self.sasl_mechanism or SaslMechanism.PLAIN).value
            config["sasl.username"] = self.username or ""
            config["sasl.password"] = (self.password.get_secret_value()
                                       if self.password is not None else "")
        if self.security_protocol in _TLS and self.ssl_cafile:
            config["ssl.ca.location"] = str(self.ssl_cafile)
        return config

    def env(self) -> dict[str, str]:
        """``BOXBUS_KAFKA_*`` variables under which a child process connects the same way."""
        env = {"BOXBUS_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
               "BOXBUS_KAFKA_SECURITY_PROTOCOL": self.security_protocol.value}
        if self.sasl_mechanism is not None:
            env["BOXBUS_KAFKA_SASL_MECHANISM"] = self.sasl_mechanism.value
        if self.username is not None:
            env["BOXBUS_KAFKA_SASL_USERNAME"] = self.username
        if self.password is not None:
            env["BOXBUS_KAFKA_SASL_PASSWORD"] = self.password.get_secret_value()
        if self.ssl_cafile is not None:
            env["BOXBUS_KAFKA_SSL_CAFILE"] = str(self.ssl_cafile)
        return env


async def start_or_close(client: Any, kafka: KafkaAccess | None = None) -> None:
    """``client.start()``; if it fails (brokers unreachable, login refused), ``stop()`` it
    (producers, consumers) or ``close()`` it (the admin client) before the error goes up:
    a half-started aiokafka client otherwise warns at exit that it was never closed.

    aiokafka reports a refused login as "Unable to bootstrap", the same words as a broker that
    is down. Given the ``kafka`` it was made from, a failed start is looked at once more, and a
    refused login becomes :class:`KafkaAccessDenied` saying who was refused and why."""
    try:
        await client.start()
    except BaseException as exc:
        close = client.stop if hasattr(client, "stop") else client.close
        with contextlib.suppress(Exception):
            await close()
        if kafka is not None and isinstance(exc, KafkaConnectionError):
            refused = await login_refusal(kafka)
            if refused is not None:
                raise refused from exc
        raise


async def login_refusal(kafka: KafkaAccess) -> KafkaAccessDenied | None:
    """Why the brokers of ``kafka`` refuse this identity, if they do; None when they cannot
    be reached at all (then the error is the connection's, not the login's)."""
    options = kafka.client_options()
    del options["bootstrap_servers"]
    for address in kafka.bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            conn = await create_conn(host, int(port), request_timeout_ms=5000, **options)
        except SaslAuthenticationFailed as exc:
            return KafkaAccessDenied(
                f"Kafka at {address} refused the login of {kafka.principal} "
                f"({kafka.sasl_mechanism.value if kafka.sasl_mechanism else 'PLAIN'}): "
                f"{exc.args[0] if exc.args else exc}",
                hint="check the user name and password (BOXBUS_KAFKA_SASL_USERNAME and "
                "_PASSWORD; a box's: `boxbus box credentials --box ID`); a rotated password "
                "ends the old one")
        except (KafkaError, OSError, TimeoutError, ValueError):
            continue
        conn.close()
        if kafka.principal == "ANONYMOUS":
            # The port answers, yet the client could not even read the cluster's metadata:
            # a listener that expects a login closes the connection of one that sends none.
            return KafkaAccessDenied(
                f"Kafka at {address} accepts connections but closed them for an anonymous "
                "client: this cluster requires a login",
                hint="set BOXBUS_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT (or SASL_SSL), "
                "BOXBUS_KAFKA_SASL_MECHANISM=SCRAM-SHA-512 and the user and password; on the "
                "local stack boxbus finds the operator's login by itself")
    return None


class LoginWatch:
    """Notices, in a long-running consumer, that the brokers no longer accept its login.

    aiokafka logs in once per connection and, when a connection is lost, retries a refused
    login in the background forever: a consumer whose password was rotated or whose user was
    removed (its session cut by the brokers' ``connections.max.reauth.ms``) receives no more
    records, and its calls to the brokers (a fetch, a commit, a dead letter sent) wait or retry
    without end. So a watchdog runs beside it: after ``every`` seconds without records it asks
    the brokers once whether they still take this identity. When they do not, a call under
    :meth:`guard` is interrupted and ends in :class:`KafkaAccessDenied` (who was refused and
    what to do); if none is under way, the next :meth:`guard` raises it.

        watch = LoginWatch(kafka)
        async with watch.running():
            while ...:
                async with watch.guard():
                    records = await consumer.getmany(...)  # + commit, dead letters, ...
                if records:
                    watch.records_arrived()
    """

    def __init__(self, kafka: KafkaAccess, every: float = 30.0) -> None:
        self.kafka = kafka
        self.every = every
        self.refused: KafkaAccessDenied | None = None
        self._since = time.monotonic()
        self._guarded: asyncio.Task[Any] | None = None
        self._interrupted = False

    def records_arrived(self) -> None:
        self._since = time.monotonic()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LoginWatch]:
        """The watchdog, for as long as the block runs."""
        watcher = asyncio.create_task(self._watch())
        try:
            yield self
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Calls to the brokers that the watchdog may interrupt when the login is refused."""
        if self.refused is not None:
            raise self.refused
        self._guarded = asyncio.current_task()
        try:
            yield
        except asyncio.CancelledError:
            if self._interrupted and self.refused is not None:
                self._interrupted = False
                raise self.refused from None
            raise
        finally:
            self._guarded = None

    async def check(self) -> None:
        """Ask the brokers now, if nothing arrived for ``every`` seconds."""
        if self.kafka.principal == "ANONYMOUS" or time.monotonic() - self._since < self.every:
            return  # (an anonymous client has no login to lose)
        self._since = time.monotonic()  # one probe per quiet period, whatever it finds
        refused = await login_refusal(self.kafka)
        if refused is not None:
            self.refused = refused
            raise refused

    async def _watch(self) -> None:
        while self.refused is None:
            await asyncio.sleep(max(self.every / 4, 0.2))
            with contextlib.suppress(KafkaAccessDenied):
                await self.check()
        if self._guarded is not None and not self._guarded.done():
            self._interrupted = True
            self._guarded.cancel()
