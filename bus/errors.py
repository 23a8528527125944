"""The one error tree of boxbus.

Every error boxbus raises derives from :class:`BoxbusError`. Each class says, as data, whether
the operation may succeed when tried again (``retriable``) so callers branch on the attribute,
not on the class name::

    BoxbusError
    ├── ConfigError            settings or a file given by the user are wrong       (not retriable)
    ├── StackError             the embedded local stack could not do what was asked
    │   ├── PrerequisiteError  Java, Maven or a JVM artifact is missing            (not retriable)
    │   ├── PortInUseError     a port the stack needs is taken by another process  (not retriable)
    │   └── ComponentFailed    a component crashed or did not become ready in time (retriable)
    ├── RegistryUnavailable    the schema registry does not answer                 (retriable)
    ├── DatabaseUnavailable    PostgreSQL does not answer or refuses the login     (retriable)
    ├── KafkaAccessDenied      Kafka refused a login, or an operation no ACL allows (not retriable)
    ├── IncompatibleSchema     a schema change would break readers of old events   (not retriable)
    └── BadEvent               a record is not a valid event: it goes to the dead-letter topic
        ├── OversizeEvent          larger than the inline limit
        ├── WireFormatError        empty, too short, or not magic byte 0
        ├── UnknownSchemaId        the registry has no schema with that id
        ├── UndecodableEvent       truncated or corrupt Avro, or unreadable with the reader schema
        ├── InvalidEnvelope        a required header missing or wrong, or headers and body disagree
        ├── RegionMismatch         the event's region is not the region of its topic
        ├── InvalidEventData       decoded, but a field breaks the event model
        ├── UnknownEventType       a type this consumer has no schema for
        ├── BadSignature           a type that must be signed, unsigned or not verifiable
        └── UnexpectedRecordError  checking it failed in a way nobody foresaw (a bug)

Messages say what went wrong and what to do about it; where a log file explains more, the
error carries its path in ``log_path``. A BadEvent's ``code`` is what the dead-letter topic
records as the machine-readable reason.
"""

from __future__ import annotations

from pathlib import Path

# Every stack error ends with the way around the embedded stack.
EXTERNAL_HINT = (
    "to use services you already run instead, set BOXBUS_KAFKA_BOOTSTRAP_SERVERS, "
    "BOXBUS_DATABASE_URL, BOXBUS_SCHEMA_REGISTRY_URL and BOXBUS_SMTP_HOST; boxbus then starts "
    "none of them itself"
)


class BoxbusError(Exception):
    """Root of every error raised by boxbus."""

    retriable: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  what to do: {self.hint}"
        return self.message


class ConfigError(BoxbusError):
    """A setting, a flag or an input file is invalid."""


class StackError(BoxbusError):
    """The embedded local stack could not be started, inspected or stopped."""

    def __init__(
        self, message: str, *, hint: str | None = None, log_path: Path | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.log_path = log_path

    def __str__(self) -> str:
        text = super().__str__()
        if self.log_path is not None:
            text += f"\n  log: {self.log_path}"
        return f"{text}\n  or: {EXTERNAL_HINT}"


class PrerequisiteError(StackError):
    """A tool the stack needs (Java, Maven) or one of its artifacts is missing."""


class PortInUseError(StackError):
    """A port the stack wants to listen on is already taken."""


class ComponentFailed(StackError):
    """A component process exited or did not become ready in time."""

    retriable = True


class RegistryUnavailable(BoxbusError):
    """The schema registry is down or failing: back off and try again; never dead-letter."""

    retriable = True


class DatabaseUnavailable(BoxbusError):
    """A box's or the stack's PostgreSQL does not answer (or refuses the login)."""

    retriable = True


class KafkaAccessDenied(BoxbusError):
    """Kafka refused who connects (a wrong or missing login) or what it asked for (no ACL
    allows it): trying again changes nothing until the credentials or the ACLs do."""


class IncompatibleSchema(BoxbusError):
    """A schema would break consumers of events written with an earlier version."""


class BadEvent(BoxbusError):
    """A record that is not a valid event. Never retried, never dropped: the consumer sends it
    to the dead-letter topic with ``code`` and the message as the reason, and moves on."""

    code = "bad-event"
    dead_letter = True


class OversizeEvent(BadEvent):
    code = "oversize"


class WireFormatError(BadEvent):
    code = "wire-format"


class UnknownSchemaId(BadEvent):
    code = "unknown-schema-id"


class UndecodableEvent(BadEvent):
    code = "undecodable"


class InvalidEnvelope(BadEvent):
    code = "invalid-envelope"


class RegionMismatch(BadEvent):
    code = "region-mismatch"


class InvalidEventData(BadEvent):
    code = "invalid-data"


class UnknownEventType(BadEvent):
    code = "unknown-event-type"


class BadSignature(BadEvent):
    code = "bad-signature"


class UnexpectedRecordError(BadEvent):
    code = "unexpected-error"
