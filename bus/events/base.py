"""Base classes of the generated event models (``bus/events/models.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict


class Record(BaseModel):
    """An Avro record as an immutable, validated Python value."""

    # Bytes are base64 in JSON (documents inline), so a JSON file round-trips exactly.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64",
                              val_json_bytes="base64")

    def to_avro(self) -> dict[str, Any]:
        """The value as fastavro writes it (enums as their symbols, tuples as arrays)."""
        return self.model_dump(mode="python")


class EventBase(Record):
    """Every event model: ``TYPE`` is the Avro full name, the CloudEvents ``type``."""

    TYPE: ClassVar[str]


def _utc_millis(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("times are UTC: give a timezone-aware datetime (e.g. ...+00:00)")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


Timestamp = Annotated[datetime, AfterValidator(_utc_millis)]
"""Avro timestamp-millis: an aware UTC datetime, exact to the millisecond."""


def decimal_places(scale: int) -> Any:
    """A validator that makes a Decimal exact to ``scale`` places (Avro decimals carry a fixed
    scale; 12.5 kg is stored as 12.500)."""
    quantum = Decimal(1).scaleb(-scale)

    def quantize(value: Decimal) -> Decimal:
        exact = value.quantize(quantum, rounding=ROUND_HALF_EVEN)
        if exact != value:
            raise ValueError(f"{value} has more than {scale} decimal places")
        return exact

    return quantize
