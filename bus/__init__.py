"""boxbus: the event bus of a network of business boxes, on Apache Kafka.

The names below are the public API of the library; every other module is internal and may
change. The embedded local stack for development and tests is in :mod:`bus.devstack`.
"""

from bus.db import create_database
from bus.errors import (
    BoxbusError,
    ComponentFailed,
    ConfigError,
    PortInUseError,
    PrerequisiteError,
    StackError,
)
from bus.log import configure_logging, get_logger
from bus.settings import LogFormat, SaslMechanism, SecurityProtocol, Settings
from bus.topics import TopicSpec, ensure_topics

__version__ = "0.1.0"

__all__ = [
    "BoxbusError",
    "ComponentFailed",
    "ConfigError",
    "LogFormat",
    "PortInUseError",
    "PrerequisiteError",
    "SaslMechanism",
    "SecurityProtocol",
    "Settings",
    "StackError",
    "TopicSpec",
    "__version__",
    "configure_logging",
    "create_database",
    "ensure_topics",
    "get_logger",
]
