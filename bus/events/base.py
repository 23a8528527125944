"""Base classes of the generated event models (``bus/events/models.py``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

if TYPE_CHECKING:
    from bus.events.models import EventMeta

_REGION = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class Record(BaseModel):
    """An Avro record as an immutable, validated Python value."""

    # Bytes are base64 in JSON (documents inline), so a JSON file round-trips exactly.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64",
                              val_json_bytes="base64")

    def to_avro(self) -> dict[str, Any]:
        """The value as fastavro writes it (enums as their symbols, tuples as arrays)."""
        return self.model_dump(mode="python")


class EventBase(Record):
    """Every event model: ``TYPE`` is the Avro full name, the CloudEvents ``type``.

    Besides what the schema says, the identity of an event must be usable as headers and
    routing keys: a consumer would dead-letter an event with an empty id or a region that is
    not a topic name, so such an event is refused here, when it is built."""

    TYPE: ClassVar[str]
    if TYPE_CHECKING:
        # Every event schema starts with ``meta`` (the contract checks it); each generated
        # model declares the field itself, this only tells the type checker.
        meta: EventMeta

    @model_validator(mode="after")
    def _routable(self) -> EventBase:
        meta = getattr(self, "meta", None)
        if meta is not None:
            for name in ("event_id", "source_box", "aggregate_key"):
                if not getattr(meta, name).strip():
                    raise ValueError(f"meta.{name} must not be empty")
            if not _REGION.match(meta.region):
                raise ValueError(f"meta.region {meta.region!r} is not a region name (lower-case "
                                 "letters, digits, '-' and '_')")
        return self


def _utc_millis(value: datetime) -> datetime:
    if value.tzinfo is UTC and not value.microsecond % 1000:
        return value  # already exact (every time an Avro body is read)
    if value.tzinfo is None:
        raise ValueError("times are UTC: give a timezone-aware datetime (e.g. ...+00:00)")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


Timestamp = Annotated[datetime, AfterValidator(_utc_millis)]
"""Avro timestamp-millis: an aware UTC datetime, exact to the millisecond."""


def decimal_places(scale: int, precision: int) -> Any:
    """A validator that makes a Decimal exact to ``scale`` places within ``precision`` digits
    (Avro decimals carry a fixed scale; 12.5 kg is stored as 12.500)."""
    quantum = Decimal(1).scaleb(-scale)
    limit = Decimal(10) ** (precision - scale)

    def quantize(value: Decimal) -> Decimal:
        if value.as_tuple().exponent == -scale and -limit < value < limit:
            return value  # already exact (every decimal an Avro body is read with)
        if not value.is_finite() or abs(value) >= limit:
            raise ValueError(f"{value} does not fit {precision} digits with {scale} decimals")
        exact = value.quantize(quantum, rounding=ROUND_HALF_EVEN)
        if exact != value:
            raise ValueError(f"{value} has more than {scale} decimal places")
        return exact

    return quantize
