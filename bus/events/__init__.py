"""Typed, immutable models of every event type, generated from the Avro schemas."""

from bus.events.base import EventBase, Record, Timestamp
from bus.events.models import EVENT_TYPES

__all__ = ["EVENT_TYPES", "EventBase", "Record", "Timestamp"]
