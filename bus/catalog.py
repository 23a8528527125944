"""The schema catalog: every ``.avsc`` file under ``schemas/``, with named types resolved.

The files reference shared types by full name (``boxbus.common.EventMeta``); a registry, a
partner's tools and fastavro all want one self-contained schema per event type, so the catalog
*expands* each event schema, inlining every named type at its first use. The expanded text is
deterministic (same files, same text): registries look schemas up by their text.

An event type is a top-level record whose first field is ``meta: boxbus.common.EventMeta``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro

from bus.errors import ConfigError
from bus.resources import schemas_dir

META_TYPE = "boxbus.common.EventMeta"
DEFAULT_SCHEMAS_DIR = schemas_dir()
# Folders under schemas/ that hold other things than the current schemas.
_NOT_SCHEMAS = {"released", "examples"}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}

Schema = dict[str, Any]


@dataclass(frozen=True)
class EventSchema:
    """One event type: its expanded schema, the text sent to registries, fastavro's parse."""

    fullname: str
    schema: Schema
    path: Path | None = None
    text: str = field(init=False)
    parsed: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", canonical_text(self.schema))
        object.__setattr__(self, "parsed", fastavro.parse_schema(copy.deepcopy(self.schema)))

    @property
    def name(self) -> str:
        return self.fullname.rsplit(".", 1)[-1]

    @property
    def namespace(self) -> str:
        return self.fullname.rsplit(".", 1)[0]


def canonical_text(schema: Schema) -> str:
    """The one text a schema is registered and looked up with (compact, key order kept)."""
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


def fullname_of(definition: Schema, enclosing_namespace: str | None) -> str:
    name = definition["name"]
    if "." in name:
        return str(name)
    namespace = definition.get("namespace", enclosing_namespace)
    return f"{namespace}.{name}" if namespace else str(name)


def _named_types(schema: Any, namespace: str | None, found: dict[str, Schema]) -> None:
    """Collect every named type (record, enum, fixed) defined anywhere inside ``schema``."""
    if isinstance(schema, list):
        for branch in schema:
            _named_types(branch, namespace, found)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            name = fullname_of(schema, namespace)
            found[name] = schema
            namespace = name.rsplit(".", 1)[0] if "." in name else namespace
        for f in schema.get("fields", []):
            _named_types(f["type"], namespace, found)
        for key in ("items", "values"):
            if key in schema:
                _named_types(schema[key], namespace, found)
        if isinstance(kind, (dict, list)):
            _named_types(kind, namespace, found)


def expand(schema: Schema, named: dict[str, Schema]) -> Schema:
    """A self-contained copy of ``schema``: each named type it references is defined inline at
    its first use and referenced by full name afterwards."""
    defined: set[str] = set()

    def walk(node: Any, namespace: str | None) -> Any:
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return node
            name = node if "." in node or namespace is None else f"{namespace}.{node}"
            if name not in named and node in named:
                name = node
            if name in defined:
                return name
            if name not in named:
                raise ConfigError(
                    f"schema type {node!r} is not defined in any .avsc file",
                    hint="define it (one file per named type) or fix the spelling",
                )
            return walk(copy.deepcopy(named[name]), name.rsplit(".", 1)[0])
        if isinstance(node, list):
            return [walk(branch, namespace) for branch in node]
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        out = dict(node)
        if kind in ("record", "error", "enum", "fixed"):
            name = fullname_of(node, namespace)
            defined.add(name)
            namespace = name.rsplit(".", 1)[0] if "." in name else namespace
        if "fields" in node:
            out["fields"] = [{**f, "type": walk(f["type"], namespace)} for f in node["fields"]]
        for key in ("items", "values"):
            if key in node:
                out[key] = walk(node[key], namespace)
        if isinstance(kind, (str, dict, list)) and kind not in (
            "record", "error", "enum", "fixed", "array", "map"
        ):
            out["type"] = walk(kind, namespace)
        return out

    result = walk(schema, None)
    assert isinstance(result, dict)
    return result


def _is_event(schema: Schema) -> bool:
    fields = schema.get("fields") or []
    return bool(fields) and fields[0]["name"] == "meta" and fields[0]["type"] == META_TYPE


class SchemaCatalog:
    """Event schemas by full name (``boxbus.orders.OrderPlaced``)."""

    def __init__(self, events: dict[str, EventSchema], named: dict[str, Schema]) -> None:
        self._events = events
        self.named = named

    @classmethod
    def load(cls, root: Path = DEFAULT_SCHEMAS_DIR) -> SchemaCatalog:
        files = sorted(p for p in root.rglob("*.avsc")
                       if not _NOT_SCHEMAS & set(p.relative_to(root).parts))
        if not files:
            raise ConfigError(f"no .avsc files under {root}",
                              hint="point BOXBUS_SCHEMAS_DIR at the schemas folder")
        raw: dict[Path, Schema] = {}
        named: dict[str, Schema] = {}
        for path in files:
            try:
                raw[path] = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}",
                                  hint="fix the file; an .avsc file is one JSON object") from exc
            _named_types(raw[path], None, named)
        events = {}
        for path, schema in raw.items():
            if not _is_event(schema):
                continue
            name = fullname_of(schema, None)
            try:
                events[name] = EventSchema(name, expand(schema, named), path)
            except (fastavro.schema.SchemaParseException, KeyError, ValueError) as exc:
                raise ConfigError(f"{path}: not a valid Avro schema: {exc}",
                                  hint="check it against the Avro specification") from exc
        return cls(events, named)

    def __getitem__(self, fullname: str) -> EventSchema:
        try:
            return self._events[fullname]
        except KeyError:
            raise KeyError(f"no event type {fullname!r} in the catalog") from None

    def __contains__(self, fullname: object) -> bool:
        return fullname in self._events

    def __iter__(self) -> Iterator[EventSchema]:
        return iter(self._events[name] for name in sorted(self._events))

    def __len__(self) -> int:
        return len(self._events)

    def by_short_name(self, name: str) -> EventSchema:
        """``OrderPlaced``, ``order-placed`` or the full name, for the command line."""
        wanted = name.replace("-", "").replace("_", "").lower()
        for event in self:
            if wanted in (event.fullname.lower(), event.name.lower()):
                return event
        known = ", ".join(e.name for e in self)
        raise ConfigError(f"there is no event type {name!r}", hint=f"use one of: {known}")
