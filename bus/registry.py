"""The schema registry, through python-schema-registry-client's async client (Confluent API;
Apicurio serves it at ``/apis/ccompat/v7``).

Ids never change meaning, so every id is fetched once and kept. A registry that does not answer
is ``RegistryUnavailable`` (retriable: back off, never dead-letter); an id it does not know is
``UnknownSchemaId`` (the record goes to the dead-letter topic).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import fastavro
import httpx
from schema_registry.client import AsyncSchemaRegistryClient
from schema_registry.client.errors import ClientError
from schema_registry.client.schema import AvroSchema

from bus.catalog import EventSchema, Schema
from bus.errors import ConfigError, IncompatibleSchema, RegistryUnavailable, UnknownSchemaId

T = TypeVar("T")


class Compatibility(StrEnum):
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"


DEFAULT_COMPATIBILITY = Compatibility.BACKWARD_TRANSITIVE


@dataclass(frozen=True)
class WriterSchema:
    """A schema as registered under an id: what a record's writer used."""

    schema_id: int
    fullname: str
    schema: Schema
    parsed: Any


class SchemaRegistry:
    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._client = AsyncSchemaRegistryClient(url=self.url, timeout=httpx.Timeout(timeout))
        self._ids: dict[tuple[str, str], int] = {}
        self._writers: dict[int, WriterSchema] = {}

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except httpx.TransportError as exc:
            raise RegistryUnavailable(
                f"the schema registry at {self.url} does not answer ({what}): {exc!r}",
                hint="check that it runs (boxbus dev status) and BOXBUS_SCHEMA_REGISTRY_URL; "
                "consumers wait and retry, nothing is dead-lettered meanwhile",
            ) from exc
        except ClientError as exc:
            code = exc.http_code or 0
            if code >= 500 or code == 0:
                raise RegistryUnavailable(
                    f"the schema registry at {self.url} failed ({what}): HTTP {code} "
                    f"{exc.server_traceback}",
                    hint="look at the registry's log; consumers wait and retry",
                ) from exc
            if code == 409:
                raise IncompatibleSchema(
                    f"the registry refused the schema ({what}): it is incompatible with a "
                    f"registered version ({exc.server_traceback})",
                    hint="run `boxbus schemas check` to see which change breaks what",
                ) from exc
            raise ConfigError(
                f"the schema registry answered HTTP {code} ({what}): {exc.server_traceback}",
                hint="check the URL (Apicurio: .../apis/ccompat/v7) and the schema",
            ) from exc

    async def register(
        self, subject: str, schema: EventSchema,
        compatibility: Compatibility = DEFAULT_COMPATIBILITY,
    ) -> int:
        """The id of ``schema`` under ``subject``, registering it (and setting the subject's
        compatibility explicitly: some registries enforce none by default) if it is new."""
        key = (subject, schema.text)
        if key in self._ids:
            return self._ids[key]
        existing = await self._call(
            f"look up {subject}",
            self._client.check_version(subject, AvroSchema(schema.text)))
        if existing is not None:
            schema_id = int(existing.schema_id)
        else:
            await self.set_compatibility(subject, compatibility)
            schema_id = await self._call(
                f"register {subject}", self._client.register(subject, AvroSchema(schema.text)))
        self._ids[key] = schema_id
        self._writers.setdefault(schema_id, WriterSchema(
            schema_id, schema.fullname, schema.schema, schema.parsed))
        return schema_id

    async def set_compatibility(self, subject: str, level: Compatibility) -> None:
        await self._call(f"set compatibility of {subject}",
                         self._client.update_compatibility(level.value, subject))

    async def writer(self, schema_id: int) -> WriterSchema:
        """The writer schema of an id (fetched once)."""
        if schema_id in self._writers:
            return self._writers[schema_id]
        found = await self._call(f"schema id {schema_id}", self._client.get_by_id(schema_id))
        if found is None:
            raise UnknownSchemaId(
                f"the registry at {self.url} has no schema with id {schema_id}",
                hint="the producer used another registry, or the schema was deleted; register "
                "it and replay the record from the dead-letter topic",
            )
        raw = found.raw_schema if isinstance(found.raw_schema, dict) else json.loads(
            str(found.raw_schema))
        name = raw.get("name", "")
        fullname = name if "." in name else f"{raw.get('namespace', '')}.{name}".lstrip(".")
        writer = WriterSchema(schema_id, fullname, raw, fastavro.parse_schema(copy.deepcopy(raw)))
        self._writers[schema_id] = writer
        return writer

    async def subjects(self) -> list[str]:
        return list(await self._call("list subjects", self._client.get_subjects()))

    async def versions(self, subject: str) -> list[Schema]:
        """Every registered version of a subject, oldest first (empty if none)."""
        numbers = await self._call(f"versions of {subject}",
                                   self._client.get_versions(subject))
        found = []
        for number in sorted(numbers or []):
            version = await self._call(f"{subject} v{number}",
                                       self._client.get_schema(subject, number))
            if version is not None:
                raw = version.schema.raw_schema
                found.append(raw if isinstance(raw, dict) else json.loads(str(raw)))
        return found
