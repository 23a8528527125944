"""Hypothesis strategies built from Avro schemas: any value the schema allows."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from bus.catalog import Schema

_EPOCH_MAX = datetime(2200, 1, 1)


def for_schema(schema: Any, named: dict[str, st.SearchStrategy[Any]] | None = None,
               ) -> st.SearchStrategy[Any]:
    named = {} if named is None else named
    if isinstance(schema, str):
        primitive = {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1),
            "long": st.integers(-(2**63), 2**63 - 1),
            "string": st.text(max_size=24),
            "bytes": st.binary(max_size=64),
            "double": st.floats(allow_nan=False),
            "float": st.floats(allow_nan=False, width=32),
        }
        if schema in primitive:
            return primitive[schema]
        return st.deferred(lambda: named[schema])
    if isinstance(schema, list):
        return st.one_of(*[for_schema(branch, named) for branch in schema])
    kind = schema["type"]
    logical = schema.get("logicalType")
    if kind in ("record", "enum", "fixed") and _fullname(schema) in named:
        return named[_fullname(schema)]  # given by the caller (or defined before)
    if logical == "timestamp-millis":
        return st.datetimes(min_value=datetime(1970, 1, 1), max_value=_EPOCH_MAX,
                            timezones=st.just(UTC)).map(
            lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
    if logical == "decimal":
        scale, precision = schema["scale"], schema["precision"]
        bound = Decimal(10) ** (precision - scale) - 1
        decimals = st.decimals(min_value=-bound, max_value=bound, places=scale,
                               allow_nan=False, allow_infinity=False)
        if kind == "fixed":
            named[_fullname(schema)] = decimals
        return decimals
    if kind == "array":
        return st.lists(for_schema(schema["items"], named), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=8), for_schema(schema["values"], named),
                               max_size=3)
    if kind == "enum":
        symbols = st.sampled_from(schema["symbols"])
        named[_fullname(schema)] = symbols
        return symbols
    if kind == "record":
        fields = {f["name"]: for_schema(f["type"], named) for f in schema["fields"]}
        records = st.fixed_dictionaries(fields)
        named[_fullname(schema)] = records
        return records
    return for_schema(kind, named)


def valid_meta() -> st.SearchStrategy[dict[str, Any]]:
    """EventMeta values a producer can publish: ids not empty, a region that names a topic."""
    ident = st.text(min_size=1, max_size=24).filter(str.strip)
    optional = st.none() | st.text(max_size=24)
    return st.fixed_dictionaries({
        "event_id": ident, "source_box": ident,
        "region": st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True),
        "aggregate_key": ident,
        "occurred_at": st.datetimes(min_value=datetime(1970, 1, 1), max_value=_EPOCH_MAX,
                                    timezones=st.just(UTC)).map(
            lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)),
        "target_box": optional, "correlation_id": optional, "causation_id": optional,
    })


def _fullname(schema: Schema) -> str:
    name = str(schema["name"])
    return name if "." in name or "namespace" not in schema else f"{schema['namespace']}.{name}"
