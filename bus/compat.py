"""Compatibility of schema versions, explained in words a developer can act on.

The reader/writer check itself is the ``avro`` package's ``ReaderWriterCompatibilityChecker``;
it has no modes, so they are composed here from reader/writer pairs:

- BACKWARD: the new schema reads events written with the latest version;
- FORWARD: the latest version reads events written with the new schema;
- FULL: both; ``*_TRANSITIVE``: against every earlier version, not just the latest.

Boxes upgrade independently for years, so the default is BACKWARD_TRANSITIVE.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityType,
    SchemaIncompatibilityType,
)
from avro.schema import parse

from bus.catalog import Schema
from bus.registry import Compatibility


@dataclass(frozen=True)
class Problem:
    """One incompatibility between a new schema and one earlier version."""

    version: int  # 1-based number of the earlier version
    direction: str  # "new reads old" or "old reads new"
    location: str  # e.g. fields.lines.items.quantity
    message: str
    hint: str

    def __str__(self) -> str:
        return (f"v{self.version} ({self.direction}) at {self.location}: {self.message}\n"
                f"    fix: {self.hint}")


def _pairs(mode: Compatibility, versions: list[Schema]) -> list[tuple[int, Schema, str]]:
    if mode is Compatibility.NONE or not versions:
        return []
    transitive = mode.value.endswith("_TRANSITIVE")
    chosen = list(enumerate(versions, 1)) if transitive else [(len(versions), versions[-1])]
    directions = {
        "BACKWARD": ["new reads old"], "FORWARD": ["old reads new"],
        "FULL": ["new reads old", "old reads new"],
    }[mode.value.removesuffix("_TRANSITIVE")]
    return [(number, old, d) for number, old in chosen for d in directions]


def check(new: Schema, versions: list[Schema],
          mode: Compatibility = Compatibility.BACKWARD_TRANSITIVE) -> list[Problem]:
    """Every way ``new`` breaks ``versions`` (oldest first) under ``mode``; empty if none."""
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    new_parsed = parse(json.dumps(new))
    problems: list[Problem] = []
    for number, old, direction in _pairs(mode, versions):
        old_parsed = parse(json.dumps(old))
        reader, writer = (new_parsed, old_parsed) if direction == "new reads old" else (
            old_parsed, new_parsed)
        reader_json, writer_json = (new, old) if direction == "new reads old" else (old, new)
        result = checker.get_compatibility(reader, writer)
        if result.compatibility is SchemaCompatibilityType.compatible:
            continue
        kinds = set(result.incompatibilities)
        for location in sorted(result.locations):
            if location == "/" and len(result.locations) > 1:
                continue  # the record-level twin of a more precise location
            message, hint = _explain(location, kinds, result.messages, reader_json, writer_json)
            problems.append(Problem(number, direction, _path_words(location, reader_json),
                                    message, hint))
    return problems


def _walk(schema: Any, segments: list[str]) -> Any:
    node = schema
    for segment in segments:
        if isinstance(node, dict) and segment in node:
            node = node[segment]
        elif isinstance(node, list) and segment.isdigit() and int(segment) < len(node):
            node = node[int(segment)]
        else:
            return None
    return node


def _path_words(location: str, schema: Schema) -> str:
    """``/fields/4/type/items/fields/3`` -> ``lines[].quantity`` (names, not indexes)."""
    segments = [s for s in location.split("/") if s]
    words: list[str] = []
    node: Any = schema
    i = 0
    while i < len(segments):
        segment = segments[i]
        if segment == "fields" and i + 1 < len(segments):
            field = _walk(node, ["fields", segments[i + 1]])
            words.append(field["name"] if isinstance(field, dict) else segments[i + 1])
            node = field
            i += 2
            continue
        if segment == "items":
            words[-1:] = [(words[-1] if words else "") + "[]"]
        node = _walk(node, [segment])
        i += 1
    return ".".join(words) or schema.get("name", "the record")


def _explain(location: str, kinds: set[SchemaIncompatibilityType], messages: set[str],
             reader: Schema, writer: Schema) -> tuple[str, str]:
    last = location.rstrip("/").rsplit("/", 1)[-1]
    segments = [s for s in location.split("/") if s]
    if last == "symbols" and SchemaIncompatibilityType.missing_enum_symbols in kinds:
        symbols = ", ".join(sorted(m for m in messages if m.startswith("{")))
        return (f"the enum lost symbol(s) {symbols} that events already use",
                "keep every symbol once released, or give the enum a \"default\" symbol that "
                "readers fall back to")
    if last in ("name", "") and SchemaIncompatibilityType.name_mismatch in kinds:
        return ("the type was renamed",
                "keep the name, or list the old full name in \"aliases\"")
    if last == "size":
        return ("a fixed type changed size", "a fixed size can never change; add a new field")
    missing_default = SchemaIncompatibilityType.reader_field_missing_default_value in kinds
    if segments[-2:-1] == ["fields"] and missing_default:
        field = _walk(reader, segments) or {}
        name = field.get("name", last)
        return (f"field {name!r} was added without a default: events written before it have "
                "no value for it",
                f"add \"default\" to {name!r} (an optional field is [\"null\", <type>] with "
                "\"default\": null)")
    if SchemaIncompatibilityType.missing_union_branch in kinds and last.isdigit():
        return ("a union lost a branch that events may hold",
                "keep every branch of a released union")
    mismatch = next((m for m in messages if "not compatible" in m), "the type changed")
    return (f"the type changed in a way old events cannot be read ({mismatch})",
            "keep the type (int may widen to long, float to double, string and bytes swap); "
            "otherwise add a new field with a default and stop writing the old one")
