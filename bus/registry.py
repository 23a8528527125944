"""The schema registry, through python-schema-registry-client's async client (Confluent API;
Apicurio serves it at ``/apis/ccompat/v7``).

Ids never change meaning, so every id is fetched once and kept. A registry that does not answer
is ``RegistryUnavailable`` (retriable: back off, never dead-letter); an id it does not know is
``UnknownSchemaId`` (the record goes to the dead-letter topic).
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import fastavro
import httpx
from schema_registry.client import AsyncSchemaRegistryClient
from schema_registry.client.errors import ClientError
from schema_registry.client.schema import AvroSchema

from bus.catalog import EventSchema, Schema
from bus.errors import (
    ConfigError,
    IncompatibleSchema,
    RegistryUnavailable,
    UnknownEventType,
    UnknownSchemaId,
)

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


def _without_credentials(url: str) -> str:
    """The URL as it may be shown and published: user:password@ removed."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _raw_schema(found: Any) -> Any:
    raw = found.raw_schema
    return raw if isinstance(raw, dict) else json.loads(str(raw))


class _PooledClient(AsyncSchemaRegistryClient):
    """The library's client, with one connection pool per event loop: it opens a new HTTP
    client per request otherwise, and a new TLS context with it (about 25 ms of CPU each),
    which made a producer's first events of many subjects crawl (seen in the week replay:
    two thirds of its time)."""

    _http: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None

    def http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is None or self._http[0] is not loop:
            self._http = (loop, httpx.AsyncClient(**self.client_kwargs))
        return self._http[1]

    async def request(self, url: str, method: str = "GET", body: dict[str, Any] | None = None,
                      params: dict[str, Any] | None = None,
                      headers: dict[str, Any] | None = None, timeout: Any = None
                      ) -> httpx.Response:
        return await self.http().request(
            method, url, headers=self.prepare_headers(body=body, headers=headers), json=body,
            params=params, **({} if timeout is None else {"timeout": timeout}))


class SchemaRegistry:
    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self._url = url.rstrip("/")
        # What is shown in messages and published in ce_dataschema: never the credentials.
        self.url = _without_credentials(self._url)
        self._timeout = timeout
        self._client = _PooledClient(url=self._url, timeout=httpx.Timeout(timeout))
        self._ids: dict[tuple[str, str], int] = {}
        self._writers: dict[int, WriterSchema] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except ValueError as exc:  # a reply that is not JSON: a proxy's error page, say
            raise RegistryUnavailable(
                f"the schema registry at {self.url} answered something that is not JSON "
                f"({what}): {exc}",
                hint="check BOXBUS_SCHEMA_REGISTRY_URL and the registry's health; consumers "
                "wait and retry",
            ) from exc
        except httpx.TransportError as exc:
            raise RegistryUnavailable(
                f"the schema registry at {self.url} does not answer ({what}): {exc!r}",
                hint="check that it runs (boxbus dev status) and BOXBUS_SCHEMA_REGISTRY_URL; "
                "consumers wait and retry, nothing is dead-lettered meanwhile",
            ) from exc
        except ClientError as exc:
            code = exc.http_code or 0
            if code >= 500 or code in (0, 408, 429):
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
        # One registration per subject at a time in this process (concurrent publishers of a
        # new type would otherwise race to create the subject and its rule).
        async with self._locks.setdefault(subject, asyncio.Lock()):
            if key in self._ids:
                return self._ids[key]
            return await self._register(subject, schema, compatibility)

    async def _register(self, subject: str, schema: EventSchema,
                        compatibility: Compatibility) -> int:
        key = (subject, schema.text)
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
        try:
            await self._call(f"set compatibility of {subject}",
                             self._client.update_compatibility(level.value, subject))
        except IncompatibleSchema:
            # Apicurio answers 409 when another process created the subject's rule at the
            # same moment: fine if the rule now in place is the one we wanted.
            if await self.compatibility(subject) != level.value:
                raise

    async def writer(self, schema_id: int) -> WriterSchema:
        """The writer schema of an id (fetched once). Asked directly rather than through the
        client, to tell "no such schema" (Confluent error 40403: the record goes to the
        dead-letter topic) from a wrong URL (every lookup would 404: a configuration error)."""
        if schema_id in self._writers:
            return self._writers[schema_id]
        try:
            response = await self._client.http().get(f"{self._url}/schemas/ids/{schema_id}",
                                                     timeout=self._timeout)
        except httpx.TransportError as exc:
            raise RegistryUnavailable(
                f"the schema registry at {self.url} does not answer (schema id {schema_id}): "
                f"{exc!r}",
                hint="check that it runs (boxbus dev status) and BOXBUS_SCHEMA_REGISTRY_URL; "
                "consumers wait and retry, nothing is dead-lettered meanwhile",
            ) from exc
        body = _json_or_none(response)
        if response.status_code == 404 and isinstance(body, dict) and (
                body.get("error_code") == 40403):
            raise UnknownSchemaId(
                f"the registry at {self.url} has no schema with id {schema_id}",
                hint="the producer used another registry, or the schema was deleted; register "
                "it and replay the record from the dead-letter topic",
            )
        if response.status_code >= 500 or response.status_code in (408, 429) or body is None:
            raise RegistryUnavailable(
                f"the schema registry at {self.url} failed (schema id {schema_id}): HTTP "
                f"{response.status_code}", hint="consumers wait and retry")
        if response.status_code != 200 or not isinstance(body, dict):
            raise ConfigError(
                f"the schema registry at {self.url} answered HTTP {response.status_code} to "
                f"a schema lookup: {str(body)[:200]}",
                hint="check BOXBUS_SCHEMA_REGISTRY_URL (Apicurio: .../apis/ccompat/v7) and "
                "its credentials")
        writer = _writer_schema(schema_id, body)
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
                found.append(_raw_schema(version.schema))
        return found

    async def compatibility(self, subject: str) -> str | None:
        """The compatibility level set on a subject (None if it has none of its own)."""
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.get(f"{self._url}/config/{subject}")
        except httpx.TransportError as exc:
            raise RegistryUnavailable(f"the schema registry at {self.url} does not answer: "
                                      f"{exc!r}") from exc
        body = _json_or_none(response)
        if response.status_code != 200 or not isinstance(body, dict):
            return None
        level = body.get("compatibilityLevel") or body.get("compatibility")
        return str(level) if level else None


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _writer_schema(schema_id: int, body: dict[str, Any]) -> WriterSchema:
    """Parse what the registry holds under an id; anything but an Avro record is not one of
    our events (another serializer's JSON Schema or Protobuf, a primitive): a bad event."""
    kind = body.get("schemaType", "AVRO")
    try:
        raw = json.loads(body["schema"]) if kind == "AVRO" else None
    except (KeyError, TypeError, ValueError):
        raw = None
    if not isinstance(raw, dict) or raw.get("type") != "record" or "name" not in raw:
        raise UnknownEventType(
            f"schema id {schema_id} is not an Avro record schema ({kind}): the record was not "
            "written as a boxbus event",
            hint="publish events through boxbus; the record is kept in the dead-letter topic",
        )
    name = str(raw["name"])
    fullname = name if "." in name else f"{raw.get('namespace', '')}.{name}".lstrip(".")
    try:
        parsed = fastavro.parse_schema(copy.deepcopy(raw))
    except Exception as exc:  # fastavro raises several types for a schema it cannot use
        raise UnknownEventType(
            f"schema id {schema_id} ({fullname}) cannot be parsed: {exc}") from exc
    return WriterSchema(schema_id, fullname, raw, parsed)
