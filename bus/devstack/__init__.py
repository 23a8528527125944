"""The embedded local stack for development and tests (``boxbus dev up|status|down``)."""

from bus.devstack.registry import RegistryStorage
from bus.devstack.smtp import read_maildir
from bus.devstack.stack import LocalStack, NodeInfo, SmtpInfo, StackInfo, with_object_store
from bus.devstack.state import ALL_COMPONENTS, Component

__all__ = [
    "ALL_COMPONENTS",
    "Component",
    "LocalStack",
    "NodeInfo",
    "RegistryStorage",
    "SmtpInfo",
    "StackInfo",
    "read_maildir",
    "with_object_store",
]
