"""boxbus: the event bus of a network of business boxes, on Apache Kafka.

The names below are the public API of the library; every other module is internal and may
change. The event models are in :mod:`bus.events`, the embedded local stack for development
and tests in :mod:`bus.devstack`.
"""

from bus.catalog import EventSchema, SchemaCatalog
from bus.compat import Problem, check
from bus.consumer import Delivery, EventConsumer
from bus.db import create_database
from bus.deadletter import DeadLetter
from bus.envelope import Envelope
from bus.errors import (
    BadEvent,
    BoxbusError,
    ComponentFailed,
    ConfigError,
    DatabaseUnavailable,
    IncompatibleSchema,
    InvalidEnvelope,
    InvalidEventData,
    KafkaAccessDenied,
    OversizeEvent,
    PortInUseError,
    PrerequisiteError,
    RegionMismatch,
    RegistryUnavailable,
    StackError,
    UndecodableEvent,
    UnknownEventType,
    UnknownSchemaId,
    WireFormatError,
)
from bus.examples import example
from bus.kafka import KafkaAccess
from bus.log import configure_logging, get_logger
from bus.naming import dlq_topic, region_topic, subject
from bus.pipeline import OutagePolicy
from bus.producer import EventProducer
from bus.registry import Compatibility, SchemaRegistry
from bus.serde import EncodedEvent, EventSerde
from bus.settings import LogFormat, SaslMechanism, SecurityProtocol, Settings
from bus.topics import TopicSpec, ensure_topics

__version__ = "0.1.0"

__all__ = [
    "BadEvent",
    "BoxbusError",
    "Compatibility",
    "ComponentFailed",
    "ConfigError",
    "DatabaseUnavailable",
    "DeadLetter",
    "Delivery",
    "EncodedEvent",
    "Envelope",
    "EventConsumer",
    "EventProducer",
    "EventSchema",
    "EventSerde",
    "IncompatibleSchema",
    "InvalidEnvelope",
    "InvalidEventData",
    "KafkaAccess",
    "KafkaAccessDenied",
    "LogFormat",
    "OutagePolicy",
    "OversizeEvent",
    "PortInUseError",
    "PrerequisiteError",
    "Problem",
    "RegionMismatch",
    "RegistryUnavailable",
    "SaslMechanism",
    "SchemaCatalog",
    "SchemaRegistry",
    "SecurityProtocol",
    "Settings",
    "StackError",
    "TopicSpec",
    "UndecodableEvent",
    "UnknownEventType",
    "UnknownSchemaId",
    "WireFormatError",
    "__version__",
    "check",
    "configure_logging",
    "create_database",
    "dlq_topic",
    "ensure_topics",
    "example",
    "get_logger",
    "region_topic",
    "subject",
]
